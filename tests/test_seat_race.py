"""300 buyers at once for the same 20 seats, chosen seats and best-available mixed, never sell a seat
twice: through the gateway, and in SQL, where the race is first shown to be real with a naive
check-then-insert (the exclusion constraint dropped, best-available's lock removed, the window between
checking and claiming widened), then closed by the constraint with the same widened window."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from localplus_common.db import MAX_ATTEMPTS
from localplus_common.migrate import migrate
from localplus_dev.stack import Stack
from tests.databases import Server
from tests.seating_support import order_best, order_seats, reason, row_of, seated_event, statuses
from tests.support import User, create_user
from tests.test_rush import many_buyers

BUYERS = 300
SEATS = 20
HOLD = timedelta(minutes=10)
# Two claims of one seat (per occurrence) live at the same time: what must never exist.
OVERLAPS = """
select count(*) from public.seat_claims a join public.seat_claims b
    on a.seat_id = b.seat_id and a.occurrence_key = b.occurrence_key and a.id < b.id and a.during && b.during
 where a.seat_id = any ($1)
"""


def wishes(seat_ids: list[str], type_id: str) -> list[tuple[str, Any]]:
    """What each buyer asks for, the same every run: half name one or two adjacent seats, half ask for
    the best one or two."""
    rng = random.Random(16)
    asks: list[tuple[str, Any]] = []
    for n in range(BUYERS):
        quantity = rng.choice((1, 2))
        if n % 2:
            asks.append(("best", (type_id, quantity)))
        else:
            start = rng.randrange(SEATS - quantity + 1)
            asks.append(("seats", seat_ids[start : start + quantity]))
    return asks


async def test_300_buyers_for_20_seats_through_the_gateway(stack: Stack, db: asyncpg.Pool, admin: User) -> None:
    owner = await create_user(db)
    buyers = await many_buyers(db, BUYERS)
    limits = httpx.Limits(max_connections=BUYERS, max_keepalive_connections=BUYERS)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=120, limits=limits) as api:
        rows = [row_of("A", SEATS // 2, "std"), row_of("B", SEATS // 2, "std", y=1.0)]
        seated = await seated_event(api, admin, owner, [{"name": "Hall", "rows": rows}], prices={"std": 0})
        seat_ids = [seat["id"] for seat in seated.seats.values()]
        asks = wishes(seat_ids, seated.types["std"]["id"])

        answers = await asyncio.gather(
            *(
                order_seats(api, buyer, ask) if kind == "seats" else order_best(api, buyer, *ask)
                for buyer, (kind, ask) in zip(buyers, asks, strict=True)
            )
        )

        codes = Counter(r.status_code for r in answers)
        assert set(codes) == {200, 409}, {r.text for r in answers if r.status_code not in (200, 409)}
        assert {reason(r) for r in answers if r.status_code == 409} <= {"SEAT_UNAVAILABLE", "SOLD_OUT"}
        won = [r.json() for r in answers if r.status_code == 200]
        held = [seat["seat_id"] for order in won for seat in order["seats"]]
        assert len(held) == len(set(held)) <= SEATS
        assert await db.fetchval(OVERLAPS, [uuid.UUID(s) for s in seat_ids]) == 0
        now = await statuses(api, seated.event["id"])
        assert Counter(now.values())["HELD"] == len(held)


# The race, in SQL on a scratch database.

EXCLUSION = "alter table public.seat_claims drop constraint seat_claims_one_at_a_time"
RESERVE_SEATS = "localplus_private.reserve_seats(uuid, text, uuid, uuid, uuid[], uuid, integer, interval)"
LOCK = "perform pg_advisory_xact_lock(hashtextextended(p_best_type::text, 0));"
CLAIM = "    begin\n      insert into public.orders"
# A naive claim: check that the seats are free, then (a busy CPU or a slow disk later) claim them.
CHECK_THEN_CLAIM = """
    if exists (select 1 from public.seat_claims c where c.seat_id = any (v_seats) and c.occurrence_key = v_key
                  and localplus_private.seat_claim_live(c.during)) then
      raise exception 'taken' using errcode = 'LP409', hint = 'SEAT_UNAVAILABLE';
    end if;
    perform pg_sleep(0.02);
