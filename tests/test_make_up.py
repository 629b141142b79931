"""`make up` (CONTRACT §2): prints `ready` once the gateway answers, stops everything it started on Ctrl-C
or SIGTERM and exits 0, and a second run reuses the data.

Runs `python -m localplus_dev.stack up` as `make up` does, on free ports and a data directory of its own
(LOCALPLUS_DATA_DIR, LOCALPLUS_RUN_DIR, POSTGRES_PORT, STRIPE_PORT and the gateway's own variables), so it
runs beside the test session's stack and beside a developer's `make up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from localplus_dev.postgres import free_port
from tests.support import User, create_event, create_user, event_body, service_role_token

ROOT = Path(__file__).resolve().parent.parent
PYTHONPATH = [
    ROOT / "gen",
    *(ROOT / "services" / name for name in ("common", "events", "ticketing", "recurrence", "notifications")),
]
PYTHONPATH += [ROOT / "gateway", ROOT / "devtools", ROOT]
READY_TIMEOUT = 180.0  # the first start runs initdb
EXIT_TIMEOUT = 30.0
# Variables of the developer's shell that would point `make up` somewhere else.
INHERITED_OVERRIDES = (
    "DATABASE_URL", "SUPABASE_JWT_SECRET", "SUPABASE_JWKS", "GATEWAY_LISTEN_ADDRESS", "SMTP_URL", "LOCALPLUS_MAILDIR",
)  # fmt: skip


@dataclass(frozen=True)
class Ports:
    gateway: int
    admin: int
    events: int
    ticketing: int
    recurrence: int
    postgres: int
    stripe: int
    events_metrics: int
    ticketing_metrics: int
    recurrence_metrics: int
    smtp: int

    @classmethod
    def free(cls) -> Ports:
        ports: list[int] = []
        while len(ports) < 11:
            port = free_port()
            if port not in ports:
                ports.append(port)
        return cls(*ports)

    def all(self) -> list[int]:
        return [
            self.gateway,
            self.admin,
            self.events,
            self.ticketing,
            self.recurrence,
            self.postgres,
            self.stripe,
            self.events_metrics,
            self.ticketing_metrics,
            self.recurrence_metrics,
            self.smtp,
        ]


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    session: int
    state: str
    started: int  # clock ticks after boot: (pid, started) names a process even if its pid is reused later
    cmdline: str
    environ: bytes


def processes() -> list[Proc]:
    """Every process on the machine, from /proc; ones that vanish while we read are skipped."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        base = Path("/proc") / entry
        try:
            stat = (base / "stat").read_text()
            cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            try:
                environ = (base / "environ").read_bytes()
            except PermissionError:
                environ = b""
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat.rpartition(")")[2].split()  # fields 3.. of proc(5)'s stat
        found.append(Proc(int(entry), int(fields[1]), int(fields[3]), fields[0], int(fields[19]), cmdline, environ))
    return found


def descendants(root: int) -> set[tuple[int, int]]:
    """(pid, start time) of every process below `root`. Postgres' workers call setsid(), so sessions and
    process groups do not find them, and their retitled command lines say nothing about the data directory."""
    table = processes()
    found: set[tuple[int, int]] = set()
    parents = {root}
    while parents:
        children = {p for p in table if p.ppid in parents and (p.pid, p.started) not in found}
        found |= {(p.pid, p.started) for p in children}
        parents = {p.pid for p in children}
    return found


