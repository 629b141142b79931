"""The sales dashboard (`GET /api/events/{id}/sales`): its figures after a mix of paid, partly
refunded, expired, held, free and refunded-before-paid orders, days in the event's time zone; and
who may read it (the event's viewers and up, its business's partners; nobody else)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx

from tests.stripe_support import (
    awaiting_payment,
    charge,
    deliver,
    expire_hold,
    order_tickets,
    payment_intent,
    stripe_event,
)
from tests.support import User, create_event, create_user
from tests.ticketing_support import checkout, event_with_tickets, my_tickets, reserve

BANGKOK = ZoneInfo("Asia/Bangkok")


async def paid(api: httpx.AsyncClient, buyer: User, ticket_type_id: str, quantity: int) -> dict[str, Any]:
    order = await awaiting_payment(api, buyer, ticket_type_id, quantity=quantity)
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(order)))).status_code == 200
    return order


async def grant(api: httpx.AsyncClient, owner: User, event_id: str, who: User, role: str) -> None:
    granted = await api.post(
        f"/api/events/{event_id}/permissions", json={"user_id": str(who.id), "role": role}, headers=owner.headers
    )
    assert granted.status_code == 200, granted.text


async def sales_of(api: httpx.AsyncClient, event_id: str, who: User | None) -> httpx.Response:
    return await api.get(f"/api/events/{event_id}/sales", headers=who.headers if who else {})


async def test_the_figures_of_a_mix_of_orders(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, viewer = await create_user(db), await create_user(db)
    buyers = [await create_user(db) for _ in range(6)]
    event, general = await event_with_tickets(api, owner, price_minor=50_000, inventory=10)
    free = await api.post(
        f"/api/events/{event['id']}/ticket-types",
        json={"name": "Guest list", "currency": "THB", "inventory": 5, "price_minor": 0, "sort_order": 1},
        headers=owner.headers,
    )
    assert free.status_code == 200, free.text
    await grant(api, owner, event["id"], viewer, "EVENT_ROLE_VIEWER")

    early = await paid(api, buyers[0], general["id"], 2)
    partly = await paid(api, buyers[1], general["id"], 3)
    refunded_ticket = (await order_tickets(db, partly["id"]))[0]["id"]
    one_back = await api.post(
        f"/api/orders/{partly['id']}:refund", json={"ticket_ids": [str(refunded_ticket)]}, headers=owner.headers
    )
    assert one_back.status_code == 200, one_back.text
    lapsed = (await reserve(api, buyers[2], general["id"])).json()
    await expire_hold(db, lapsed["id"])
    assert (await reserve(api, buyers[3], general["id"])).status_code == 200  # held now
    guests = (await reserve(api, buyers[4], free.json()["id"], quantity=2)).json()
    assert (await checkout(api, buyers[4], guests["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"
    never = await awaiting_payment(api, buyers[5], general["id"])
    total = int(never["total_minor"])
    assert (await deliver(api, stripe_event("charge.refunded", charge(never, total)))).status_code == 200
    # Someone at the door; and history: paid at 20:00 UTC (the next day in Bangkok), refunded another day.
    await db.execute(
        "update public.tickets set status = 'checked_in', checked_in_at = now() where id = "
        "(select id from public.tickets where order_id = $1 limit 1)",
        uuid.UUID(guests["id"]),
    )
    await db.execute("update public.orders set paid_at = '2025-03-01T20:00:00Z' where id = $1", uuid.UUID(early["id"]))
    await db.execute(
        "update public.refunds set created_at = '2025-03-03T18:00:00Z' where order_id = $1", uuid.UUID(partly["id"])
    )

    answer = await sales_of(api, event["id"], viewer)
    assert answer.status_code == 200, answer.text
    sales = answer.json()
    today = datetime.now(BANGKOK).date().isoformat()
    assert {k: v for k, v in sales.items() if k not in ("ticket_types", "days")} == {
        "event_id": event["id"],
        "currency": "THB",
        "gross_minor": "250000",
        "refunded_minor": "50000",
        "net_minor": "200000",
        "tickets_sold": 6,
        "tickets_available": 8,
        "tickets_held": 1,
        "tickets_blocked": 0,
        "checked_in": 1,
        "orders_created": 6,
        "orders_paid": 3,
        "conversion_rate": 0.5,
    }
    assert sales["ticket_types"] == [
        {
            "ticket_type_id": general["id"],
            "name": "General admission",
            "price_minor": "50000",
            "sold": 4,
            "refunded": 1,
            "held": 1,
            "blocked": 0,
            "available": 5,
            "gross_minor": "250000",
            "refunded_minor": "50000",
            "net_minor": "200000",
            "checked_in": 0,
        },
        {
            "ticket_type_id": free.json()["id"],
            "name": "Guest list",
            "price_minor": "0",
            "sold": 2,
            "refunded": 0,
            "held": 0,
            "blocked": 0,
            "available": 3,
            "gross_minor": "0",
            "refunded_minor": "0",
            "net_minor": "0",
            "checked_in": 1,
        },
    ]
    assert sales["days"] == [
        {"date": "2025-03-02", "orders": 1, "tickets": 2, "gross_minor": "100000", "refunded_minor": "0",
         "net_minor": "100000"},
        {"date": "2025-03-04", "orders": 0, "tickets": 0, "gross_minor": "0", "refunded_minor": "50000",
         "net_minor": "-50000"},
        {"date": today, "orders": 2, "tickets": 5, "gross_minor": "150000", "refunded_minor": "0",
         "net_minor": "150000"},
    ]  # fmt: skip
    # The owner sees the same figures.
    assert (await sales_of(api, event["id"], owner)).json() == sales


async def test_an_event_without_orders_has_no_conversion_rate(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner = await create_user(db)
    event, ticket_type = await event_with_tickets(api, owner, inventory=7)
    sales = (await sales_of(api, event["id"], owner)).json()
    assert "conversion_rate" not in sales and sales["orders_created"] == 0 and sales["days"] == []
    assert sales["tickets_available"] == 7 and sales["ticket_types"][0]["ticket_type_id"] == ticket_type["id"]


async def test_viewers_and_up_see_the_figures_others_do_not(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, editor, viewer, buyer, stranger = [await create_user(db) for _ in range(5)]
    event, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=5)
    await grant(api, owner, event["id"], editor, "EVENT_ROLE_EDITOR")
    await grant(api, owner, event["id"], viewer, "EVENT_ROLE_VIEWER")
    order = (await reserve(api, buyer, ticket_type["id"])).json()
    await checkout(api, buyer, order["id"])
    for who in (owner, editor, viewer):
        assert (await sales_of(api, event["id"], who)).status_code == 200
    # A published event is visible to everyone, its sales are not: 403; a draft is not visible: 404.
    for who in (buyer, stranger):
        refused = await sales_of(api, event["id"], who)
        assert refused.status_code == 403, refused.text
    assert (await sales_of(api, event["id"], None)).status_code == 401
    draft = await create_event(api, owner)
    assert (await sales_of(api, draft["id"], stranger)).status_code == 404
    assert (await sales_of(api, draft["id"], owner)).status_code == 200
    assert (await sales_of(api, str(uuid.uuid4()), owner)).status_code == 404
    assert (await sales_of(api, "not-a-uuid", owner)).status_code == 400


async def test_partners_see_their_business_s_events_only(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    boss, partner, other_partner = [await create_user(db) for _ in range(3)]
    ours = await db.fetchval("insert into public.businesses (name) values ('Ours') returning id")
    theirs = await db.fetchval("insert into public.businesses (name) values ('Theirs') returning id")
    await db.executemany(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, $3)",
        [(ours, boss.id, "owner"), (ours, partner.id, "viewer"), (theirs, other_partner.id, "owner")],
    )
    event = await create_event(api, boss, business_id=str(ours), status="EVENT_STATUS_PUBLISHED")
    draft = await create_event(api, boss, business_id=str(ours))
    for listed in (event, draft):
        assert (await sales_of(api, listed["id"], partner)).status_code == 200
    assert (await sales_of(api, event["id"], other_partner)).status_code == 403
    assert (await sales_of(api, draft["id"], other_partner)).status_code == 404


async def test_a_ticket_refunded_after_it_was_scanned_still_counts_as_checked_in(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """`checked_in` is the tickets scanned at the door: someone let in and refunded afterwards (a goodwill
    refund) was still there. They dropped out of the figure when their ticket was voided."""
    owner, buyer = await create_user(db), await create_user(db)
    event, general = await event_with_tickets(api, owner, price_minor=50_000, inventory=10)
    order = await paid(api, buyer, general["id"], 2)
    scanned, _ = [t for t in await my_tickets(api, buyer) if t["order_id"] == order["id"]]
    admitted = await api.post(
        "/api/check-ins", json={"event_id": event["id"], "code": scanned["code"]}, headers=owner.headers
    )
    assert admitted.json()["result"] == "CHECK_IN_RESULT_ADMITTED", admitted.text
    back = await api.post(
        f"/api/orders/{order['id']}:refund", json={"ticket_ids": [scanned["id"]]}, headers=owner.headers
    )
    assert back.status_code == 200, back.text

    sales = (await sales_of(api, event["id"], owner)).json()

    assert (sales["tickets_sold"], sales["checked_in"]) == (1, 1), sales
    assert (sales["ticket_types"][0]["refunded"], sales["ticket_types"][0]["checked_in"]) == (1, 1), sales
