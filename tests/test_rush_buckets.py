"""A ticket type's inventory in buckets (sql/migrations/20261210000000_rush_buckets.sql): buyers draw from
different rows, and still the total is exact.

* Many buyers at once through the gateway for a small inventory spread over 16 buckets, ordering 1 or 2
  tickets (an order may span buckets), with holds expiring and orders cancelled meanwhile: afterwards
  what is sold and held is EXACTLY the inventory, checked in SQL, and the buckets' books agree.
* Sold out is exact: the last ticket of a type is sold whichever bucket it is in, an order takes its
  tickets from several buckets when no single one has them, a bucket another buyer is busy with is
  waited for (never "sold out" while it may have tickets), and tickets given back sell again."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import pytest

from localplus_common.migrate import MIGRATIONS_DIR, migrate
from localplus_dev.stack import Stack
from tests.databases import Server
from tests.support import User, create_user, lock_waiters
from tests.test_rush import many_buyers
from tests.ticketing_support import checkout, event_with_tickets, reserve

BUCKETS = 16
BUCKETS_MIGRATION = "20261210000000_rush_buckets.sql"

# One snapshot of a type's books: sold and held against the inventory, and the buckets against both.
BOOKS = """
select t.inventory, localplus_private.tickets_sold(t.id) as sold,
       (select coalesce(sum(quantity), 0) from public.ticket_holds where ticket_type_id = t.id)::int as held,
       (select coalesce(sum(quantity), 0) from public.ticket_holds
         where ticket_type_id = t.id and expires_at > now())::int as live,
       (select count(*) from public.tickets where ticket_type_id = t.id and status <> 'void')::int as tickets,
       (select count(*) from public.ticket_type_buckets where ticket_type_id = t.id)::int as buckets,
       (select sum(taken) from public.ticket_type_buckets where ticket_type_id = t.id)::int as taken,
       (select sum(capacity) from public.ticket_type_buckets where ticket_type_id = t.id)::int as capacity,
       (select count(*) from public.ticket_type_buckets where ticket_type_id = t.id and taken > capacity)::int as over,
       -- Buckets whose count of tickets taken is not their holds and their sales.
       (select count(*) from public.ticket_type_buckets b
         where b.ticket_type_id = t.id
           and b.taken <> b.sold + (select coalesce(sum(h.quantity), 0) from public.ticket_holds h
                                     where h.ticket_type_id = b.ticket_type_id and h.bucket = b.bucket))::int
         as unbalanced
  from public.ticket_types t where t.id = $1
