"""Orders through the JSON gateway: reserve, pay through localstripe (its webhook reaches the
service), get the tickets; free orders; idempotent reservations; holds that expire; cancelling."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from localplus_dev.stack import Stack
from tests.sql_callers import as_caller
from tests.stripe_support import localstripe
from tests.support import User, create_user
from tests.ticketing_support import (
    checkout,
    event_with_tickets,
    my_tickets,
    pay_at_stripe,
    reserve,
    wait_for_status,
)


async def test_reserve_pay_at_stripe_and_get_tickets(api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, price_minor=75_000, inventory=10)

    reserved = await reserve(api, buyer, ticket_type["id"], quantity=2)
    assert reserved.status_code == 200, reserved.text
    order = reserved.json()
    assert order["status"] == "ORDER_STATUS_RESERVED"
    assert order["total_minor"] == "150000" and order["currency"] == "THB"
    assert order["event_id"] == event["id"] and order["buyer_id"] == str(buyer.id)
    types = await api.get(f"/api/events/{event['id']}/ticket-types")
    assert types.json()["ticket_types"][0]["available"] == 8  # held, not sold

    started = await checkout(api, buyer, order["id"], mode="CHECKOUT_MODE_PAYMENT_INTENT")
    assert started.status_code == 200, started.text
    awaiting = started.json()["order"]
    assert awaiting["status"] == "ORDER_STATUS_AWAITING_PAYMENT"
    assert awaiting["payment_intent_id"].startswith("pi_") and awaiting["client_secret"]

    await pay_at_stripe(stack, awaiting["payment_intent_id"])
    paid = await wait_for_status(api, buyer, order["id"], "ORDER_STATUS_PAID")
    assert paid["confirmation_code"].startswith("LP-") and paid["paid_at"]

    tickets = await my_tickets(api, buyer)
    assert len(tickets) == 2
    assert {t["order_id"] for t in tickets} == {order["id"]}
    assert all(t["status"] == "TICKET_STATUS_VALID" and t["code"].startswith("LP1.") for t in tickets)
    types = await api.get(f"/api/events/{event['id']}/ticket-types")
    assert types.json()["ticket_types"][0]["sold"] == 2
    assert types.json()["ticket_types"][0]["available"] == 8


async def test_checkouts_of_one_order_at_once_answer_one_payment_and_cancel_the_rest(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    """Each checkout asks Stripe for a PaymentIntent; where Stripe does not answer one idempotency key
    with one PaymentIntent (localstripe), the last to write one on the order used to win, and the buyer
    could pay each of them (refunded later, but charged first). Now the first recorded is the order's,
    every checkout answers it, and the others are cancelled."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=50_000, inventory=5)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=2)).json()
    started = await asyncio.gather(*(checkout(api, buyer, order["id"]) for _ in range(6)))
    assert [r.status_code for r in started] == [200] * 6, [r.text for r in started]
    (intent_id,) = {r.json()["order"]["payment_intent_id"] for r in started}
    async with localstripe(stack) as stripe:
        listed = await stripe.get("/v1/payment_intents", params={"limit": 100})
        assert listed.status_code == 200, listed.text
    of_the_order = {i["id"]: i["status"] for i in listed.json()["data"] if i["metadata"].get("order_id") == order["id"]}
    assert of_the_order.pop(intent_id) != "canceled"
    assert set(of_the_order.values()) <= {"canceled"}, of_the_order
    await pay_at_stripe(stack, intent_id)
    await wait_for_status(api, buyer, order["id"], "ORDER_STATUS_PAID")


async def test_a_free_order_is_paid_at_checkout(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=5)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=3)).json()
    paid = (await checkout(api, buyer, order["id"])).json()["order"]
    assert paid["status"] == "ORDER_STATUS_PAID" and not paid["payment_intent_id"]
    assert len(await my_tickets(api, buyer)) == 3
    # Checking out again changes nothing, and reads what the payment answered.
    again = (await checkout(api, buyer, order["id"])).json()["order"]
    assert again == paid and paid["confirmation_code"] and paid["paid_at"]
    assert len(await my_tickets(api, buyer)) == 3