class Up:
    """One `python -m localplus_dev.stack up` process and what it started."""

    def __init__(self, base: Path, ports: Ports) -> None:
        self.base = base
        self.ports = ports
        self.marker = f"make-up-test-{uuid.uuid4().hex}"
        self.process: asyncio.subprocess.Process | None = None
        self.children: set[int] = set()  # pids of its direct children (each leads a session of its own)
        self.tree: set[tuple[int, int]] = set()  # everything below it, (pid, start time)
        self.stderr_path = base / "up.stderr"
        self.stdout_lines: list[str] = []

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres:postgres@127.0.0.1:{self.ports.postgres}/postgres"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in INHERITED_OVERRIDES}
        env.update(
            PYTHONPATH=os.pathsep.join(str(path) for path in PYTHONPATH),
            PYTHONUNBUFFERED="1",
            LOCALPLUS_ENV="dev",  # as the Makefile sets it
            GATEWAY_PORT=str(self.ports.gateway),
            ENVOY_ADMIN_PORT=str(self.ports.admin),
            EVENTS_ADDR=f"127.0.0.1:{self.ports.events}",
            TICKETING_ADDR=f"127.0.0.1:{self.ports.ticketing}",
            RECURRENCE_ADDR=f"127.0.0.1:{self.ports.recurrence}",
            EVENTS_METRICS_ADDR=f"127.0.0.1:{self.ports.events_metrics}",
            TICKETING_METRICS_ADDR=f"127.0.0.1:{self.ports.ticketing_metrics}",
            RECURRENCE_METRICS_ADDR=f"127.0.0.1:{self.ports.recurrence_metrics}",
            POSTGRES_PORT=str(self.ports.postgres),
            STRIPE_PORT=str(self.ports.stripe),
            SMTP_PORT=str(self.ports.smtp),
            LOCALPLUS_DATA_DIR=str(self.base / "data" / "postgres"),
            LOCALPLUS_RUN_DIR=str(self.base / "run"),
            # Inherited by everything it starts: finds stragglers whose command line says nothing about us.
            LOCALPLUS_TEST_MARKER=self.marker,
        )
        return env

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    async def spawn(self) -> None:
        """Start it in a session of its own, as a terminal runs a foreground job."""
        with self.stderr_path.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "localplus_dev.stack",
                "up",
                cwd=ROOT,
                env=self.env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )

    async def start(self) -> None:
        """Spawn it and wait for the `ready` line."""
        await self.spawn()
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no `ready` line after {READY_TIMEOUT}s: {self.stdout_lines}\n{self.stderr()}"
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), remaining)
            except TimeoutError:
                continue
            if not raw:
                await self.process.wait()
                raise AssertionError(f"exited {self.process.returncode} before `ready`:\n{self.stderr()}")
            line = raw.decode(errors="replace").rstrip("\n")
            self.stdout_lines.append(line)
            if "ready" in line:
                break
        self.children |= {p.pid for p in processes() if p.ppid == self.process.pid and p.state != "Z"}
        # Postgres, localstripe, the three services and Envoy.
        assert len(self.children) >= 6, [p.cmdline for p in processes() if p.pid in self.children]

    def send(self, how: signal.Signals) -> None:
        """SIGINT to its whole process group, as Ctrl-C in a terminal does; others to it alone, as `kill` does."""
        assert self.process is not None
        self.tree |= descendants(self.process.pid)
        if how == signal.SIGINT:
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.send_signal(how)

    async def wait_exit(self, within: float = EXIT_TIMEOUT) -> int:
        """Its exit code; meanwhile keep noting what runs below it, in case it starts something late."""
        assert self.process is not None and self.process.stdout is not None
        reader = asyncio.ensure_future(self.process.stdout.read())
        deadline = time.monotonic() + within
        while self.process.returncode is None and time.monotonic() < deadline:
            self.tree |= descendants(self.process.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.process.wait()), 0.1)
        if self.process.returncode is None:
            reader.cancel()
            raise AssertionError(f"still running {within}s after being asked to stop:\n{self.stderr()}")
        self.stdout_lines += (await asyncio.wait_for(reader, 5)).decode(errors="replace").splitlines()
        return self.process.returncode

    async def stop(self, how: signal.Signals) -> int:
        self.send(how)
        return await self.wait_exit()

    def leftovers(self) -> list[Proc]:
        """Processes it started that are still alive (zombies waiting for init do not count)."""
        ours = []
        for proc in processes():
            if proc.state == "Z" or proc.pid == os.getpid():
                continue
            if (
                (proc.pid, proc.started) in self.tree
                or proc.session in self.children
                or self.marker.encode() in proc.environ
                or str(self.base) in proc.cmdline
                or f"-p {self.ports.postgres} " in f"{proc.cmdline} "
                or f"--port {self.ports.stripe} " in f"{proc.cmdline} "
            ):
                ours.append(proc)
        return ours

    async def assert_nothing_left(self) -> None:
        left = self.leftovers()
        for _ in range(25):  # killed Postgres backends may take a moment to go
            if not left:
                break
            await asyncio.sleep(0.2)
            left = self.leftovers()
        assert not left, "left running: " + "; ".join(f"{p.pid} {p.cmdline}" for p in left)
        busy = []
        for port in self.ports.all():
            with socket.socket() as probe:
                probe.settimeout(1)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    busy.append(port)
        assert not busy, f"still listening on {busy}"

    def kill_everything(self) -> None:
        """After a failure: end what this test started, by id (its own process and everything below it)."""
        if self.process is not None and self.process.returncode is None:
            self.tree |= descendants(self.process.pid)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        for session in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(session, signal.SIGKILL)
        alive = {(p.pid, p.started) for p in processes()}
        for pid, _ in self.tree & alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


