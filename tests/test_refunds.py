"""Refunds (`POST /api/orders/{id}:refund`) by the event's owner or a platform admin: whole orders
and single tickets, paid through localstripe (which must receive each refund once, for the right
amount) or free; the tickets are void and back on sale; nobody else may refund; refunding again or
at once refunds nothing more. The last test first shows the race a refund without the order's lock
would have (the same ticket refunded twice) and then that the real function closes it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from localplus_common.migrate import migrate
from localplus_dev.stack import Stack
from tests.databases import Server
from tests.stripe_support import (
    awaiting_payment,
    charge,
    deliver,
    order_refunds,
    order_row,
    refunded_at_stripe,
    stripe_event,
)
from tests.support import User, create_user
from tests.ticketing_support import checkout, event_with_tickets, my_tickets, pay_at_stripe, reserve, wait_for_status


async def paid_at_stripe(
    api: httpx.AsyncClient, stack: Stack, buyer: User, ticket_type_id: str, quantity: int
) -> dict[str, Any]:
    order = await awaiting_payment(api, buyer, ticket_type_id, quantity=quantity)
    await pay_at_stripe(stack, order["payment_intent_id"])
    paid = await wait_for_status(api, buyer, order["id"], "ORDER_STATUS_PAID")
    return paid | {"payment_intent_id": order["payment_intent_id"]}


async def refund(
    api: httpx.AsyncClient, who: User, order_id: str, ticket_ids: list[str] | None = None, reason: str = "asked"
) -> httpx.Response:
    return await api.post(
        f"/api/orders/{order_id}:refund", json={"ticket_ids": ticket_ids or [], "reason": reason}, headers=who.headers
    )


async def ticket_type_of(api: httpx.AsyncClient, event_id: str) -> dict[str, Any]:
    listed = await api.get(f"/api/events/{event_id}/ticket-types")
    ticket_type: dict[str, Any] = listed.json()["ticket_types"][0]
    return ticket_type


async def test_the_owner_refunds_a_whole_order_paid_at_stripe(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, price_minor=40_000, inventory=5)
    order = await paid_at_stripe(api, stack, buyer, ticket_type["id"], quantity=2)
    assert (await ticket_type_of(api, event["id"]))["sold"] == 2

    refunded = await refund(api, owner, order["id"], reason="event moved")
    assert refunded.status_code == 200, refunded.text
    body = refunded.json()
    assert body["order"]["status"] == "ORDER_STATUS_REFUNDED" and body["order"]["refunded_minor"] == "80000"
    assert [t["status"] for t in body["tickets"]] == ["TICKET_STATUS_VOID"] * 2
    assert {t["status"] for t in await my_tickets(api, buyer)} == {"TICKET_STATUS_VOID"}
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [80_000]
    [recorded] = await order_refunds(db, order["id"])
    assert recorded["status"] == "succeeded" and recorded["reason"] == "event moved"
    assert recorded["requested_by"] == owner.id
    back = await ticket_type_of(api, event["id"])
    assert back["sold"] == 0 and back["available"] == 5

    again = await refund(api, owner, order["id"])
    assert again.status_code == 400 and again.json()["details"][0]["reason"] == "INVALID_STATE"
    assert len(await refunded_at_stripe(stack, order["payment_intent_id"])) == 1


async def test_single_tickets_are_refunded_one_at_a_time(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, price_minor=25_000, inventory=5)
    order = await paid_at_stripe(api, stack, buyer, ticket_type["id"], quantity=3)
    first, *rest = sorted(t["id"] for t in await my_tickets(api, buyer))

    one = await refund(api, owner, order["id"], [first])
    assert one.status_code == 200, one.text
    assert one.json()["order"]["status"] == "ORDER_STATUS_PARTIALLY_REFUNDED"
    assert one.json()["order"]["refunded_minor"] == "25000"
    assert [t["id"] for t in one.json()["tickets"]] == [first]
    statuses = {t["id"]: t["status"] for t in await my_tickets(api, buyer)}
    assert statuses == {first: "TICKET_STATUS_VOID"} | dict.fromkeys(rest, "TICKET_STATUS_VALID")
    assert (await ticket_type_of(api, event["id"]))["available"] == 3

    twice = await refund(api, owner, order["id"], [first])
    assert twice.status_code == 400 and twice.json()["details"][0]["reason"] == "INVALID_TICKETS"
    not_this_orders = await refund(api, owner, order["id"], [str(uuid.uuid4())])
    assert not_this_orders.status_code == 400

    remaining = await refund(api, owner, order["id"])
    assert remaining.status_code == 200, remaining.text
    assert sorted(t["id"] for t in remaining.json()["tickets"]) == rest
    assert remaining.json()["order"]["status"] == "ORDER_STATUS_REFUNDED"
    assert remaining.json()["order"]["refunded_minor"] == "75000"
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [25_000, 50_000]
    back = await ticket_type_of(api, event["id"])
    assert back["sold"] == 0 and back["available"] == 5


async def test_a_free_order_is_refunded_without_stripe(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=3)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=2)).json()
    assert (await checkout(api, buyer, order["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"
    refunded = await refund(api, owner, order["id"])
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["order"]["status"] == "ORDER_STATUS_REFUNDED"
    assert {t["status"] for t in await my_tickets(api, buyer)} == {"TICKET_STATUS_VOID"}
    [recorded] = await order_refunds(db, order["id"])
    assert recorded["status"] == "succeeded" and recorded["amount_minor"] == 0
    assert (await ticket_type_of(api, event["id"]))["available"] == 3


async def test_one_ticket_of_a_free_order_refunded_leaves_the_others_valid(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=3)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=2)).json()
    assert (await checkout(api, buyer, order["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"
    first, second = sorted(t["id"] for t in await my_tickets(api, buyer))
    one = await refund(api, owner, order["id"], [first])
    assert one.status_code == 200, one.text
    assert one.json()["order"]["status"] == "ORDER_STATUS_PARTIALLY_REFUNDED"
    statuses = {t["id"]: t["status"] for t in await my_tickets(api, buyer)}
    assert statuses == {first: "TICKET_STATUS_VOID", second: "TICKET_STATUS_VALID"}
    assert (await ticket_type_of(api, event["id"]))["available"] == 2
    rest = await refund(api, owner, order["id"], [second])
    assert rest.status_code == 200 and rest.json()["order"]["status"] == "ORDER_STATUS_REFUNDED", rest.text


async def test_a_ticket_named_twice_is_a_400_saying_so(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """A valid ticket of the order named twice answered "some of those tickets are not this order's, or
    were refunded already", neither of which was true; now a 400 naming ticket_ids and the duplicate,
    and nothing is refunded."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=3)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=2)).json()
    assert (await checkout(api, buyer, order["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"
    first, _ = sorted(t["id"] for t in await my_tickets(api, buyer))
    twice = await refund(api, owner, order["id"], [first, first])
    assert twice.status_code == 400, twice.text
    assert twice.json()["message"] == "each ticket at most once", twice.text
    assert [v["field"] for d in twice.json()["details"] for v in d.get("field_violations", [])] == ["ticket_ids"]
    assert {t["status"] for t in await my_tickets(api, buyer)} == {"TICKET_STATUS_VALID"}
    assert (await refund(api, owner, order["id"], [first])).status_code == 200


async def test_a_ticket_refunded_after_a_partial_refund_at_stripe_refunds_only_what_is_left(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    """Stripe's dashboard gave back 30,000 of 50,000 (no tickets named); refunding one 25,000 ticket
    then sends the 20,000 left, and the other ticket stays valid."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=25_000, inventory=5)
    order = await paid_at_stripe(api, stack, buyer, ticket_type["id"], quantity=2)
    at_stripe = stripe_event("charge.refunded", charge(order, 30_000))
    assert (await deliver(api, at_stripe)).status_code == 200
    assert (await order_row(db, order["id"]))["status"] == "partially_refunded"
    first, second = sorted(t["id"] for t in await my_tickets(api, buyer))
    one = await refund(api, owner, order["id"], [first])
    assert one.status_code == 200, one.text
    assert one.json()["order"]["status"] == "ORDER_STATUS_PARTIALLY_REFUNDED"
    assert one.json()["order"]["refunded_minor"] == "50000"
    statuses = {t["id"]: t["status"] for t in await my_tickets(api, buyer)}
    assert statuses == {first: "TICKET_STATUS_VOID", second: "TICKET_STATUS_VALID"}
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [20_000]


async def test_only_the_owner_or_a_platform_admin_may_refund(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, buyer, stranger, editor, viewer = [await create_user(db) for _ in range(5)]
    event, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=5)
    for who, role in ((editor, "EVENT_ROLE_EDITOR"), (viewer, "EVENT_ROLE_VIEWER")):
        granted = await api.post(
            f"/api/events/{event['id']}/permissions", json={"user_id": str(who.id), "role": role}, headers=owner.headers
        )
        assert granted.status_code == 200, granted.text
    order = (await reserve(api, buyer, ticket_type["id"], quantity=2)).json()
    await checkout(api, buyer, order["id"])

    assert (await refund(api, buyer, order["id"])).status_code == 403
    assert (await refund(api, editor, order["id"])).status_code == 403
    # Viewers and strangers cannot see orders at all.
    assert (await refund(api, viewer, order["id"])).status_code == 404
    assert (await refund(api, stranger, order["id"])).status_code == 404
    assert (await api.post(f"/api/orders/{order['id']}:refund", json={})).status_code == 401
    assert {t["status"] for t in await my_tickets(api, buyer)} == {"TICKET_STATUS_VALID"}

    by_admin = await refund(api, admin, order["id"])
    assert by_admin.status_code == 200, by_admin.text
    assert by_admin.json()["order"]["status"] == "ORDER_STATUS_REFUNDED"


async def test_refunds_of_the_same_tickets_at_once_refund_them_once(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=10_000, inventory=5)
    order = await paid_at_stripe(api, stack, buyer, ticket_type["id"], quantity=3)
    ticket = sorted(t["id"] for t in await my_tickets(api, buyer))[0]

    answers = await asyncio.gather(*(refund(api, owner, order["id"], [ticket]) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400, 400], [a.text for a in answers]
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [10_000]
    assert (await order_row(db, order["id"]))["refunded_minor"] == 10_000

    wholes = await asyncio.gather(*(refund(api, owner, order["id"]) for _ in range(5)))
    assert sorted(a.status_code for a in wholes) == [200, 400, 400, 400, 400], [a.text for a in wholes]
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [10_000, 20_000]
    assert (await order_row(db, order["id"]))["refunded_minor"] == 30_000


# The race, on a scratch database of each kind: refund_tickets as migrated, and without the order's lock.
ORDER_LOCK = "from public.orders where id = p_order_id for update;"
CHOSEN = "and (cardinality(p_ticket_ids) = 0 or id = any (p_ticket_ids));"


async def _refunds_of_one_ticket(database_url: str, definition: str) -> int:
    """Refund the same ticket of a paid order from 10 connections at once; answer how many refunds."""
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(definition)
        buyer = uuid.uuid4()
        await admin.execute("insert into auth.users (id) values ($1)", buyer)
        event_id = await admin.fetchval(
            "insert into public.events (created_by, title, starts_at, ends_at, timezone, status) "
            "values ($1, 'race', now() + interval '1 day', now() + interval '2 days', 'UTC', 'published') "
            "returning id",
            buyer,
        )
        type_id = await admin.fetchval(
            "insert into public.ticket_types (event_id, name, currency, inventory, price_minor) "
            "values ($1, 'GA', 'THB', 10, 100) returning id",
            event_id,
        )
        order_id = await admin.fetchval(
            "select localplus_private.reserve_order($1, $2, $3::jsonb, interval '10 minutes')",
            buyer,
            str(uuid.uuid4()),
            f'[{{"ticket_type_id": "{type_id}", "quantity": 3}}]',
        )
        tickets = [uuid.uuid4() for _ in range(3)]
        paid = await admin.fetchval(
            "select localplus_private.pay_order($1, $2, $3, $4)",
            order_id,
            tickets,
            [str(t) for t in tickets],
            f"LP-{uuid.uuid4().hex[:8]}",
        )
        assert paid == "paid"
        pool = await asyncpg.create_pool(database_url, min_size=10, max_size=10)
        assert pool is not None
        try:
            await asyncio.gather(
                *(
                    pool.fetchval(
                        "select localplus_private.refund_tickets($1, $2, 'race', null, false)", order_id, tickets[:1]
                    )
                    for _ in range(10)
                ),
                return_exceptions=True,
            )
        finally:
            await pool.close()
        refunds: int = await admin.fetchval("select count(*) from public.refunds where order_id = $1", order_id)
        return refunds
    finally:
        await admin.close()


@pytest.mark.parametrize("server", ["embedded", "supabase15"], indirect=True)
async def test_refunding_race_exists_without_the_order_lock_and_the_lock_closes_it(server: Server) -> None:
    scratch = f"refund_race_{uuid.uuid4().hex[:8]}"
    url = await server.create_database(scratch)
    try:
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            real = await conn.fetchval(
                "select pg_get_functiondef($1::regprocedure)",
                "localplus_private.refund_tickets(uuid, uuid[], text, uuid, boolean)",
            )
        finally:
            await conn.close()
        assert ORDER_LOCK in real and CHOSEN in real
        # Widen the window between choosing the tickets and voiding them, as a busy server would.
        widened = real.replace(CHOSEN, CHOSEN + "\n  perform pg_sleep(0.05);")
        unlocked = widened.replace(ORDER_LOCK, "from public.orders where id = p_order_id;")

        assert await _refunds_of_one_ticket(url, unlocked) > 1, "the race did not show: this test could not catch it"
        assert await _refunds_of_one_ticket(url, widened) == 1
    finally:
        await server.drop_database(scratch)


async def test_refunded_tickets_no_longer_count_against_the_buyers_limit(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """A buyer who bought 4 of a 4-per-buyer type and had 2 refunded holds 2, but every ticket of the
    partially refunded order still counted: asking for 1 more was a 400 LIMIT_EXCEEDED. Now only the
    tickets they still hold count (a wholly refunded order never did)."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=10, max_per_order=4)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=4)).json()
    assert (await checkout(api, buyer, order["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"
    first, second, *_ = sorted(t["id"] for t in await my_tickets(api, buyer))
    refunded = await refund(api, owner, order["id"], [first, second])
    assert refunded.json()["order"]["status"] == "ORDER_STATUS_PARTIALLY_REFUNDED", refunded.text
    again = await reserve(api, buyer, ticket_type["id"], quantity=2)
    assert again.status_code == 200, again.text
    over = await reserve(api, buyer, ticket_type["id"], quantity=1)
    assert over.status_code == 400 and over.json()["details"][0]["reason"] == "LIMIT_EXCEEDED", over.text