async def test_the_same_request_id_reserves_once(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, inventory=5)
    request_id = str(uuid.uuid4())
    first = await reserve(api, buyer, ticket_type["id"], quantity=2, request_id=request_id)
    second = await reserve(api, buyer, ticket_type["id"], quantity=2, request_id=request_id)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    # The same request_id for other items is another request: a 409, not the first order as if it were.
    other = await reserve(api, buyer, ticket_type["id"], quantity=3, request_id=request_id)
    assert other.status_code == 409 and other.json()["details"][0]["reason"] == "REQUEST_ID_REUSED", other.text
    types = await api.get(f"/api/events/{event['id']}/ticket-types")
    assert types.json()["ticket_types"][0]["available"] == 3


async def test_sold_out_is_a_409_with_its_reason(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, first, second = await create_user(db), await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=2)
    assert (await reserve(api, first, ticket_type["id"], quantity=2)).status_code == 200
    refused = await reserve(api, second, ticket_type["id"])
    assert refused.status_code == 409, refused.text
    assert refused.json()["details"][0]["reason"] == "SOLD_OUT"


async def test_an_expired_hold_frees_its_tickets_at_once(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """Before any sweeper runs: availability never counts an expired hold, and its checkout is HOLD_EXPIRED."""
    owner, late, next_buyer = await create_user(db), await create_user(db), await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, inventory=1)
    order = (await reserve(api, late, ticket_type["id"])).json()
    await db.execute(
        "update public.ticket_holds set expires_at = now() - interval '1 second' where order_id = $1",
        uuid.UUID(order["id"]),
    )
    await db.execute(
        "update public.orders set expires_at = now() - interval '1 second' where id = $1", uuid.UUID(order["id"])
    )
    types = await api.get(f"/api/events/{event['id']}/ticket-types")
    assert types.json()["ticket_types"][0]["available"] == 1
    expired = await checkout(api, late, order["id"])
    assert expired.status_code == 409 and expired.json()["details"][0]["reason"] == "HOLD_EXPIRED"
    assert (await api.get(f"/api/orders/{order['id']}", headers=late.headers)).json()["status"] == (
        "ORDER_STATUS_EXPIRED"
    )
    assert (await reserve(api, next_buyer, ticket_type["id"])).status_code == 200


async def test_cancelling_releases_the_hold(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, buyer, other = await create_user(db), await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=1)
    order = (await reserve(api, buyer, ticket_type["id"])).json()
    assert (await reserve(api, other, ticket_type["id"])).status_code == 409
    not_theirs = await api.post(f"/api/orders/{order['id']}:cancel", json={}, headers=other.headers)
    assert not_theirs.status_code == 404
    cancelled = await api.post(f"/api/orders/{order['id']}:cancel", json={}, headers=buyer.headers)
    assert cancelled.json()["order"]["status"] == "ORDER_STATUS_CANCELLED"
    assert (await reserve(api, other, ticket_type["id"])).status_code == 200


async def test_buyers_see_only_their_own_orders(api: httpx.AsyncClient, db: asyncpg.Pool, user: User) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = (await reserve(api, buyer, ticket_type["id"])).json()
    assert (await api.get(f"/api/orders/{order['id']}", headers=user.headers)).status_code == 404
    assert (await api.get(f"/api/orders/{order['id']}")).status_code == 401
    mine = (await api.get("/api/me/orders", headers=buyer.headers)).json()["orders"]
    assert [o["id"] for o in mine] == [order["id"]]
    # The event's owner sees it (for refunds and the door), without the buyer's payment secrets.
    seen = (await api.get(f"/api/orders/{order['id']}", headers=owner.headers)).json()
    assert seen["id"] == order["id"] and seen["client_secret"] == ""