async def assert_an_event_at_a_venue_is_in_bangkok(api: httpx.AsyncClient, owner: User, business: str) -> None:
    """Phase 4 on the stack `make up` runs: the seeded cities, a venue, an event at it taking Bangkok's
    time zone, and `city=` knowing its cities."""
    cities = await api.get("/api/cities", params={"page_size": 100})
    assert cities.status_code == 200, cities.text
    assert "bangkok" in {city["slug"] for city in cities.json()["cities"]}
    body = {"city": "bangkok", "name": "Riverside Stage", "address": "1 Charoen Krung Rd", "business_id": business}
    venue = await api.post("/api/venues", json=body, headers=owner.headers)
    assert venue.status_code == 200, venue.text
    at_venue = event_body(title="At the venue", business_id=business, venue_id=venue.json()["id"])
    del at_venue["timezone"]
    created = await api.post("/api/events", json=at_venue, headers=owner.headers)
    assert created.status_code == 200, created.text
    assert (created.json()["timezone"], created.json()["city"]) == ("Asia/Bangkok", "bangkok")
    backend = {"authorization": f"Bearer {service_role_token()}"}
    approved = await api.post(f"/api/events/{created.json()['id']}:approve", json={}, headers=backend)
    assert approved.status_code == 200, approved.text
    listed = await api.get("/api/events", params={"city": "bangkok", "page_size": 100})
    assert created.json()["id"] in {e["id"] for e in listed.json()["events"]}
    atlantis = await api.get("/api/events", params={"city": "atlantis"})
    assert atlantis.status_code == 400 and "atlantis" in atlantis.json()["message"], atlantis.text


@pytest.fixture
async def make_up(tmp_path: Path) -> AsyncIterator[Up]:
    up = Up(tmp_path, Ports.free())
    try:
        yield up
    finally:
        up.kill_everything()
        if up.process is not None and up.process.returncode is None:
            await up.process.wait()


async def test_make_up_ready_stop_and_reuse(make_up: Up) -> None:
    up = make_up
    await up.start()
    assert any("ready" in line and up.gateway_url in line for line in up.stdout_lines), up.stdout_lines

    pool = await asyncpg.create_pool(up.database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        owner = await create_user(pool)
        business = await pool.fetchval("insert into public.businesses (name) values ('Riverside Café') returning id")
        await pool.execute(
            "insert into public.partners (business_id, user_id, role) values ($1, $2, 'owner')", business, owner.id
        )
    finally:
        await pool.close()
    async with httpx.AsyncClient(base_url=up.gateway_url, timeout=30) as api:
        event = await create_event(api, owner, title="Survives a restart", status="EVENT_STATUS_PUBLISHED")
        await assert_an_event_at_a_venue_is_in_bangkok(api, owner, str(business))
    services = (up.ports.events_metrics, up.ports.ticketing_metrics, up.ports.recurrence_metrics)
    metrics = [f"http://127.0.0.1:{port}/metrics" for port in services]
    metrics.append(f"http://127.0.0.1:{up.ports.admin}/stats/prometheus")
    async with httpx.AsyncClient(timeout=30) as client:
        for url in metrics:
            assert (await client.get(url)).status_code == 200, url

    # Ctrl-C: everything stops, the process exits 0.
    assert await up.stop(signal.SIGINT) == 0, up.stderr()
    assert any("stopped" in line for line in up.stdout_lines), up.stdout_lines
    # It said where the metrics are, on the line after `ready`.
    (where,) = [line for line in up.stdout_lines if line.startswith("metrics (Prometheus):")]
    assert all(url in where for url in metrics), where
    await up.assert_nothing_left()

    # Again on the same data directory: ready, and the event is still there.
    await up.start()
    async with httpx.AsyncClient(base_url=up.gateway_url, timeout=30) as api:
        again = await api.get(f"/api/events/{event['id']}")
        assert again.status_code == 200, again.text
        assert again.json() == event
        mine = await api.get(f"/api/events/{event['id']}", headers=owner.headers)
        assert mine.status_code == 200, mine.text

    # SIGTERM (kill, docker stop, a process manager): the same clean stop.
    assert await up.stop(signal.SIGTERM) == 0, up.stderr()
    await up.assert_nothing_left()


async def test_make_up_stops_everything_when_ctrl_c_comes_during_startup(make_up: Up) -> None:
    """Ctrl-C while it is still starting things (here: once Postgres is up): no orphan either."""
    up = make_up
    await up.spawn()
    assert up.process is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while not (up.base / "run" / "events.log").exists():
        assert up.process.returncode is None, up.stderr()
        assert time.monotonic() < deadline, "the services never started"
        up.tree |= descendants(up.process.pid)
        await asyncio.sleep(0.02)
    up.send(signal.SIGINT)
    await up.wait_exit(60)
    await up.assert_nothing_left()


async def test_make_up_stops_the_rest_when_a_child_dies(make_up: Up) -> None:
    """A crashed Envoy (say) is reported, the rest is stopped and the exit code says it failed."""
    up = make_up
    await up.start()
    assert up.process is not None
    envoy = next(p for p in processes() if p.pid in up.children and "envoy" in p.cmdline)
    up.tree |= descendants(up.process.pid)
    os.kill(envoy.pid, signal.SIGKILL)
    code = await up.wait_exit()
    assert code != 0
    assert "envoy" in up.stderr()
    await up.assert_nothing_left()
