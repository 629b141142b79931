"""Analytics figures (`make bench ARGS="--only analytics"`): a year of daily rollups for 10,000 events
(100 businesses of 100 events, 10 categories, one city; a row for every event and day, the worst case),
then through the gateway, one request at a time, p50/p95 of a year's figures:

* `GET /api/events/{id}/analytics` as a partner of the event's business (random events; 365 rows read
  under the rollup's row-level security),
* `GET /api/businesses/{id}/analytics` as a partner (365 rows),
* `GET /api/analytics` as a platform admin, every city and category (3,650 rows), and one category,
* the event's `.csv` twin.

The rollups are written straight into the database (as the triggers and the fold job leave them once
the shards of past days are compacted), then analysed, as autovacuum would have by then.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from bench.harness import Endpoints
from localplus_dev.token import mint

BUSINESSES, PER_BUSINESS, CATEGORIES, DAYS = 100, 100, 10, 365
REQUESTS = 100
FIGURES = "views, saves, registrations, orders, tickets, revenue_minor, refunds_minor, check_ins"
# Made-up but plausible figures of one day, from a row number.
VALUES = "n % 500, n % 20, n % 30, n % 10, n % 25, (n % 10) * 30000, (n % 3) * 30000, n % 15"


async def seed(database_url: str) -> tuple[list[uuid.UUID], list[tuple[uuid.UUID, uuid.UUID]]]:
    """The admin, and (business, partner) pairs; events are found by business."""
    conn = await asyncpg.connect(database_url)
    try:
        admin = uuid.uuid4()
        await conn.execute('insert into auth.users (id, raw_app_meta_data) values ($1, \'{"role": "admin"}\')', admin)
        owner = uuid.uuid4()
        await conn.execute("insert into auth.users (id) values ($1)", owner)
        pairs = [(uuid.uuid4(), uuid.uuid4()) for _ in range(BUSINESSES)]
        await conn.executemany(
            "insert into public.businesses (id, name) values ($1, 'Bench business')", [(b,) for b, _ in pairs]
        )
        await conn.executemany("insert into auth.users (id) values ($1)", [(p,) for _, p in pairs])
        await conn.executemany(
            "insert into public.partners (business_id, user_id, role) values ($1, $2, 'viewer')", pairs
        )
        began = time.monotonic()
        await conn.execute(
            """
            insert into public.events (created_by, business_id, title, category, city, starts_at, ends_at, timezone,
                                       status)
            select $1, b.id, 'Analytics bench', 'cat-' || (g % $3), 'bangkok', now() + interval '30 days',
                   now() + interval '31 days', 'Asia/Bangkok', 'published'
              from unnest($2::uuid[]) with ordinality as b (id, position)
             cross join generate_series(1, $4) g
            """,
            owner,
            [b for b, _ in pairs],
            CATEGORIES,
            PER_BUSINESS,
        )
        print(f"  {time.monotonic() - began:.0f} s for the events", flush=True)
        began = time.monotonic()
        # Without the primary and foreign keys, put back afterwards: one sort and one join instead of
        # 3.65 million index inserts and foreign-key checks, which made seeding take minutes.
        # The business and city rows are made up too: nothing here checks that they add up.
        await conn.execute(
            "alter table public.analytics_event_days drop constraint analytics_event_days_pkey, "
            "drop constraint analytics_event_days_event_id_fkey"
        )
        await conn.execute(
            f"""
            insert into public.analytics_event_days (event_id, day, currency, shard, {FIGURES})
            select e.id, current_date - s, 'THB', 0, {VALUES}
              from (select id, row_number() over (order by id) as k from public.events
                     where title = 'Analytics bench') e
             cross join lateral (select s, e.k * 1000 + s as n from generate_series(0, $1 - 1) s) d
            """,
            DAYS,
        )
        await conn.execute(
            "alter table public.analytics_event_days add primary key (event_id, day, currency, shard), "
            "add constraint analytics_event_days_event_id_fkey foreign key (event_id) "
            "references public.events (id) on delete cascade"
        )
        print(f"  {time.monotonic() - began:.0f} s for the event-day rows", flush=True)
        await conn.execute(
            f"""
            insert into public.analytics_business_days (business_id, day, currency, shard, {FIGURES})
            select b, current_date - s, 'THB', 0, {VALUES.replace("n %", "(n * 100) %")}
              from unnest($1::uuid[]) b cross join lateral (select s, s as n from generate_series(0, $2 - 1) s) d
            """,
            [b for b, _ in pairs],
            DAYS,
        )
        await conn.execute(
            f"""
            insert into public.analytics_city_days (city_id, category, day, currency, shard, {FIGURES})
            select c.id, 'cat-' || g, current_date - s, 'THB', 0, {VALUES.replace("n %", "(n * 1000) %")}
              from public.cities c cross join generate_series(0, $1 - 1) g
             cross join lateral (select s, s as n from generate_series(0, $2 - 1) s) d
             where c.slug = 'bangkok'
            """,
            CATEGORIES,
            DAYS,
        )
        await conn.execute(
            "analyze public.events, public.analytics_event_days, public.analytics_business_days, "
            "public.analytics_city_days"
        )
        return [admin], pairs
    finally:
        await conn.close()


async def _timed(client: httpx.AsyncClient, requests: list[tuple[str, dict[str, str], str]]) -> tuple[float, float]:
    latencies = []
    for path, params, token in requests:
        began = time.perf_counter()
        response = await client.get(path, params=params, headers={"authorization": f"Bearer {token}"})
        latencies.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.text[:500]
    cuts = statistics.quantiles(latencies, n=20)
    return statistics.median(latencies), cuts[18]


async def run(endpoints: Endpoints) -> None:
    events = BUSINESSES * PER_BUSINESS
    print(f"analytics: seeding a year of daily rollups for {events:,} events ...", flush=True)
    began = time.monotonic()
    [admin], pairs = await seed(endpoints.database_url)
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        by_business = {
            row["business_id"]: row["ids"]
            for row in await conn.fetch(
                "select business_id, array_agg(id) as ids from public.events where title = 'Analytics bench' group by 1"
            )
        }
        rows = await conn.fetchval("select count(*) from public.analytics_event_days")
    finally:
        await conn.close()
    print(f"  seeded {rows:,} event-day rows in {time.monotonic() - began:.0f} s", flush=True)
    today = datetime.now(UTC).date()
    year = {"start": (today - timedelta(days=DAYS - 1)).isoformat(), "end": today.isoformat()}
    rng = random.Random(13)
    tokens = {partner: mint(partner, endpoints.jwt_secret) for _, partner in pairs}
    admin_token = mint(admin, endpoints.jwt_secret, admin=True)

    def event_requests(suffix: str) -> list[tuple[str, dict[str, str], str]]:
        chosen = [rng.choice(pairs) for _ in range(REQUESTS)]
        return [(f"/api/events/{rng.choice(by_business[b])}/analytics{suffix}", year, tokens[p]) for b, p in chosen]

    cases = {
        "event, a year (partner)": event_requests(""),
        "event .csv, a year (partner)": event_requests(".csv"),
        "business, a year (partner)": [
            (f"/api/businesses/{b}/analytics", year, tokens[p]) for b, p in (rng.choice(pairs) for _ in range(REQUESTS))
        ],
        "platform, a year, everything (admin)": [("/api/analytics", year, admin_token)] * REQUESTS,
        "platform, a year, one category (admin)": [
            ("/api/analytics", year | {"city": "bangkok", "category": "cat-3"}, admin_token)
        ]
        * REQUESTS,
    }
    async with httpx.AsyncClient(base_url=endpoints.gateway_url, timeout=120) as client:
        await _timed(client, cases["event, a year (partner)"][:10])  # warm-up
        for name, requests in cases.items():
            p50, p95 = await _timed(client, requests)
            print(
                f"  {name:<40} {REQUESTS} requests one at a time via the gateway: p50 {p50:.1f} ms / p95 {p95:.1f} ms",
                flush=True,
            )