"""


async def books(db: asyncpg.Pool, type_id: str) -> dict[str, int]:
    """The type's books, asserted to agree: every bucket within its capacity, the capacities adding up to
    the inventory, what each bucket counts equal to its holds and sales, one ticket per sale."""
    row = await db.fetchrow(BOOKS, uuid.UUID(type_id))
    assert row is not None
    counts = dict(row)
    assert counts["over"] == 0 and counts["unbalanced"] == 0, counts
    assert counts["capacity"] == counts["inventory"], counts
    assert counts["taken"] == counts["sold"] + counts["held"], counts
    assert counts["tickets"] == counts["sold"], counts
    assert counts["sold"] + counts["live"] <= counts["inventory"], counts
    return counts


async def test_many_buyers_for_a_small_inventory_in_buckets_get_exactly_the_inventory(
    stack: Stack, db: asyncpg.Pool
) -> None:
    inventory, first_wave, second_wave, last_wave = 40, 240, 120, 30
    owner = await create_user(db)
    buyers = await many_buyers(db, first_wave + second_wave + last_wave)
    limits = httpx.Limits(max_connections=first_wave, max_keepalive_connections=first_wave)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=120, limits=limits) as api:
        _, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=inventory)
        type_id = ticket_type["id"]
        assert (await books(db, type_id))["buckets"] == BUCKETS  # 2 or 3 tickets a bucket

        # Wave 1: everyone at once, for 1 or 2 tickets (2 may have to come from two buckets).
        rng = random.Random(10)
        wanted = [rng.choice((1, 2)) for _ in range(first_wave)]
        answers = await asyncio.gather(
            *(
                reserve(api, buyer, type_id, quantity)
                for buyer, quantity in zip(buyers[:first_wave], wanted, strict=True)
            )
        )
        assert {r.status_code for r in answers} <= {200, 409}, {r.text for r in answers if r.status_code >= 500}
        reserved = [(b, r.json()) for b, r in zip(buyers[:first_wave], answers, strict=True) if r.status_code == 200]
        assert sum(q for q, r in zip(wanted, answers, strict=True) if r.status_code == 200) <= inventory
        counts = await books(db, type_id)
        assert counts["held"] == sum(int(order["items"][0]["quantity"]) for _, order in reserved)

        # Meanwhile: some holds run out (nobody swept them), some buyers give up, the rest pay, and a
        # second wave of buyers (1 ticket each, more than can be left) comes for what is back.
        expired, cancelled, paying = reserved[:4], reserved[4:8], reserved[8:]
        ran_out = [uuid.UUID(order["id"]) for _, order in expired]
        await db.execute(
            "update public.ticket_holds set expires_at = now() - interval '1 second' where order_id = any($1)", ran_out
        )
        await db.execute(
            "update public.orders set expires_at = now() - interval '1 second' where id = any($1)", ran_out
        )
        late = buyers[first_wave : first_wave + second_wave]
        outcomes = await asyncio.gather(
            *(api.post(f"/api/orders/{order['id']}:cancel", json={}, headers=b.headers) for b, order in cancelled),
            *(checkout(api, b, order["id"]) for b, order in paying),
            *(reserve(api, buyer, type_id) for buyer in late),
        )
        assert {r.status_code for r in outcomes[: len(cancelled) + len(paying)]} == {200}
        # The last wave comes after every cancellation, so that nothing given back is left unsold.
        last = await asyncio.gather(*(reserve(api, buyer, type_id) for buyer in buyers[first_wave + second_wave :]))
        again = [*outcomes[len(cancelled) + len(paying) :], *last]
        assert Counter(r.status_code for r in again).keys() <= {200, 409}
        assert all(r.json()["details"][0]["reason"] == "SOLD_OUT" for r in again if r.status_code == 409)
        assert any(r.status_code == 409 for r in last), "the last wave should have outrun what was left"

        # Paying for a hold that ran out and was given back to others: refused, nothing sold.
        for buyer, order in expired:
            stale = await checkout(api, buyer, order["id"])
            assert stale.status_code == 409 and stale.json()["details"][0]["reason"] == "HOLD_EXPIRED", stale.text

    # Demand outran supply: sold + unexpired holds is EXACTLY the inventory, never more.
    counts = await books(db, type_id)
    assert counts["sold"] + counts["live"] == inventory, counts
    assert counts["sold"] == sum(int(order["items"][0]["quantity"]) for _, order in paying)


async def test_sold_out_is_exact_whichever_bucket_the_last_tickets_are_in(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner = await create_user(db)
    # 3 tickets over 16 buckets: 13 buckets are empty from the start.
    _, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=3)
    type_id = ticket_type["id"]
    buyers = [await create_user(db) for _ in range(5)]
    for buyer in buyers[:3]:
        sold = await reserve(api, buyer, type_id)
        assert sold.status_code == 200, sold.text
    refused = await reserve(api, buyers[3], type_id)
    assert refused.status_code == 409 and refused.json()["details"][0]["reason"] == "SOLD_OUT"
    assert (await books(db, type_id))["held"] == 3

    # Given back (cancelled), the ticket sells again, from whichever bucket it went back to.
    first = await db.fetchrow(
        "select o.id, o.buyer_id from public.orders o join public.ticket_holds h on h.order_id = o.id "
        "where h.ticket_type_id = $1 limit 1",
        uuid.UUID(type_id),
    )
    assert first is not None
    giving_up = next(b for b in buyers[:3] if b.id == first["buyer_id"])
    cancel = await api.post(f"/api/orders/{first['id']}:cancel", json={}, headers=giving_up.headers)
    assert cancel.status_code == 200, cancel.text
    resold = await reserve(api, buyers[3], type_id)
    assert resold.status_code == 200, resold.text
    await books(db, type_id)

    # One order for all 3 tickets of a fresh type: no bucket has 3, so they come from three.
    _, spread = await event_with_tickets(api, owner, price_minor=0, inventory=3)
    whole = await reserve(api, buyers[4], spread["id"], quantity=3)
    assert whole.status_code == 200, whole.text
    assert (
        await db.fetchval("select count(*) from public.ticket_holds where ticket_type_id = $1", uuid.UUID(spread["id"]))
        == 3
    )
    assert (await books(db, spread["id"]))["held"] == 3


async def test_a_busy_bucket_is_waited_for_not_taken_for_sold_out(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    owner = await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=1)
    type_id = uuid.UUID(ticket_type["id"])
    # Another transaction is busy with the one bucket that has the ticket (as a buyer would be).
    async with db.acquire() as other:
        busy = other.transaction()
        await busy.start()
        await other.execute(
            "select 1 from public.ticket_type_buckets where ticket_type_id = $1 and capacity > 0 for update", type_id
        )
        pending = asyncio.ensure_future(reserve(api, user, str(type_id)))
        done, _ = await asyncio.wait({pending}, timeout=1.0)
        assert not done, f"answered while the bucket was busy: {pending.result().text}"
        await busy.rollback()
    bought = await pending
    assert bought.status_code == 200, bought.text
    await books(db, str(type_id))


async def test_paying_a_hold_while_it_is_given_back_sells_it_once(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    """A payment for an expired hold races a buyer who gives that hold back to the others (a bucket's
    reclaim): the payment either finds its hold or takes the ticket again, never both sold and given
    back (the sale would leave its bucket with a free ticket that the next buyer gets: one too many)."""
    owner, other, late = await create_user(db), await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=2)
    type_id = uuid.UUID(ticket_type["id"])
    await db.execute("select localplus_private.split_ticket_type($1, 1)", type_id)
    assert (await reserve(api, other, str(type_id))).status_code == 200
    reserved = await reserve(api, user, str(type_id))
    assert reserved.status_code == 200, reserved.text
    order_id = uuid.UUID(reserved.json()["id"])
    await db.execute(
        "update public.ticket_holds set expires_at = now() - interval '1 second' where order_id = $1", order_id
    )
    async with db.acquire() as reclaimer, db.acquire() as payer:
        giving_back = reclaimer.transaction()
        await giving_back.start()
        # As a buyer who found every bucket full does: all of them locked, the expired holds given back.
        await reclaimer.execute(
            "select 1 from public.ticket_type_buckets where ticket_type_id = $1 for update", type_id
        )
        await reclaimer.execute("select localplus_private.reclaim_expired_holds($1)", type_id)
        paying = asyncio.ensure_future(
            payer.fetchval(
                "select localplus_private.pay_order($1, $2, $3, 'LP-RACE')", order_id, [uuid.uuid4()], ["LP1.race"]
            )
        )
        if not await lock_waiters(db, pid=payer.get_server_pid()):
            raise AssertionError(f"the payment did not wait for the reclaim: {await paying}")
        await giving_back.commit()
        assert await paying == "paid"
    # One ticket sold, the other held: the next buyer finds none.
    refused = await reserve(api, late, str(type_id))
    assert refused.status_code == 409 and refused.json()["details"][0]["reason"] == "SOLD_OUT", refused.text
    counts = await db.fetchrow(
        "select (select sum(taken) from public.ticket_type_buckets where ticket_type_id = $1)::int as taken,"
        " (select count(*) from public.tickets where ticket_type_id = $1)::int as tickets",
        type_id,
    )
    assert dict(counts or {}) == {"taken": 2, "tickets": 1}
    await books(db, str(type_id))


@pytest.mark.parametrize("server", ["embedded"], indirect=True)
async def test_the_migration_gives_existing_ticket_types_their_buckets(server: Server, tmp_path: Path) -> None:
    """On a database with sales and holds (one of them expired) from before buckets, the migration splits
    each type keeping what is sold and held: exactly the tickets that were left can be reserved."""
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < BUCKETS_MIGRATION:
            shutil.copy(path, before / path.name)
    scratch = f"rush_migrate_{uuid.uuid4().hex[:8]}"
    url = await server.create_database(scratch)
    try:
        await migrate(url, before)
        conn = await asyncpg.connect(url)
        try:
            owner, buyer, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            await conn.executemany("insert into auth.users (id) values ($1)", [(owner,), (buyer,), (other,)])
            event_id = await conn.fetchval(
                "insert into public.events (created_by, title, starts_at, ends_at, timezone, status) values "
                "($1, 'old', now() + interval '1 day', now() + interval '2 days', 'UTC', 'published') returning id",
                owner,
            )
            type_id = await conn.fetchval(
                "insert into public.ticket_types (event_id, name, price_minor, currency, inventory) "
                "values ($1, 'GA', 0, 'THB', 10) returning id",
                event_id,
            )
            await conn.execute("update public.ticket_types set sold = 3 where id = $1", type_id)
            for holder, quantity, expires in ((buyer, 2, "1 hour"), (other, 4, "-1 hour")):
                order_id = await conn.fetchval(
                    "insert into public.orders (event_id, buyer_id, request_id, currency, total_minor, expires_at) "
                    "values ($1, $2, 'old', 'THB', 0, now() + $3::text::interval) returning id",
                    event_id,
                    holder,
                    expires,
                )
                await conn.execute("insert into public.order_items values ($1, $2, $3, 0)", order_id, type_id, quantity)
                await conn.execute(
                    "insert into public.ticket_holds values ($1, $2, $3, now() + $4::text::interval)",
                    order_id,
                    type_id,
                    quantity,
                    expires,
                )
        finally:
            await conn.close()

        # The buckets migration runs next (later migrations after it).
        assert (await migrate(url))[0] == BUCKETS_MIGRATION.split("_")[0]

        conn = await asyncpg.connect(url)
        try:
            counts = await conn.fetchrow(
                "select count(*) as buckets, sum(capacity) as capacity, sum(taken) as taken "
                "from public.ticket_type_buckets where ticket_type_id = $1",
                type_id,
            )
            assert dict(counts or {}) == {"buckets": BUCKETS, "capacity": 10, "taken": 3 + 2}
            reserve_sql = "select localplus_private.reserve_order($1, $2, $3::jsonb, interval '10 minutes')"
            newcomer = uuid.uuid4()
            await conn.execute("insert into auth.users (id) values ($1)", newcomer)
            six, five = ([{"ticket_type_id": str(type_id), "quantity": n}] for n in (6, 5))
            with pytest.raises(asyncpg.PostgresError) as refused:
                await conn.fetchval(reserve_sql, newcomer, "six", json.dumps(six))
            assert (refused.value.sqlstate, refused.value.hint) == ("LP409", "SOLD_OUT")
            assert await conn.fetchval(reserve_sql, newcomer, "five", json.dumps(five))
        finally:
            await conn.close()
    finally:
        await server.drop_database(scratch)
