"""Seating figures (`make bench ARGS="--only seating"`): a 20,000-seat plan (four zones of 25 rows of 200
seats, one category a zone) used by one published event, then through the gateway:

* `GET /api/events/{id}/seats` (every seat's JSON) and `GET /api/events/{id}/seat-map.svg`: p50/p95 of
  requests made one at a time, anonymous, with a tenth of the seats sold or held;
* best-available: 500 buyers at once (each new, 2 seats of the same ticket type, so every pick is taken
  in turn under that type's lock), p50/p95/max of their answers and how many got seats, checked in SQL
  to never share a seat.

The plan, event and claims are written straight into the database (as the migration's functions do),
then analysed, as autovacuum would have by the time anyone buys.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import uuid
from collections import Counter

import asyncpg
import httpx

from bench.harness import Endpoints
from localplus_dev.token import mint

ZONES = ("Stalls", "Circle", "Upper circle", "Gallery")
ROWS, PER_ROW = 25, 200
REQUESTS = 30
BUYERS = 500
QUANTITY = 2


def _zones() -> list[dict[str, object]]:
    return [
        {
            "name": zone,
            "rows": [
                {
                    "name": f"R{r}",
                    "seats": [
                        {"number": str(n), "x": float(n), "y": float(z * (ROWS + 3) + r), "category": zone.lower()}
                        for n in range(1, PER_ROW + 1)
                    ],
                }
                for r in range(1, ROWS + 1)
            ],
        }
        for z, zone in enumerate(ZONES)
    ]


async def seed(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The event, and the ticket type best-available buyers ask for (the gallery's)."""
    conn = await asyncpg.connect(database_url)
    try:
        owner = uuid.uuid4()
        await conn.execute("insert into auth.users (id) values ($1)", owner)
        venue = await conn.fetchval(
            "insert into public.venues (city_id, name) select id, 'Bench hall' from public.cities "
            "where slug = 'bangkok' returning id"
        )
        plan = await conn.fetchval(
            "select localplus_private.create_seating_plan($1, 'Bench hall', $2::jsonb, '[]', null)",
            venue,
            json.dumps(_zones()),
        )
        event = await conn.fetchval(
            "insert into public.events (created_by, title, starts_at, ends_at, timezone, status, venue_id, "
            "seating_plan_id) values ($1, 'Seated bench', now() + interval '7 days', now() + interval '8 days', "
            "'Asia/Bangkok', 'published', $2, $3) returning id",
            owner,
            venue,
            plan,
        )
        types = {
            zone: await conn.fetchval(
                "insert into public.ticket_types (event_id, name, price_minor, currency, inventory, seat_category, "
                "max_per_order) values ($1, $2, 0, 'THB', 0, $3, 10) returning id",
                event,
                zone,
                zone.lower(),
            )
            for zone in ZONES
        }
        # A tenth of the stalls-to-circle seats sold or held (one claim each, as orders would leave them).
        seats = await conn.fetch(
            "select es.id, ps.category from public.event_seats es join public.plan_seats ps on ps.id = es.plan_seat_id "
            "where es.event_id = $1 and ps.category <> 'gallery'",
            event,
        )
        rng = random.Random(7)
        taken = rng.sample(list(seats), len(seats) // 10)
        await conn.executemany(
            "insert into public.seat_claims (seat_id, occurrence_key, kind, order_id, ticket_type_id, during) "
            "values ($1, $2, 'blocked', null, null, tstzrange(now(), null))",
            [(seat["id"], event) for seat in taken],
        )
        await conn.execute("analyze public.plan_seats, public.event_seats, public.seat_claims")
        return event, types["Gallery"]
    finally:
        await conn.close()


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=20)
    return statistics.median(samples), cuts[18]


async def _one_at_a_time(client: httpx.AsyncClient, path: str) -> tuple[float, float, int]:
    latencies, size = [], 0
    for _ in range(REQUESTS):
        began = time.perf_counter()
        response = await client.get(path)
        latencies.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.text[:500]
        size = len(response.content)
    return (*_percentiles(latencies), size)


async def _rush(endpoints: Endpoints, type_id: uuid.UUID) -> tuple[float, float, float, Counter[int]]:
    buyers = [uuid.uuid4() for _ in range(BUYERS)]
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        await conn.executemany("insert into auth.users (id) values ($1)", [(b,) for b in buyers])
    finally:
        await conn.close()
    body = {"best_available": {"ticket_type_id": str(type_id), "quantity": QUANTITY}}
    limits = httpx.Limits(max_connections=BUYERS, max_keepalive_connections=BUYERS)
    async with httpx.AsyncClient(base_url=endpoints.gateway_url, timeout=300, limits=limits) as client:

        async def buy(buyer: uuid.UUID) -> tuple[float, int]:
            token = mint(buyer, endpoints.jwt_secret)
            began = time.perf_counter()
            response = await client.post(
                "/api/orders", json=body | {"request_id": str(buyer)}, headers={"authorization": f"Bearer {token}"}
            )
            return (time.perf_counter() - began) * 1000, response.status_code

        answers = await asyncio.gather(*(buy(b) for b in buyers))
    latencies = [latency for latency, _ in answers]
    return (*_percentiles(latencies), max(latencies), Counter(code for _, code in answers))


async def run(endpoints: Endpoints) -> None:
    seats = len(ZONES) * ROWS * PER_ROW
    print(f"seating: seeding a {seats:,}-seat plan and an event using it ...", flush=True)
    event, gallery = await seed(endpoints.database_url)
    async with httpx.AsyncClient(base_url=endpoints.gateway_url, timeout=120) as client:
        j50, j95, json_size = await _one_at_a_time(client, f"/api/events/{event}/seats")
        s50, s95, svg_size = await _one_at_a_time(client, f"/api/events/{event}/seat-map.svg")
    print(
        f"  {seats:,} seats, {REQUESTS} requests one at a time through the gateway (anon): seats JSON "
        f"({json_size / 1e6:.1f} MB) p50 {j50:.0f} ms / p95 {j95:.0f} ms; seat-map.svg ({svg_size / 1e6:.1f} MB) "
        f"p50 {s50:.0f} ms / p95 {s95:.0f} ms",
        flush=True,
    )
    b50, b95, worst, codes = await _rush(endpoints, gallery)
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        shared = await conn.fetchval(
            "select count(*) from public.seat_claims a join public.seat_claims b on a.seat_id = b.seat_id "
            "and a.occurrence_key = b.occurrence_key and a.id < b.id and a.during && b.during"
        )
    finally:
        await conn.close()
    print(
        f"  best-available, {BUYERS} buyers at once for {QUANTITY} adjacent seats of one {ROWS * PER_ROW:,}-seat "
        f"category: p50 {b50:.0f} ms / p95 {b95:.0f} ms / max {worst:.0f} ms; answers {dict(codes)}; "
        f"seats held by two claims at once: {shared}",
        flush=True,
    )