"""


async def _race_in_sql(url: str, definition: str) -> tuple[int, int, Counter[str]]:
    """300 buyers at once for 20 seats with `definition` as reserve_seats: (overlapping claims, seats
    claimed, answers)."""
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(definition)
        owner = uuid.uuid4()
        buyers = [uuid.uuid4() for _ in range(BUYERS)]
        await admin.executemany("insert into auth.users (id) values ($1)", [(u,) for u in [owner, *buyers]])
        venue = await admin.fetchval(
            "insert into public.venues (city_id, name) select id, 'Hall' from public.cities where slug = 'bangkok'"
            " returning id"
        )
        rows = [row_of("A", SEATS // 2, "std"), row_of("B", SEATS // 2, "std", y=1.0)]
        plan = await admin.fetchval(
            "select localplus_private.create_seating_plan($1, 'Hall', $2::jsonb, '[]', null)",
            venue,
            json.dumps([{"name": "Hall", "rows": rows}]),
        )
        event_id = await admin.fetchval(
            "insert into public.events (created_by, title, starts_at, ends_at, timezone, status, venue_id, "
            "seating_plan_id) values ($1, 'race', now() + interval '1 day', now() + interval '2 days', 'UTC', "
            "'published', $2, $3) returning id",
            owner,
            venue,
            plan,
        )
        type_id = await admin.fetchval(
            "insert into public.ticket_types (event_id, name, price_minor, currency, inventory, seat_category) "
            "values ($1, 'Seat', 0, 'THB', 0, 'std') returning id",
            event_id,
        )
        seat_ids = [
            r["id"]
            for r in await admin.fetch(
                "select es.id from public.event_seats es join public.plan_seats ps on ps.id = es.plan_seat_id "
                "where es.event_id = $1 order by ps.row_rank, ps.seat_rank",
                event_id,
            )
        ]
        asks = wishes([str(s) for s in seat_ids], str(type_id))
        call = f"select {RESERVE_SEATS.split('(')[0]}($1, 'race', $2, null, $3, $4, $5, $6)"
        pool = await asyncpg.create_pool(url, min_size=40, max_size=40)
        assert pool is not None

        async def reserve(*args: object) -> object:
            # Two claims inserted at once into the exclusion constraint can each wait for the other; Postgres
            # then aborts one with a deadlock, which the service's request transaction retries (db.py).
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    return await pool.fetchval(call, *args)
                except asyncpg.DeadlockDetectedError:
                    if attempt == MAX_ATTEMPTS:
                        raise
            raise AssertionError("unreachable")

        try:
            outcomes = await asyncio.gather(
                *(
                    reserve(buyer, event_id, [uuid.UUID(s) for s in ask], None, 0, HOLD)
                    if kind == "seats"
                    else reserve(buyer, event_id, [], type_id, ask[1], HOLD)
                    for buyer, (kind, ask) in zip(buyers, asks, strict=True)
                ),
                return_exceptions=True,
            )
        finally:
            await pool.close()
        answers = Counter(
            "reserved"
            if isinstance(outcome, uuid.UUID)
            else f"{outcome.sqlstate} {outcome.hint}"
            if isinstance(outcome, asyncpg.PostgresError)
            else repr(outcome)
            for outcome in outcomes
        )
        overlaps: int = await admin.fetchval(OVERLAPS, seat_ids)
        claimed: int = await admin.fetchval(
            "select count(*) from public.seat_claims where seat_id = any ($1)", seat_ids
        )
        return overlaps, claimed, answers
    finally:
        await admin.close()


@pytest.mark.parametrize("server", ["embedded", "supabase15"], indirect=True)
async def test_the_seat_race_exists_with_check_then_insert_and_the_constraint_closes_it(server: Server) -> None:
    scratch = f"seats_{uuid.uuid4().hex[:8]}"
    url = await server.create_database(scratch)
    try:
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            real = await conn.fetchval("select pg_get_functiondef($1::regprocedure)", RESERVE_SEATS)
        finally:
            await conn.close()
        assert real.count(LOCK) == 1 and real.count(CLAIM) == 1
        widened = real.replace(CLAIM, CHECK_THEN_CLAIM + CLAIM)

        naive = widened.replace(LOCK, "")
        overlaps, claimed, answers = await _race_in_sql(url, f"{EXCLUSION}; {naive}")
        assert overlaps > 0, f"the race did not show ({answers}): this test could not catch a regression"
        assert claimed > SEATS

        await restore_the_constraint(url)
        overlaps, claimed, answers = await _race_in_sql(url, widened)
        assert overlaps == 0 and claimed <= SEATS
        assert set(answers) <= {"reserved", "LP409 SEAT_UNAVAILABLE", "LP409 SOLD_OUT"}, answers
    finally:
        await server.drop_database(scratch)


async def restore_the_constraint(url: str) -> None:
    """The scratch database as the migration left it, for the second run: no claims, the constraint back."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "delete from public.seat_claims; alter table public.seat_claims add constraint seat_claims_one_at_a_time "
            "exclude using gist (seat_id with =, occurrence_key with =, during with &&)"
        )
    finally:
        await conn.close()
