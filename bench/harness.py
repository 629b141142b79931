"""Reusable pieces of every benchmark: the stack on free ports, seeding, tokens, CPU accounting.

Scenario modules (`bench.phase0`, later a Phase 1 search module) use these and `bench.load`; nothing
here knows about a particular scenario.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from localplus_common.auth import Identity
from localplus_common.config import DEV_JWT_SECRET
from localplus_common.services import SERVICES
from localplus_dev.stack import Stack, StackConfig
from localplus_dev.token import mint

# Postgres settings of the throwaway test database (no crash safety) and of a real server.
FAST_COMMIT = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
DURABLE_COMMIT: dict[str, str] = {}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Endpoints:
    """Where a benchmark sends its traffic (all on 127.0.0.1); picklable for load workers."""

    gateway_url: str  # http://127.0.0.1:port, JSON and gRPC
    events_addr: str  # host:port of the events service (direct gRPC)
    database_url: str  # superuser URL; workers switch role per transaction, as the services do
    jwt_secret: str = DEV_JWT_SECRET

    @property
    def gateway_addr(self) -> str:
        return self.gateway_url.removeprefix("http://")


class BenchStack:
    """The whole stack (embedded Postgres, services, Envoy) in a temporary directory on free ports."""

    def __init__(self, *, durable: bool = True) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="localplus-bench-"))
        config = StackConfig.isolated(self.base_dir)
        self.durable = durable
        # The recurrence bench times the occurrence builds itself: the horizon job runs only at start.
        self.stack = Stack(
            replace(
                config,
                postgres_settings=DURABLE_COMMIT if durable else FAST_COMMIT,
                service_settings={"RECURRENCE_JOB_SECONDS": "3600"},
            )
        )

    def start(self) -> Endpoints:
        self.stack.start()
        return Endpoints(
            gateway_url=self.stack.gateway_url,
            events_addr=self.stack.address("events"),
            database_url=self.stack.database_url,
            jwt_secret=self.stack.config.jwt_secret,
        )

    def stop(self) -> None:
        self.stack.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def component_pids(self) -> dict[str, int]:
        """Root pid of each measured component; CPU is summed over each one's process tree."""
        wanted = {"envoy", "postgres", *(service.name for service in SERVICES)}
        return {c.name: c.pid for c in self.stack.supervisor.children if c.name in wanted and c.alive}


@contextmanager
def running_stack(*, durable: bool = True) -> Iterator[tuple[BenchStack, Endpoints]]:
    bench_stack = BenchStack(durable=durable)
    try:
        yield bench_stack, bench_stack.start()
    finally:
        bench_stack.stop()


# CPU accounting from /proc: utime + stime of every process in a tree.


def _proc_stat() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU clock ticks) for every process now alive.

    The ticks are utime + stime plus cutime + cstime (reaped children), so a tree's total does not drop
    when one of its processes (a Postgres backend or autovacuum worker) exits and is reaped."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; fields resume after the last ')'.
        fields = raw[raw.rindex(b")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    return table


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot (includes steal: time the host gave elsewhere)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process tree."""
    table = _proc_stat()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    totals: dict[str, float] = {}
    for name, root in roots.items():
        ticks, stack = 0, [root]
        while stack:
            pid = stack.pop()
            if pid in table:
                ticks += table[pid][1]
                stack.extend(children.get(pid, ()))
        totals[name] = ticks / CLOCK_TICKS
    return totals


# Seeding, as the database superuser (row-level security does not apply to the table owner).


def bench_user_id(index: int) -> uuid.UUID:
    """Deterministic user ids, so load workers can mint their own tokens from an index range."""
    return uuid.UUID(f"b0000000-0000-4000-8000-{index:012x}")


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


class TokenMinter:
    """Tokens shaped exactly like `localplus_dev.token.mint`'s, for many users quickly (HS256 by hand:
    pyjwt takes ~22 us a token, this ~5 us)."""

    def __init__(self, secret: str = DEV_JWT_SECRET) -> None:
        template = mint(bench_user_id(0), secret, expires_in=6 * 3600)
        header, payload, _ = template.split(".")
        self._header = header.encode()
        self._claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        self._key = secret.encode()

    def claims(self, index: int) -> dict[str, Any]:
        user_id = str(bench_user_id(index))
        return {**self._claims, "sub": user_id, "email": f"{user_id}@example.test"}

    def token(self, index: int) -> str:
        signing_input = self._header + b"." + _b64(json.dumps(self.claims(index), separators=(",", ":")).encode())
        signature = hmac.new(self._key, signing_input, hashlib.sha256).digest()
        return (signing_input + b"." + _b64(signature)).decode()

    def identity(self, index: int) -> Identity:
        """What the services' TokenVerifier makes of `token(index)`."""
        return Identity(role="authenticated", user_id=bench_user_id(index), claims=self.claims(index))


async def create_users(pool: asyncpg.Pool, first: int, count: int) -> None:
    """auth.users rows for bench users `first` .. `first + count - 1`."""
    await pool.execute(
        "insert into auth.users (id, email) select ('b0000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, "
        "'bench' || i || '@example.test' from generate_series($1::bigint, $2::bigint) i on conflict do nothing",
        first,
        first + count - 1,
    )


DESCRIPTION = (
    "An evening of live jazz by the river with local and visiting musicians. Food stalls open at six, "
    "the first set starts at seven. Bring a mat; seating is limited and first come, first served."
)


async def seed_events(
    pool: asyncpg.Pool,
    count: int,
    owner: uuid.UUID,
    *,
    capacity: int | None = None,
    status: str = "published",
    visibility: str = "public",
    title: str = "Bench event",
) -> list[uuid.UUID]:
    """`count` events a day or more ahead, one minute apart, shaped like the API's typical payload."""
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    rows = await pool.fetch(
        """
        insert into public.events (created_by, title, description, category, tags, starts_at, ends_at, timezone,
                                   venue_name, address, latitude, longitude, capacity, visibility, status)
        select $1, $2 || ' #' || i, $3, 'music', array['jazz', 'live'],
               $4::timestamptz + i * interval '1 minute',
               $4::timestamptz + i * interval '1 minute' + interval '3 hours',
               'Asia/Bangkok', 'Riverside Stage', '1 Charoen Krung Rd, Bangkok',
               13.7246 + i * 0.0001, 100.5133, $5, $6, $7
        from generate_series(1, $8) i
        returning id
        """,
        owner,
        title,
        DESCRIPTION,
        starts,
        capacity,
        visibility,
        status,
        count,
    )
    return [row["id"] for row in rows]


async def with_pool(database_url: str, work: Any) -> Any:
    """Run `work(pool)` with a small superuser pool (seeding and checks from synchronous code)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        return await work(pool)
    finally:
        await pool.close()


def run_with_pool(database_url: str, work: Any) -> Any:
    return asyncio.run(with_pool(database_url, work))


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def chunks(items: Sequence[Any], parts: int) -> Iterable[Sequence[Any]]:
    """`items` split into `parts` contiguous, nearly equal slices."""
    size, extra = divmod(len(items), parts)
    start = 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        yield items[start:end]
        start = end


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
