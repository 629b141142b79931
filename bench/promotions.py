"""Promotions figures (`make bench ARGS="--only promotions"`): `GET /api/events?city=` through the gateway,
anonymous, pages of 20 of a city's 200 published events, first with no promotion live, then with 10
active CPM promotions of the city's events (two sponsored slots a page, impressions leased and
recorded in batches): requests per second and p50/p95 of each, and with ÷ without.

The events and promotions are written straight into the database; the load is CONCURRENCY closed-loop
httpx clients for DURATION_S each (the same client both times, so the ratio is what counts).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import asyncpg
import httpx

from bench.harness import Endpoints

EVENTS = 200
PROMOTIONS = 10
CONCURRENCY = 16
DURATION_S = 5.0


async def seed(database_url: str) -> tuple[str, list[uuid.UUID]]:
    conn = await asyncpg.connect(database_url)
    try:
        slug = f"bench-promo-{uuid.uuid4().hex[:6]}"
        await conn.execute(
            "insert into public.cities (slug, name, country, timezone, latitude, longitude, bounds) "
            "values ($1, $1, 'TH', 'Asia/Bangkok', 0, 0, box(point(0, 0), point(0, 0)))",
            slug,
        )
        owner = uuid.uuid4()
        await conn.execute("insert into auth.users (id) values ($1)", owner)
        business = await conn.fetchval("insert into public.businesses (name) values ('Bench promotions') returning id")
        events = [
            await conn.fetchval(
                "insert into public.events (created_by, business_id, title, category, starts_at, ends_at, timezone, "
                "status, city) values ($1, $2, $3, 'music', now() + make_interval(hours => $4), "
                "now() + make_interval(hours => $4 + 2), 'Asia/Bangkok', 'published', $5) returning id",
                owner,
                business,
                f"Bench concert {i}",
                24 + i,
                slug,
            )
            for i in range(EVENTS)
        ]
        # The city's events (the city is derived from its slug by the events' trigger).
        assert (
            await conn.fetchval(
                "select count(*) from public.events e join public.cities c on c.id = e.city_id where c.slug = $1", slug
            )
            == EVENTS
        )
        await conn.execute("analyze public.events")
        return slug, events
    finally:
        await conn.close()


async def promote(database_url: str, events: list[uuid.UUID]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        # Spread over the pages: every 20th event, so most pages have promoted events that are not on them.
        for i, event in enumerate(events[:: EVENTS // PROMOTIONS][:PROMOTIONS]):
            await conn.execute(
                "insert into public.promotions (event_id, business_id, placements, starts_at, ends_at, budget_minor, "
                "currency, bid_type, bid_minor, status, paid_minor) "
                "select id, business_id, '{search,browse}', now() - interval '1 minute', now() + interval '20 hours', "
                "10000000, 'THB', 'cpm', $2, 'active', 10000000 from public.events where id = $1",
                event,
                1000 + 100 * i,
            )
    finally:
        await conn.close()


async def load(endpoints: Endpoints, slug: str) -> tuple[float, float, float, float]:
    """req/s, p50 and p95 in ms, and sponsored results per response."""
    latencies: list[float] = []
    sponsored = 0
    pages = [""]
    async with httpx.AsyncClient(base_url=endpoints.gateway_url, timeout=30) as client:
        token = ""
        for _ in range(5):  # the first five pages' tokens, visited in turn
            body = (await client.get("/api/events", params={"city": slug, "page_size": 20, "page_token": token})).json()
            token = body.get("next_page_token", "")
            if not token:
                break
            pages.append(token)
        stop = time.monotonic() + DURATION_S

        async def worker(n: int) -> None:
            nonlocal sponsored
            i = n
            while time.monotonic() < stop:
                began = time.perf_counter()
                response = await client.get(
                    "/api/events", params={"city": slug, "page_size": 20, "page_token": pages[i % len(pages)]}
                )
                latencies.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, response.text[:300]
                sponsored += len(response.json().get("sponsored", []))
                i += 1

        began = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
        took = time.monotonic() - began
    cuts = statistics.quantiles(latencies, n=20)
    return len(latencies) / took, statistics.median(latencies), cuts[18], sponsored / len(latencies)


async def run(endpoints: Endpoints) -> None:
    print(f"promotions: seeding a city of {EVENTS} published events ...", flush=True)
    slug, events = await seed(endpoints.database_url)
    without = await load(endpoints, slug)
    await promote(endpoints.database_url, events)
    await asyncio.sleep(2.0)  # the events service reads live promotions every second
    with_slots = await load(endpoints, slug)
    for name, (rate, p50, p95, per) in (("without promotions", without), ("with sponsored slots", with_slots)):
        print(
            f"  GET /api/events?city= (pages of 20, {CONCURRENCY} in flight, JSON via the gateway) {name}: "
            f"{rate:,.0f} req/s, p50 {p50:.1f} ms / p95 {p95:.1f} ms, {per:.2f} sponsored per response",
            flush=True,
        )
    print(f"  with sponsored slots ÷ without (req/s): {with_slots[0] / without[0]:.2f}", flush=True)
