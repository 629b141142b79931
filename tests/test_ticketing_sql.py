"""Orders, tickets and refunds in raw SQL the way Supabase's REST runs it (as `authenticated` with a
user's claims), on every database the suite runs on: a buyer reads only their own orders, tickets
and codes (never the payment secrets); the event's viewers read none of them, its editors all; and
nobody but the server changes what is sold, an order's status or a ticket's, even where Supabase's
default grants would let the statement through (`grant_all_on`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from tests.sql_callers import as_caller, claims_of, new_event, new_user

REFUSED = (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError)


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@dataclass(frozen=True)
class Sale:
    owner: uuid.UUID
    editor: uuid.UUID
    viewer: uuid.UUID
    buyer: uuid.UUID
    other_buyer: uuid.UUID
    event_id: uuid.UUID
    ticket_type_id: uuid.UUID
    order_id: uuid.UUID
    other_order_id: uuid.UUID


async def paid_order(pool: asyncpg.Pool, buyer: uuid.UUID, ticket_type_id: uuid.UUID, quantity: int) -> uuid.UUID:
    """Reserved and paid the way the server does it (its functions, as a trusted connection)."""
    items = json.dumps([{"ticket_type_id": str(ticket_type_id), "quantity": quantity}])
    order_id: uuid.UUID = await pool.fetchval(
        "select localplus_private.reserve_order($1, $2, $3::jsonb, interval '10 minutes')", buyer, "sql", items
    )
    await pool.execute("update public.orders set client_secret = 'pi_secret_xyz' where id = $1", order_id)
    tickets = [uuid.uuid4() for _ in range(quantity)]
    outcome = await pool.fetchval(
        "select localplus_private.pay_order($1, $2, $3, $4)",
        order_id,
        tickets,
        [f"LP1.{t}" for t in tickets],
        f"LP-{uuid.uuid4().hex[:8]}",
    )
    assert outcome == "paid"
    return order_id


@pytest.fixture
async def sale(pool: asyncpg.Pool) -> Sale:
    owner, editor, viewer, buyer, other_buyer = [await new_user(pool) for _ in range(5)]
    event_id = await new_event(pool, owner)
    await pool.executemany(
        "insert into public.event_permissions (event_id, user_id, role) values ($1, $2, $3)",
        [(event_id, editor, "editor"), (event_id, viewer, "viewer")],
    )
    ticket_type_id = await pool.fetchval(
        "insert into public.ticket_types (event_id, name, currency, inventory, price_minor) "
        "values ($1, 'GA', 'THB', 10, 5000) returning id",
        event_id,
    )
    return Sale(
        owner,
        editor,
        viewer,
        buyer,
        other_buyer,
        event_id,
        ticket_type_id,
        await paid_order(pool, buyer, ticket_type_id, 2),
        await paid_order(pool, other_buyer, ticket_type_id, 1),
    )


async def test_a_buyer_reads_only_their_own_orders_tickets_and_codes(pool: asyncpg.Pool, sale: Sale) -> None:
    tables = ("orders", "order_items", "tickets", "refunds")
    await pool.fetchval(
        "select localplus_private.refund_tickets($1, '{}', 'sql', null, true)", sale.other_order_id
    )  # so that the other buyer has a refund too
    async with as_caller(pool, sale.buyer, grant_all_on=tables) as conn:
        orders = await conn.fetch("select id from public.orders where event_id = $1", sale.event_id)
        assert [o["id"] for o in orders] == [sale.order_id]
        assert await conn.fetchval("select count(*) from public.orders where id = $1", sale.other_order_id) == 0
        assert (
            await conn.fetchval("select count(*) from public.order_items where order_id = $1", sale.other_order_id) == 0
        )
        assert await conn.fetchval("select count(*) from public.refunds where order_id = $1", sale.other_order_id) == 0
        codes = await conn.fetch("select order_id, code from public.tickets where event_id = $1", sale.event_id)
        assert {c["order_id"] for c in codes} == {sale.order_id} and len(codes) == 2
    # The payment secret is the API's to hand to the buyer, not readable in SQL even by them.
    async with as_caller(pool, sale.buyer) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("select client_secret from public.orders where id = $1", sale.order_id)
    for table in tables:
        async with as_caller(pool, None) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"select * from public.{table}")


async def test_viewers_read_no_orders_or_tickets_editors_read_all(pool: asyncpg.Pool, sale: Sale) -> None:
    counts = (
        "select array[(select count(*) from public.orders where event_id = $1),"
        " (select count(*) from public.tickets where event_id = $1)]"
    )
    async with as_caller(pool, sale.viewer, grant_all_on=("orders", "tickets")) as conn:
        assert await conn.fetchval(counts, sale.event_id) == [0, 0]
    for who in (sale.editor, sale.owner):
        async with as_caller(pool, who) as conn:
            assert await conn.fetchval(counts, sale.event_id) == [2, 3]


async def test_nobody_but_the_server_changes_sold_or_statuses(pool: asyncpg.Pool, sale: Sale) -> None:
    writes = {
        "ticket_type_buckets": "update public.ticket_type_buckets set sold = 0, taken = 0 where ticket_type_id = $1",
        "orders": "update public.orders set status = 'refunded', refunded_minor = 0 where event_id = $1",
        "tickets": "update public.tickets set status = 'void' where event_id = $1",
    }
    args = {"ticket_type_buckets": sale.ticket_type_id, "orders": sale.event_id, "tickets": sale.event_id}
    for who in (sale.owner, sale.editor, sale.buyer):
        # With the grants the migrations leave: the columns are no API role's to write.
        for table, statement in writes.items():
            async with as_caller(pool, who) as conn:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement, args[table])
        # With Supabase's default grants on top: no policy lets the rows be written (what is sold is
        # counted in the type's buckets, which no policy opens to anyone).
        async with as_caller(pool, who, grant_all_on=tuple(writes)) as conn:
            assert await conn.execute(writes["ticket_type_buckets"], args["ticket_type_buckets"]) == "UPDATE 0"
            assert await conn.fetchval("select localplus_private.tickets_sold($1)", sale.ticket_type_id) == 3
            assert await conn.execute(writes["orders"], args["orders"]) == "UPDATE 0"
            assert await conn.execute(writes["tickets"], args["tickets"]) == "UPDATE 0"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # row-level security: no insert policy
                await conn.execute(
                    "insert into public.tickets (id, order_id, event_id, ticket_type_id, holder_id, price_minor, code) "
                    "values (gen_random_uuid(), $1, $2, $3, auth.uid(), 0, 'LP1.forged')",
                    sale.order_id,
                    sale.event_id,
                    sale.ticket_type_id,
                )
        # The server's functions are not theirs to run either.
        async with as_caller(pool, who) as conn:
            with pytest.raises(REFUSED):
                await conn.fetchval(
                    "select localplus_private.refund_tickets($1, '{}', 'mine', null, true)", sale.order_id
                )
    assert await pool.fetchval("select localplus_private.tickets_sold($1)", sale.ticket_type_id) == 3
    statuses = await pool.fetch("select status from public.orders where event_id = $1", sale.event_id)
    assert {s["status"] for s in statuses} == {"paid"}
    tickets = await pool.fetch("select status from public.tickets where event_id = $1", sale.event_id)
    assert {t["status"] for t in tickets} == {"valid"}


async def test_a_buyer_reading_their_order_items_probes_orders_by_key(pool: asyncpg.Pool, sale: Sale) -> None:
    """The policy's `exists (select 1 from orders ...)` stays a per-row key probe: answered instead
    by a hashed subplan, it scanned every order and ranked the caller on each (49 ms at 300 orders)."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()  # rolled back: the orders and statistics are this test's only
        await transaction.start()
        try:
            await conn.execute(
                "insert into public.orders (event_id, buyer_id, request_id, currency, total_minor, expires_at) "
                "select $1, $2, 'many-' || i, 'THB', 0, now() + interval '1 hour' from generate_series(1, 500) i",
                sale.event_id,
                sale.other_buyer,
            )
            await conn.execute("analyze public.orders")
            await conn.execute("set local plan_cache_mode = force_generic_plan")
            await conn.execute(
                "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
                json.dumps(claims_of(sale.buyer)),
            )
            await conn.execute("prepare items(uuid[]) as select * from public.order_items where order_id = any($1)")
            plan = await conn.fetchval(f"explain (format json) execute items('{{{sale.order_id}}}')")
            await conn.execute("deallocate items")
        finally:
            await transaction.rollback()
    assert "Seq Scan" not in plan and "orders_pkey" in plan, plan
