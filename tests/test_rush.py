"""A rush on one ticket type never oversells: 500 buyers at once for 100 tickets through the gateway get
exactly 100 reservations and 400 clean 409 SOLD_OUT answers, and paying them gives exactly 100 tickets.

As for registrations (tests/test_capacity.py, after pretix), the last test first shows that the race is
real, with a read-then-write variant of `localplus_private.take_tickets` (the bucket's row lock and the
bucket's CHECK removed, the window between counting a bucket's tickets and taking them widened) that
oversells, and then that the real function, with the same widened window and no CHECK, does not."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import timedelta

import asyncpg
import httpx
import pytest

from localplus_common.config import DEV_JWT_SECRET
from localplus_common.migrate import migrate
from localplus_dev.stack import Stack
from localplus_dev.token import mint
from tests.databases import Server
from tests.support import User, create_user
from tests.ticketing_support import checkout, event_with_tickets, reserve

INVENTORY = 100
BUYERS = 500


async def many_buyers(db: asyncpg.Pool, count: int) -> list[User]:
    ids = [uuid.uuid4() for _ in range(count)]
    await db.executemany("insert into auth.users (id) values ($1)", [(i,) for i in ids])
    return [User(i, mint(i, DEV_JWT_SECRET)) for i in ids]


async def test_500_buyers_for_100_tickets_through_the_gateway(stack: Stack, db: asyncpg.Pool) -> None:
    owner = await create_user(db)
    buyers = await many_buyers(db, BUYERS)
    # One connection per buyer, so that all 500 requests are at the gateway at once.
    limits = httpx.Limits(max_connections=BUYERS, max_keepalive_connections=BUYERS)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60, limits=limits) as api:
        event, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=INVENTORY)
        type_id = uuid.UUID(ticket_type["id"])

        answers = await asyncio.gather(*(reserve(api, buyer, ticket_type["id"]) for buyer in buyers))

        assert Counter(r.status_code for r in answers) == {200: INVENTORY, 409: BUYERS - INVENTORY}, {
            r.text for r in answers if r.status_code not in (200, 409)
        }
        refusals = [r.json() for r in answers if r.status_code == 409]
        assert {detail["reason"] for body in refusals for detail in body["details"] if "reason" in detail} == {
            "SOLD_OUT"
        }
        assert all(any(d.get("reason") == "SOLD_OUT" for d in body["details"]) for body in refusals)
        reserved = [(buyer, r.json()) for buyer, r in zip(buyers, answers, strict=True) if r.status_code == 200]
        assert {order["status"] for _, order in reserved} == {"ORDER_STATUS_RESERVED"}
        held = await db.fetchrow(
            "select count(distinct o.buyer_id) as buyers, sum(h.quantity) as held from public.ticket_holds h "
            "join public.orders o on o.id = h.order_id where h.ticket_type_id = $1 and h.expires_at > now()",
            type_id,
        )
        assert held is not None
        assert (held["buyers"], held["held"]) == (INVENTORY, INVENTORY)
        types = (await api.get(f"/api/events/{event['id']}/ticket-types")).json()["ticket_types"]
        assert (types[0]["sold"], types[0]["available"]) == (0, 0)

        # Everyone who got a reservation checks out (a free type: paid at checkout), all at once.
        paid = await asyncio.gather(*(checkout(api, buyer, order["id"]) for buyer, order in reserved))
        assert [r.status_code for r in paid] == [200] * INVENTORY, {r.text for r in paid if r.status_code != 200}
        assert {r.json()["order"]["status"] for r in paid} == {"ORDER_STATUS_PAID"}

        late = await reserve(api, buyers[-1], ticket_type["id"])
        assert late.status_code == 409 and late.json()["details"][0]["reason"] == "SOLD_OUT"

    counts = await db.fetchrow(
        "select localplus_private.tickets_sold($1) as sold,"
        " (select count(*) from public.tickets where ticket_type_id = $1) as tickets,"
        " (select count(distinct code) from public.tickets where ticket_type_id = $1) as codes,"
        " (select count(*) from public.ticket_holds where ticket_type_id = $1) as holds",
        type_id,
    )
    assert counts is not None
    assert dict(counts) == {"sold": INVENTORY, "tickets": INVENTORY, "codes": INVENTORY, "holds": 0}
    per_order = await db.fetch(
        "select o.status, count(t.id) as tickets from public.orders o left join public.tickets t on t.order_id = o.id "
        "where o.event_id = $1 group by o.id",
        uuid.UUID(event["id"]),
    )
    assert Counter((row["status"], row["tickets"]) for row in per_order) == {("paid", 1): INVENTORY}


# The race, in SQL on a scratch database.

RESERVE_ORDER = "localplus_private.reserve_order"
TAKE = "localplus_private.take_tickets(uuid, uuid, integer, timestamp with time zone)"
HOLD = timedelta(minutes=10)
# The lock on the bucket a buyer draws from (busy buckets are skipped).
LOCK = "for update of b skip locked"
# Where take_tickets has counted a bucket's free tickets, and goes on to take them.
COUNTED = "of them are this order's."
# The CHECK that would refuse an oversold bucket: off, so that only the lock stands in the race's way.
NO_CHECK = "alter table public.ticket_type_buckets drop constraint if exists ticket_type_buckets_taken_within_capacity;"


async def _rush_in_sql(database_url: str, definition: str) -> tuple[int, Counter[str]]:
    """500 buyers at once for 100 tickets with `definition` as take_tickets: (tickets held, answers)."""
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(definition)
        owner = uuid.uuid4()
        buyers = [uuid.uuid4() for _ in range(BUYERS)]
        await admin.executemany("insert into auth.users (id) values ($1)", [(u,) for u in [owner, *buyers]])
        event_id = await admin.fetchval(
            "insert into public.events (created_by, title, starts_at, ends_at, timezone, status) "
            "values ($1, 'rush', now() + interval '1 day', now() + interval '2 days', 'UTC', 'published') "
            "returning id",
            owner,
        )
        type_id = await admin.fetchval(
            "insert into public.ticket_types (event_id, name, price_minor, currency, inventory) "
            "values ($1, 'General admission', 0, 'THB', $2) returning id",
            event_id,
            INVENTORY,
        )
        items = json.dumps([{"ticket_type_id": str(type_id), "quantity": 1}])
        pool = await asyncpg.create_pool(database_url, min_size=40, max_size=40)
        assert pool is not None
        try:
            outcomes = await asyncio.gather(
                *(
                    pool.fetchval(f"select {RESERVE_ORDER}($1, $2, $3::jsonb, $4)", buyer, "rush", items, HOLD)
                    for buyer in buyers
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
        held: int = await admin.fetchval(
            "select coalesce(sum(quantity), 0) from public.ticket_holds where ticket_type_id = $1", type_id
        )
        return held, answers
    finally:
        await admin.close()


@pytest.mark.parametrize("server", ["embedded", "supabase15"], indirect=True)
async def test_reserve_race_exists_without_the_lock_and_the_lock_closes_it(server: Server) -> None:
    scratch = f"rush_{uuid.uuid4().hex[:8]}"
    url = await server.create_database(scratch)
    try:
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            real = await conn.fetchval("select pg_get_functiondef($1::regprocedure)", TAKE)
        finally:
            await conn.close()
        assert real.count(LOCK) == 1 and real.count(COUNTED) == 1
        # Widen the window between counting the tickets and holding them, as a busy CPU or slow disk would.
        widened = NO_CHECK + real.replace(COUNTED, COUNTED + "\n    perform pg_sleep(0.02);")
        unlocked = widened.replace(LOCK, "")

        held, answers = await _rush_in_sql(url, unlocked)
        assert held > INVENTORY, f"the race did not show ({answers}): this test could not catch a regression"

        held, answers = await _rush_in_sql(url, widened)
        assert held == INVENTORY
        assert answers == {"reserved": INVENTORY, "LP409 SOLD_OUT": BUYERS - INVENTORY}
    finally:
        await server.drop_database(scratch)