async def test_editors_change_and_delete_ticket_types_but_sold_is_the_servers(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, buyer, stranger = await create_user(db), await create_user(db), await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, inventory=5)
    path = f"/api/ticket-types/{ticket_type['id']}"

    assert (
        await api.patch(path, params={"update_mask": "name"}, json={"name": "x"}, headers=stranger.headers)
    ).status_code == 403
    assert (await api.delete(path, headers=stranger.headers)).status_code == 403
    renamed = await api.patch(
        path, params={"update_mask": "name,hidden"}, json={"name": "Early bird", "hidden": True}, headers=owner.headers
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["hidden"]) == ("Early bird", True)
    # Hidden types are the editors' alone: others do not see them at all.
    assert (await api.get(f"/api/events/{event['id']}/ticket-types")).json()["ticket_types"] == []
    for server_owned in ("sold", "available"):
        refused = await api.patch(
            path, params={"update_mask": server_owned}, json={server_owned: 0}, headers=owner.headers
        )
        assert refused.status_code == 400, refused.text

    await api.patch(path, params={"update_mask": "hidden"}, json={"hidden": False}, headers=owner.headers)
    assert (await reserve(api, buyer, ticket_type["id"], quantity=3)).status_code == 200
    shrunk = await api.patch(path, params={"update_mask": "inventory"}, json={"inventory": 2}, headers=owner.headers)
    assert shrunk.status_code == 400, shrunk.text
    assert [v["field"] for d in shrunk.json()["details"] for v in d.get("field_violations", [])] == [
        "ticket_type.inventory"
    ]
    ordered = await api.delete(path, headers=owner.headers)
    assert ordered.status_code == 400 and ordered.json()["details"][0]["reason"] == "HAS_ORDERS", ordered.text

    _, unsold = await event_with_tickets(api, owner, inventory=5)
    assert (await api.delete(f"/api/ticket-types/{unsold['id']}", headers=owner.headers)).status_code == 200
    assert (await api.delete(f"/api/ticket-types/{unsold['id']}", headers=owner.headers)).status_code == 404


