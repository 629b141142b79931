"""Recurrence figures (`make bench ARGS="--only recurrence"`): materialising a year of occurrences for
10,000 series with the service's own build (`localplus_recurrence.materialise.build`, each series in
its own transaction as the server, 4 at a time), then p50/p95 of "what's on this weekend in a city"
over the resulting 1,000,000+ occurrences: the service's own search, as anon, one request at a time,
and through the gateway; with the plan's indexes.

The series are written straight into `events` (published, public, 20 cities, four time zones, a mix
of daily, twice-weekly and weekly rules); the service's horizon job is held off meanwhile (the bench
stack runs it hourly), so only the timed builds make occurrences.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import httpx

from bench.harness import Endpoints
from localplus_common.auth import ANONYMOUS, SERVER
from localplus_common.config import Settings
from localplus_common.db import Connection, Database, create_pool, current_identity
from localplus_common.paging import PageRequest
from localplus_recurrence import materialise, occurrences
from localplus_recurrence.settings import RecurrenceSettings

SERIES = 10_000
CITIES = [f"bench-rec-{i:02d}" for i in range(20)]
ZONES = ["Asia/Bangkok", "Europe/London", "America/New_York", "Asia/Tokyo"]
# (share, rule): about 117 occurrences a series over a year.
RULES = [(0.15, "FREQ=DAILY"), (0.35, "FREQ=WEEKLY;BYDAY={day},{other}"), (0.50, "FREQ=WEEKLY;BYDAY={day}")]
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
WORKERS = 4
COLUMNS = ["id", "title", "starts_at", "ends_at", "timezone", "recurrence_rrule", "city", "status", "visibility"]
QUERIES = 200
INDEX_NAME = re.compile(r"(?:Index Scan|Index Only Scan|Bitmap Index Scan) (?:using|on) (\w+)")


def _series(rng: random.Random, now: datetime) -> tuple[object, ...]:
    zone = rng.choice(ZONES)
    tz = ZoneInfo(zone)
    day = (now.astimezone(tz) + timedelta(days=rng.randint(1, 7))).date()
    starts = datetime(day.year, day.month, day.day, rng.randint(9, 21), rng.choice([0, 30]), tzinfo=tz)
    pick = rng.random()
    template = next(rule for share, rule in _cumulative() if pick <= share)
    weekday = DAYS[starts.weekday()]
    other = DAYS[(starts.weekday() + rng.randint(1, 6)) % 7]
    rule = template.format(day=weekday, other=other)
    start_utc = starts.astimezone(UTC)
    return (uuid.uuid4(), f"Series {rng.randint(1, 10**6)}", start_utc, start_utc + timedelta(hours=2), zone, rule,
            rng.choice(CITIES))  # fmt: skip


def _cumulative() -> list[tuple[float, str]]:
    total, out = 0.0, []
    for share, rule in RULES:
        total += share
        out.append((total, rule))
    out[-1] = (1.0, out[-1][1])
    return out


async def seed(database_url: str) -> list[uuid.UUID]:
    rng = random.Random(9)
    now = datetime.now(UTC)
    rows = [_series(rng, now) for _ in range(SERIES)]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table(
            "events",
            schema_name="public",
            records=[(*row, "published", "public") for row in rows],
            columns=COLUMNS,
        )
        await conn.execute("analyze public.events")
    finally:
        await conn.close()
    return [row[0] for row in rows]  # type: ignore[misc]


async def _build(conn: Connection, *, event_id: uuid.UUID, settings: RecurrenceSettings) -> None:
    await materialise.build(conn, event_id, settings)


async def materialise_all(db: Database, ids: list[uuid.UUID]) -> tuple[float, int]:
    settings = RecurrenceSettings()
    queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
    for event_id in ids:
        queue.put_nowait(event_id)

    async def worker() -> None:
        while not queue.empty():
            event_id = queue.get_nowait()
            await db.run(functools.partial(_build, event_id=event_id, settings=settings), SERVER)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    took = time.perf_counter() - began
    rows: int = await db.pool.fetchval("select count(*) from public.event_occurrences")
    await db.pool.execute("analyze public.event_occurrences")
    return took, rows


def _weekend(city_zone: str = "Asia/Bangkok") -> tuple[datetime, datetime]:
    """Next Saturday 00:00 to Monday 00:00, local time."""
    tz = ZoneInfo(city_zone)
    today = datetime.now(tz).date()
    saturday = today + timedelta(days=(5 - today.weekday()) % 7 or 7)
    start = datetime(saturday.year, saturday.month, saturday.day, tzinfo=tz)
    return start.astimezone(UTC), (start + timedelta(days=2)).astimezone(UTC)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=20)
    return statistics.median(samples), cuts[18]


async def weekend_latency(db: Database, gateway_url: str) -> tuple[tuple[float, float], tuple[float, float], int]:
    start, end = _weekend()
    rng = random.Random(3)
    current_identity.set(ANONYMOUS)
    service: list[float] = []
    found = 0
    for _ in range(QUERIES):
        query = occurrences.OccurrenceSearch(rng.choice(CITIES), start, end, PageRequest(20, ""))
        began = time.perf_counter()
        page, _ = await occurrences.search(db, query, None, "")
        service.append((time.perf_counter() - began) * 1000)
        found += len(page.items)
    gateway: list[float] = []
    params = {"start": start.isoformat(), "end": end.isoformat(), "page_size": "20"}
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        for _ in range(QUERIES):
            began = time.perf_counter()
            response = await client.get("/api/occurrences", params={**params, "city": rng.choice(CITIES)})
            gateway.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, response.text
    return _percentiles(service), _percentiles(gateway), found // QUERIES


async def plan(database_url: str) -> tuple[list[str], str]:
    start, end = _weekend()
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "select set_config('role', 'anon', true), set_config('request.jwt.claims', $1, true)",
                ANONYMOUS.claims_json,
            )
            lines = await conn.fetch(f"explain {occurrences.SEARCH}", CITIES[0], start, end, None, None, 21)
    finally:
        await conn.close()
    text = "\n".join(line[0] for line in lines)
    return sorted(set(INDEX_NAME.findall(text))), text


async def run(endpoints: Endpoints) -> None:
    print(f"recurrence: seeding {SERIES:,} series in {len(CITIES)} cities ...", flush=True)
    ids = await seed(endpoints.database_url)
    config = Settings(
        database_url=endpoints.database_url,
        database_read_url="",
        jwt_secret=endpoints.jwt_secret,
        jwks="",
        addresses={},
        db_pool_max=WORKERS,
        db_statement_cache_size=100,
    )
    pool = await create_pool(config)
    db = Database(pool)
    try:
        took, rows = await materialise_all(db, ids)
        print(
            f"  materialise a year (365-day horizon) for {SERIES:,} series, {WORKERS} at a time: {took:.1f} s, "
            f"{rows:,} occurrences, {rows / took:,.0f} rows/s, {SERIES / took:,.0f} series/s",
            flush=True,
        )
        (s50, s95), (g50, g95), per_page = await weekend_latency(db, endpoints.gateway_url)
        indexes, text = await plan(endpoints.database_url)
        print(
            f"  this weekend in a city over {rows:,} occurrences ({QUERIES} queries, one at a time, "
            f"~{per_page} results a page): p50 {s50:.1f} ms / p95 {s95:.1f} ms at the service's search (as anon), "
            f"p50 {g50:.1f} ms / p95 {g95:.1f} ms through the gateway; indexes: {', '.join(indexes)}",
            flush=True,
        )
        print("  plan:\n" + "\n".join(f"    {line}" for line in text.splitlines()), flush=True)
    finally:
        await pool.close()