async def test_a_currency_code_in_lower_case_is_the_same_currency(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """Stripe writes currency codes in lower case; "thb" is THB here too, never a currency of its own."""
    owner = await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, inventory=5)
    created = await api.post(
        f"/api/events/{event['id']}/ticket-types",
        json={"name": "Door", "price_minor": 500, "currency": "thb", "inventory": 5},
        headers=owner.headers,
    )
    assert created.status_code == 200, created.text
    assert created.json()["currency"] == "THB"
    changed = await api.patch(
        f"/api/ticket-types/{ticket_type['id']}",
        params={"update_mask": "currency"},
        json={"currency": " usd "},
        headers=owner.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["currency"] == "USD"


async def test_what_a_ticket_type_sold_as_stays_once_ordered(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """Seat claims are keyed by a type's occurrence: a sold type moved to another occurrence put its
    sold seats on sale again, sold twice. Once ordered, a type keeps its occurrence, currency and seat
    category, through the API (a 400 naming the field) and in SQL as its editor (the table's trigger)."""
    owner, buyer = await create_user(db), await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, inventory=5)
    path = f"/api/ticket-types/{ticket_type['id']}"
    # A one-off event's one occurrence has the event's id.
    moved = await api.patch(
        path, params={"update_mask": "occurrence_id"}, json={"occurrence_id": event["id"]}, headers=owner.headers
    )
    assert moved.status_code == 200, moved.text
    assert (await reserve(api, buyer, ticket_type["id"])).status_code == 200
    for field, value in (("occurrence_id", ""), ("currency", "USD")):
        refused = await api.patch(path, params={"update_mask": field}, json={field: value}, headers=owner.headers)
        assert refused.status_code == 400, refused.text
        assert [v["field"] for d in refused.json()["details"] for v in d.get("field_violations", [])] == [
            f"ticket_type.{field}"
        ]
    for assignment in ("occurrence_id = null", "currency = 'USD'"):
        async with as_caller(db, owner.id) as conn:
            with pytest.raises(asyncpg.RaiseError, match="were ordered"):
                await conn.execute(
                    f"update public.ticket_types set {assignment} where id = $1", uuid.UUID(ticket_type["id"])
                )
    renamed = await api.patch(path, params={"update_mask": "name"}, json={"name": "Late bird"}, headers=owner.headers)
    assert renamed.status_code == 200 and renamed.json()["occurrence_id"] == event["id"], renamed.text


async def test_asking_for_more_than_remain_says_how_many_are_left(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """Inventory 3, 2 sold, asking 2 used to answer "General admission is sold out"; the buyer could
    not tell that one is left. Still a 409 SOLD_OUT, now saying how many remain (and in ErrorInfo
    metadata `available`), whether the others are sold or only held."""
    owner, first, second, third = [await create_user(db) for _ in range(4)]
    _, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=3)
    order = (await reserve(api, first, ticket_type["id"], quantity=2)).json()
    assert (await checkout(api, first, order["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"

    refused = await reserve(api, second, ticket_type["id"], quantity=2)
    assert refused.status_code == 409, refused.text
    info = refused.json()["details"][0]
    assert info["reason"] == "SOLD_OUT"
    assert refused.json()["message"] == "only 1 General admission ticket is left", refused.text
    assert info["metadata"]["available"] == "1" and info["metadata"]["ticket_type_id"] == ticket_type["id"]

    # Held, not sold: the same answer, counted exactly under the buckets' locks.
    assert (await reserve(api, third, ticket_type["id"], quantity=1)).status_code == 200
    _, held_type = await event_with_tickets(api, owner, inventory=5)
    assert (await reserve(api, first, held_type["id"], quantity=3)).status_code == 200
    refused = await reserve(api, second, held_type["id"], quantity=3)
    assert refused.status_code == 409 and refused.json()["details"][0]["reason"] == "SOLD_OUT", refused.text
    assert refused.json()["message"] == "only 2 General admission tickets are left", refused.text
    assert refused.json()["details"][0]["metadata"]["available"] == "2"

    # None left: sold out, and 0 available.
    refused = await reserve(api, second, ticket_type["id"], quantity=1)
    assert refused.status_code == 409, refused.text
    assert refused.json()["message"] == "General admission is sold out"
    assert refused.json()["details"][0]["metadata"]["available"] == "0"
    assert (await api.get(f"/api/events/{order['event_id']}/ticket-types")).json()["ticket_types"][0]["available"] == 0


async def test_a_buyer_over_the_limit_hears_how_many_more_they_may_take(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """With 3 of a 4-per-buyer type held, asking for 2 more said "between 1 and 4 tickets of General
    admission per buyer", as if 2 were not within it: the buyer could not tell that 1 more would do.
    Still a 400 LIMIT_EXCEEDED, now saying how many they hold and may still take (ErrorInfo metadata
    `remaining`, `max_per_order`)."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=20, max_per_order=4)
    refused = await reserve(api, buyer, ticket_type["id"], quantity=5)
    assert refused.status_code == 400 and refused.json()["details"][0]["reason"] == "LIMIT_EXCEEDED", refused.text
    assert refused.json()["message"] == "between 1 and 4 tickets of General admission per buyer"
    assert (await reserve(api, buyer, ticket_type["id"], quantity=3)).status_code == 200
    refused = await reserve(api, buyer, ticket_type["id"], quantity=2)
    assert refused.status_code == 400, refused.text
    info = refused.json()["details"][0]
    assert info["reason"] == "LIMIT_EXCEEDED"
    assert refused.json()["message"] == (
        "you have 3 General admission tickets already: 1 more at most (4 per buyer)"
    ), refused.text
    assert (info["metadata"]["remaining"], info["metadata"]["max_per_order"]) == ("1", "4")
    assert (await reserve(api, buyer, ticket_type["id"], quantity=1)).status_code == 200
    refused = await reserve(api, buyer, ticket_type["id"], quantity=1)
    assert refused.json()["message"] == "you have 4 General admission tickets already, the most per buyer"
    assert refused.json()["details"][0]["metadata"]["remaining"] == "0"
