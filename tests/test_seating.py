"""Assigned seating through the gateway: plans per venue, an event's seats and their status, orders of
chosen seats paid through localstripe, seated e-tickets, blocked seats, holds that expire, cancel and
refund freeing seats, plan changes after sales, and best-available on small plans with known answers."""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import subprocess
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from localplus_dev.stack import Stack
from tests.seating_support import (
    add_plan,
    add_venue,
    labels,
    order_best,
    order_seats,
    reason,
    row_of,
    seated_event,
    seats_of,
    statuses,
)
from tests.support import User, create_event, create_user
from tests.test_openapi import CHROMIUM_FLAGS
from tests.ticketing_support import checkout, my_tickets, pay_at_stripe, wait_for_status

TWO_ZONES = [
    {"name": "Stalls", "rows": [row_of("A", 4, "premium"), row_of("B", 4, "standard", y=1.0)]},
    {"name": "Balcony", "rows": [row_of("C", 3, "standard", y=3.0)]},
]


async def test_a_plan_belongs_to_a_venue_and_its_managers_change_it(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    venue_id = await add_venue(api, admin)
    stranger = await create_user(db)
    assert (await add_plan(api, stranger, venue_id, TWO_ZONES)).status_code == 403
    assert (await add_plan(api, admin, venue_id, [])).status_code == 200
    twice = [{"name": "Stalls", "rows": [row_of("A", 2, "x"), row_of("A", 2, "x")]}]
    bad = await add_plan(api, admin, venue_id, twice)
    assert bad.status_code == 400 and "named twice" in bad.text
    general = [{"name": "Standing", "category": "standing", "capacity": 200}]
    created = await add_plan(api, admin, venue_id, TWO_ZONES, general_admission=general)
    assert created.status_code == 200, created.text
    plan = created.json()
    assert [z["name"] for z in plan["zones"]] == ["Stalls", "Balcony"]
    assert [len(r["seats"]) for z in plan["zones"] for r in z["rows"]] == [4, 4, 3]
    assert plan["general_admission"] == general
    listed = (await api.get(f"/api/venues/{venue_id}/seating-plans")).json()["seating_plans"]
    assert [p["name"] for p in listed] == ["Main hall", "Main hall"]
    url = f"/api/seating-plans/{plan['id']}"
    renamed = await api.patch(url, params={"update_mask": "name"}, json={"name": "Big hall"}, headers=admin.headers)
    assert renamed.status_code == 200, renamed.text
    got = (await api.get(f"/api/seating-plans/{plan['id']}")).json()
    assert got["name"] == "Big hall" and got["zones"] == plan["zones"]


async def test_a_venues_plans_are_listed_in_pages_oldest_first(api: httpx.AsyncClient, admin: User) -> None:
    venue_id = await add_venue(api, admin)
    names = [f"Hall {n}" for n in range(5)]
    for name in names:
        assert (await add_plan(api, admin, venue_id, TWO_ZONES, name=name)).status_code == 200
    seen: list[str] = []
    token = ""
    while True:
        response = await api.get(f"/api/venues/{venue_id}/seating-plans", params={"page_size": 2, "page_token": token})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["seating_plans"]) <= 2
        seen += [plan["name"] for plan in page["seating_plans"]]
        token = page.get("next_page_token", "")
        if not token:
            break
    assert seen == names
    for bad in ({"page_token": "nonsense"}, {"page_size": 101}, {"page_size": -1}):
        refused = await api.get(f"/api/venues/{venue_id}/seating-plans", params=bad)
        assert refused.status_code == 400, (bad, refused.text)


async def test_chosen_seats_paid_at_stripe_make_seated_tickets(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    general = [{"name": "Standing", "category": "standing", "capacity": 50}]
    seated = await seated_event(
        api, admin, owner, TWO_ZONES, prices={"premium": 90_000, "standard": 40_000}, general_admission=general
    )
    event_id = seated.event["id"]
    assert seated.event["seating_plan_id"] == seated.plan["id"]
    assert {c: t["inventory"] for c, t in seated.types.items()} == {"premium": 4, "standard": 7, "standing": 50}
    assert set((await statuses(api, event_id)).values()) == {"AVAILABLE"}
    seat = seated.seats["Stalls A-2"]
    assert seat["category"] == "premium" and seat["ticket_type_id"] == seated.types["premium"]["id"]
    assert "holder" not in str(seat) and "order" not in str(seat)

    reserved = await order_seats(api, buyer, seated.ids("Stalls A-2", "Balcony C-1"))
    assert reserved.status_code == 200, reserved.text
    order = reserved.json()
    assert labels(order) == ["Stalls A-2", "Balcony C-1"] and order["total_minor"] == "130000"
    assert {(i["ticket_type_id"], i["quantity"]) for i in order["items"]} == {
        (seated.types["premium"]["id"], 1),
        (seated.types["standard"]["id"], 1),
    }
    now = await statuses(api, event_id)
    assert now["Stalls A-2"] == now["Balcony C-1"] == "HELD" and now["Stalls A-1"] == "AVAILABLE"
    # Ordering a seated type by count is refused: its tickets are seats.
    by_count = {"request_id": "count", "items": [{"ticket_type_id": seated.types["premium"]["id"], "quantity": 1}]}
    refused = await api.post("/api/orders", json=by_count, headers=buyer.headers)
    assert refused.status_code == 400 and reason(refused) == "SEATS_REQUIRED"

    started = (await checkout(api, buyer, order["id"], mode="CHECKOUT_MODE_PAYMENT_INTENT")).json()["order"]
    await pay_at_stripe(stack, started["payment_intent_id"])
    await wait_for_status(api, buyer, order["id"], "ORDER_STATUS_PAID")
    now = await statuses(api, event_id)
    assert now["Stalls A-2"] == now["Balcony C-1"] == "SOLD"

    tickets = await my_tickets(api, buyer)
    assert sorted((t["seat"]["zone"], t["seat"]["label"]) for t in tickets) == [("Balcony", "C-1"), ("Stalls", "A-2")]
    premium = next(t for t in tickets if t["seat"]["label"] == "A-2")
    assert premium["seat"] == {"zone": "Stalls", "row": "A", "number": "2", "label": "A-2"}
    assert premium["ticket_type_id"] == seated.types["premium"]["id"]
    qr = await api.get(f"/api/tickets/{premium['id']}/qr.svg", headers=buyer.headers)
    assert qr.status_code == 200 and "Stalls · Row A · Seat 2" in qr.text
    door = await api.get(f"/api/events/{event_id}/check-in-list", headers=owner.headers)
    entries = {e["ticket_id"]: e for e in door.json()["tickets"]}
    assert entries[premium["id"]]["seat"]["label"] == "A-2"
    scanned = await api.post(
        "/api/check-ins", json={"event_id": event_id, "code": premium["code"]}, headers=owner.headers
    )
    assert scanned.json()["result"] == "CHECK_IN_RESULT_ADMITTED" and scanned.json()["ticket"]["seat"]["label"] == "A-2"


async def test_a_taken_seat_is_a_409_naming_it_and_nothing_is_held(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    owner, first, second = await create_user(db), await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES)
    assert (await order_seats(api, first, seated.ids("Stalls B-2", "Stalls B-3"))).status_code == 200
    clash = await order_seats(api, second, seated.ids("Stalls B-1", "Stalls B-3"))
    assert clash.status_code == 409 and reason(clash) == "SEAT_UNAVAILABLE"
    assert "Stalls B-3" in clash.json()["message"] and "B-1" not in clash.json()["message"]
    assert (await statuses(api, seated.event["id"]))["Stalls B-1"] == "AVAILABLE"  # all or none
    other = await seated_event(api, admin, owner, TWO_ZONES)
    mixed = await order_seats(api, second, [seated.ids("Stalls B-1")[0], other.ids("Stalls B-1")[0]])
    assert mixed.status_code == 400


async def test_seats_of_a_hidden_ticket_type_are_sold_only_to_whoever_sees_it(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """A hidden ticket type is its editors' alone (as for unseated ones, and best_available of it):
    naming its seats does not buy them through it."""
    owner, buyer = await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES)
    hidden = await api.patch(
        f"/api/ticket-types/{seated.types['premium']['id']}", params={"update_mask": "hidden"},
        json={"hidden": True}, headers=owner.headers,
    )  # fmt: skip
    assert hidden.status_code == 200, hidden.text
    assert (await order_best(api, buyer, seated.types["premium"]["id"], 1)).status_code == 404
    refused = await order_seats(api, buyer, seated.ids("Stalls A-1"))
    assert refused.status_code == 404, refused.text
    mixed = await order_seats(api, buyer, seated.ids("Stalls B-1", "Stalls A-2"))
    assert mixed.status_code == 404, mixed.text
    assert (await statuses(api, seated.event["id"]))["Stalls B-1"] == "AVAILABLE"
    assert (await order_seats(api, buyer, seated.ids("Stalls B-1"))).status_code == 200
    assert (await order_seats(api, owner, seated.ids("Stalls A-1"))).status_code == 200


async def test_seats_of_a_hidden_ticket_type_do_not_name_it_to_whoever_cannot_see_it(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """The seat list and map say which type sells a seat only when the caller may see that type: a
    hidden one's seats show their category and status without it (its editors still see it)."""
    owner, buyer = await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES)
    event_id, secret = seated.event["id"], seated.types["premium"]["id"]
    hidden = await api.patch(
        f"/api/ticket-types/{secret}", params={"update_mask": "hidden"}, json={"hidden": True}, headers=owner.headers
    )
    assert hidden.status_code == 200, hidden.text
    for who in ({}, buyer.headers):
        listed = await api.get(f"/api/events/{event_id}/seats", headers=who)
        assert listed.status_code == 200, listed.text
        assert secret not in listed.text
        seats = {f"{s['zone']} {s['label']}": s for s in listed.json()["seats"]}
        assert seats["Stalls A-1"]["category"] == "premium" and seats["Stalls A-1"].get("ticket_type_id", "") == ""
        assert seats["Stalls B-1"]["ticket_type_id"] == seated.types["standard"]["id"]
        svg = await api.get(f"/api/events/{event_id}/seat-map.svg", headers=who)
        assert svg.status_code == 200 and secret not in svg.text
    editors = (await api.get(f"/api/events/{event_id}/seats", headers=owner.headers)).json()["seats"]
    assert {s["ticket_type_id"] for s in editors if s["category"] == "premium"} == {secret}


async def test_an_expired_hold_frees_its_seat_at_once(api: httpx.AsyncClient, db: asyncpg.Pool, admin: User) -> None:
    owner, first, second = await create_user(db), await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES)
    order = (await order_seats(api, first, seated.ids("Stalls A-1"))).json()
    assert (await order_seats(api, second, seated.ids("Stalls A-1"))).status_code == 409
    # The hold runs out (as ten minutes passing would leave it), and no sweeper has run.
    await db.execute(
        "update public.seat_claims set during = tstzrange(lower(during) - interval '20 minutes', now())"
        " where order_id = $1",
        order["id"],
    )
    await db.execute("update public.orders set expires_at = now() where id = $1", order["id"])
    assert (await statuses(api, seated.event["id"]))["Stalls A-1"] == "AVAILABLE"
    taken = await order_seats(api, second, seated.ids("Stalls A-1"))
    assert taken.status_code == 200, taken.text
    # The first buyer paying late finds the seat gone (the payment is refunded as sold out).
    late = await checkout(api, first, order["id"])
    assert late.status_code == 409


async def test_a_seated_types_available_counts_live_holds_and_never_expired_ones(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """What a buyer is told is left of the 4 premium seats: 2 while two are held, 4 again the instant
    the hold runs out (no sweeper), 3 once one is sold."""
    owner, first, second = await create_user(db), await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES, prices={"premium": 0, "standard": 0})

    async def premium() -> dict[str, Any]:
        listed = await api.get(f"/api/events/{seated.event['id']}/ticket-types")
        assert listed.status_code == 200, listed.text
        found: dict[str, Any] = next(t for t in listed.json()["ticket_types"] if t["seat_category"] == "premium")
        return found

    assert (await premium())["available"] == 4
    order = (await order_seats(api, first, seated.ids("Stalls A-1", "Stalls A-2"))).json()
    assert (await premium())["available"] == 2
    await db.execute(
        "update public.seat_claims set during = tstzrange(lower(during) - interval '20 minutes', now())"
        " where order_id = $1",
        order["id"],
    )
    await db.execute("update public.orders set expires_at = now() where id = $1", order["id"])
    assert (await premium())["available"] == 4
    bought = (await order_seats(api, second, seated.ids("Stalls A-1"))).json()
    assert (await checkout(api, second, bought["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"
    final = await premium()
    assert final["sold"] == 1 and final["available"] == 3


async def test_blocked_seats_are_not_available_and_the_totals_still_add_up(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """Of the 7 standard seats, 2 blocked, 1 held and 1 sold leave 3 for buyers, both in the ticket
    type's `available` and in the sales figures, which count the blocked ones too: sold + held +
    available + blocked is the 7."""
    owner, first, second = await create_user(db), await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES, prices={"premium": 0, "standard": 0})
    event_id, standard = seated.event["id"], seated.types["standard"]["id"]

    async def figures() -> tuple[dict[str, Any], dict[str, Any]]:
        listed = (await api.get(f"/api/events/{event_id}/ticket-types")).json()["ticket_types"]
        sales = await api.get(f"/api/events/{event_id}/sales", headers=owner.headers)
        assert sales.status_code == 200, sales.text
        by_type = next(t for t in sales.json()["ticket_types"] if t["ticket_type_id"] == standard)
        return next(t for t in listed if t["id"] == standard), by_type

    house = {"seat_ids": seated.ids("Stalls B-3", "Stalls B-4")}
    assert (await api.post(f"/api/events/{event_id}/seats:block", json=house, headers=owner.headers)).is_success
    assert (await order_seats(api, first, seated.ids("Stalls B-1"))).status_code == 200
    bought = (await order_seats(api, second, seated.ids("Balcony C-1"))).json()
    assert (await checkout(api, second, bought["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"
    listed, sales = await figures()
    assert listed["inventory"] == 7 and listed["sold"] == 1 and listed["available"] == 3
    assert (sales["sold"], sales["held"], sales["available"], sales["blocked"]) == (1, 1, 3, 2)
    assert sales["sold"] + sales["held"] + sales["available"] + sales["blocked"] == listed["inventory"]
    event_sales = (await api.get(f"/api/events/{event_id}/sales", headers=owner.headers)).json()
    assert event_sales["tickets_blocked"] == 2
    # Unblocked, they are for sale again; a premium seat blocked takes nothing from the standard ones.
    assert (await api.post(f"/api/events/{event_id}/seats:unblock", json=house, headers=owner.headers)).is_success
    other = {"seat_ids": seated.ids("Stalls A-1")}
    assert (await api.post(f"/api/events/{event_id}/seats:block", json=other, headers=owner.headers)).is_success
    listed, sales = await figures()
    assert listed["available"] == sales["available"] == 5


async def test_cancel_and_refund_give_seats_back(api: httpx.AsyncClient, db: asyncpg.Pool, admin: User) -> None:
    owner, buyer, other = await create_user(db), await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES, prices={"premium": 0, "standard": 0})
    event_id = seated.event["id"]
    held = (await order_seats(api, buyer, seated.ids("Stalls A-1", "Stalls A-2"))).json()
    cancelled = await api.post(f"/api/orders/{held['id']}:cancel", json={}, headers=buyer.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (await statuses(api, event_id))["Stalls A-1"] == "AVAILABLE"

    bought = (await order_seats(api, buyer, seated.ids("Stalls A-1", "Stalls A-2"))).json()
    paid = (await checkout(api, buyer, bought["id"])).json()["order"]
    assert paid["status"] == "ORDER_STATUS_PAID"
    assert (await order_seats(api, other, seated.ids("Stalls A-2"))).status_code == 409
    ticket = next(t for t in await my_tickets(api, buyer) if t["seat"]["label"] == "A-2")
    refund = {"ticket_ids": [ticket["id"]], "reason": "cannot come"}
    refunded = await api.post(f"/api/orders/{bought['id']}:refund", json=refund, headers=owner.headers)
    assert refunded.status_code == 200, refunded.text
    now = await statuses(api, event_id)
    assert now["Stalls A-2"] == "AVAILABLE" and now["Stalls A-1"] == "SOLD"
    assert (await order_seats(api, other, seated.ids("Stalls A-2"))).status_code == 200


async def test_editors_block_and_unblock_seats(api: httpx.AsyncClient, db: asyncpg.Pool, admin: User) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES)
    event_id = seated.event["id"]
    house = {"seat_ids": seated.ids("Stalls A-3", "Stalls A-4")}
    assert (await api.post(f"/api/events/{event_id}/seats:block", json=house, headers=buyer.headers)).status_code == 403
    blocked = await api.post(f"/api/events/{event_id}/seats:block", json=house, headers=owner.headers)
    assert blocked.status_code == 200, blocked.text
    assert {s["status"] for s in blocked.json()["seats"]} == {"SEAT_STATUS_BLOCKED"}
    again = await api.post(f"/api/events/{event_id}/seats:block", json=house, headers=owner.headers)
    assert again.status_code == 200
    refused = await order_seats(api, buyer, seated.ids("Stalls A-4"))
    assert refused.status_code == 409 and "Stalls A-4" in refused.json()["message"]
    assert (await order_seats(api, buyer, seated.ids("Stalls A-1"))).status_code == 200
    held = {"seat_ids": seated.ids("Stalls A-1")}
    taken = await api.post(f"/api/events/{event_id}/seats:block", json=held, headers=owner.headers)
    assert taken.status_code == 409 and reason(taken) == "SEAT_UNAVAILABLE" and "Stalls A-1" in taken.text
    freed = await api.post(f"/api/events/{event_id}/seats:unblock", json=house, headers=owner.headers)
    assert {s["status"] for s in freed.json()["seats"]} == {"SEAT_STATUS_AVAILABLE"}
    assert (await order_seats(api, buyer, seated.ids("Stalls A-4"))).status_code == 200


async def test_a_plan_changes_around_held_and_sold_seats(api: httpx.AsyncClient, db: asyncpg.Pool, admin: User) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES)
    assert (await order_seats(api, buyer, seated.ids("Stalls A-1", "Stalls B-4"))).status_code == 200
    plan_url = f"/api/seating-plans/{seated.plan['id']}"

    def zones(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
        return {"zones": [{"name": "Stalls", "rows": [{"name": "A", "seats": a}, {"name": "B", "seats": b}]}]}

    a_row, b_row = row_of("A", 4, "premium")["seats"], row_of("B", 4, "standard", y=1.0)["seats"]
    # Dropping the balcony is fine (nobody holds a seat there); dropping A-1 or moving B-4 to premium is not.
    recategorised = [*b_row[:3], b_row[3] | {"category": "premium"}]
    mask = {"update_mask": "zones"}
    dropped = await api.patch(plan_url, json=zones(a_row[1:], recategorised), params=mask, headers=admin.headers)
    assert dropped.status_code == 409, dropped.text
    assert "Stalls A-1" in dropped.json()["message"] and "Stalls B-4" in dropped.json()["message"]
    added = [*a_row, {"number": "5", "x": 5.0, "y": 0.0, "category": "premium", "accessible": True}]
    moved = await api.patch(plan_url, json=zones(added, b_row), params=mask, headers=admin.headers)
    assert moved.status_code == 200, moved.text
    now = await statuses(api, seated.event["id"])
    assert now["Stalls A-5"] == "AVAILABLE" and now["Stalls A-1"] == "HELD" and "Balcony C-1" not in now
    types = (await api.get(f"/api/events/{seated.event['id']}/ticket-types")).json()["ticket_types"]
    assert {t["seat_category"]: t["inventory"] for t in types} == {"premium": 5, "standard": 4}


async def test_a_plan_edit_changes_what_its_ticket_types_sell(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """A plan's new inventory is what its ticket types sell from then on: a standing area made smaller
    sells no more than its new capacity (two buyers of 2 each with room for 2 sold 4), seats added are
    all sold (the last of 6 premium seats could not be paid: the order stayed reserved), and an area
    cannot shrink below what is sold and held in it."""
    owner, first, second, third = [await create_user(db) for _ in range(4)]
    standing = [{"name": "Standing", "category": "standing", "capacity": 5}]
    seated = await seated_event(
        api, admin, owner, TWO_ZONES, general_admission=standing, prices={"premium": 0, "standard": 0, "standing": 0}
    )
    event_id, plan_url = seated.event["id"], f"/api/seating-plans/{seated.plan['id']}"
    more_seats = [{"name": "Stalls", "rows": [row_of("A", 6, "premium"), row_of("B", 4, "standard", y=1.0)]},
                  TWO_ZONES[1]]  # fmt: skip
    smaller = {"zones": more_seats, "general_admission": [standing[0] | {"capacity": 2}]}
    edited = await api.patch(
        plan_url, params={"update_mask": "zones,general_admission"}, json=smaller, headers=admin.headers
    )
    assert edited.status_code == 200, edited.text

    standing_id = seated.types["standing"]["id"]
    # Both reserve before either pays.
    reserved = [
        await api.post(
            "/api/orders",
            json={"request_id": "standing", "items": [{"ticket_type_id": standing_id, "quantity": 2}]},
            headers=buyer.headers,
        )
        for buyer in (first, second)
    ]
    assert [r.status_code for r in reserved] == [200, 409] and reason(reserved[1]) == "SOLD_OUT", reserved[1].text
    assert (await checkout(api, first, reserved[0].json()["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"

    seats = {f"{s['zone']} {s['label']}": s["id"] for s in await seats_of(api, event_id)}
    six = await order_seats(api, third, [seats[f"Stalls A-{n}"] for n in range(1, 7)])
    assert six.status_code == 200, six.text
    assert (await checkout(api, third, six.json()["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"
    assert len(await my_tickets(api, third)) == 6
    listed = (await api.get(f"/api/events/{event_id}/ticket-types")).json()["ticket_types"]
    types = {t["seat_category"]: t for t in listed}
    assert (types["standing"]["inventory"], types["standing"]["sold"]) == (2, 2)
    assert (types["premium"]["inventory"], types["premium"]["sold"], types["premium"]["available"]) == (6, 6, 0)

    tighter = {"general_admission": [standing[0] | {"capacity": 1}]}
    mask = {"update_mask": "general_admission"}
    refused = await api.patch(plan_url, params=mask, json=tighter, headers=admin.headers)
    assert refused.status_code == 400 and reason(refused) == "INVENTORY_TAKEN", refused.text
    assert (await api.get(plan_url)).json()["general_admission"][0]["capacity"] == 2


async def test_a_recurring_events_seat_is_sold_once_for_each_occurrence(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """A category is sold by one ticket type for the whole series or by one per occurrence, never
    both: the same seat was held by a series ticket and by one occurrence's at once. Blocking names
    the occurrence its seats are sold for (a seat blocked for one occurrence was sold as a series
    ticket; one blocked for the series stayed on sale for each occurrence)."""
    owner, buyer, other = await create_user(db), await create_user(db), await create_user(db)
    venue_id = await add_venue(api, admin)
    plan = (await add_plan(api, admin, venue_id, TWO_ZONES)).json()
    event = await create_event(
        api, owner, status="EVENT_STATUS_PUBLISHED", venue_id=venue_id, seating_plan_id=plan["id"],
        recurrence={"rrule": "FREQ=WEEKLY;COUNT=3"},
    )  # fmt: skip
    event_id = event["id"]
    first, second = [o["id"] for o in (await api.get(f"/api/events/{event_id}/occurrences")).json()["occurrences"][:2]]
    seats = {s["label"]: s["id"] for s in await seats_of(api, event_id)}

    async def add_type(category: str, occurrence_id: str | None = None) -> httpx.Response:
        body = {"name": category, "currency": "THB", "inventory": 0, "price_minor": 0, "seat_category": category}
        return await api.post(
            f"/api/events/{event_id}/ticket-types",
            json=body | ({"occurrence_id": occurrence_id} if occurrence_id else {}),
            headers=owner.headers,
        )

    async def block(label: str, occurrence_id: str | None = None) -> httpx.Response:
        body = {"seat_ids": [seats[label]]} | ({"occurrence_id": occurrence_id} if occurrence_id else {})
        return await api.post(f"/api/events/{event_id}/seats:block", json=body, headers=owner.headers)

    async def buy(who: User, label: str, occurrence_id: str) -> httpx.Response:
        body = {"request_id": str(uuid.uuid4()), "seats": [{"seat_id": seats[label]}]}
        return await api.post("/api/orders", json=body | {"seats_occurrence_id": occurrence_id}, headers=who.headers)

    # Premium: season tickets, for the whole series.
    assert (await add_type("premium")).status_code == 200
    mixed = await add_type("premium", first)
    assert mixed.status_code == 400 and reason(mixed) == "SEAT_CATEGORY_SOLD_OTHERWISE", mixed.text
    assert (await buy(buyer, "A-1", event_id)).status_code == 200
    assert (await buy(other, "A-1", first)).status_code == 400  # no type sells it for one occurrence
    wrong = await block("A-2", first)
    assert wrong.status_code == 400 and reason(wrong) == "SEAT_CATEGORY_SOLD_OTHERWISE", wrong.text
    assert (await block("A-2")).status_code == 200
    assert (await buy(other, "A-2", event_id)).status_code == 409

    # Standard: sold per occurrence.
    assert (await add_type("standard", first)).status_code == 200
    assert (await add_type("standard", second)).status_code == 200
    mixed = await add_type("standard")
    assert mixed.status_code == 400 and reason(mixed) == "SEAT_CATEGORY_SOLD_OTHERWISE", mixed.text
    wrong = await block("B-1")
    assert wrong.status_code == 400 and reason(wrong) == "SEAT_CATEGORY_SOLD_OTHERWISE", wrong.text
    assert (await block("B-1", second)).status_code == 200
    assert (await buy(buyer, "B-1", second)).status_code == 409
    assert (await buy(buyer, "B-1", first)).status_code == 200
    assert (await buy(other, "B-1", first)).status_code == 409


async def best(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User, rows: list[dict[str, Any]], taken: list[str], quantity: int
) -> httpx.Response:
    """Best-available of `quantity` seats in a one-zone plan of `rows` where `taken` are blocked."""
    owner, buyer = await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, [{"name": "Hall", "rows": rows}])
    if taken:
        blocked = await api.post(
            f"/api/events/{seated.event['id']}/seats:block",
            json={"seat_ids": seated.ids(*(f"Hall {label}" for label in taken))},
            headers=owner.headers,
        )
        assert blocked.status_code == 200, blocked.text
    return await order_best(api, buyer, seated.types["std"]["id"], quantity)


async def test_best_available_takes_the_middle_of_the_front_row(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    front_and_back = [row_of("A", 9, "std"), row_of("B", 9, "std", y=1.0)]
    chosen = await best(api, db, admin, front_and_back, [], 2)
    assert chosen.status_code == 200, chosen.text
    assert labels(chosen.json()) == ["Hall A-4", "Hall A-5"]
    # The front row full in the middle: the block nearest its centre that still fits (A-8 is nearer
    # than A-2; A-8+A-9 would leave A-7 alone between it and A-6).
    chosen = await best(api, db, admin, front_and_back, ["A-3", "A-4", "A-5", "A-6"], 2)
    assert labels(chosen.json()) == ["Hall A-7", "Hall A-8"]
    chosen = await best(api, db, admin, front_and_back, ["A-2", "A-5", "A-8"], 3)
    assert labels(chosen.json()) == ["Hall B-4", "Hall B-5", "Hall B-6"]


async def test_best_available_leaves_no_single_empty_seat_when_it_can(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    # A-1 A-2 [A-3 taken] A-4 A-5 A-6 [A-7 taken]: A-4+A-5 (nearest the centre) would strand A-6,
    # A-5+A-6 would strand A-4; A-1+A-2 strands nobody.
    chosen = await best(api, db, admin, [row_of("A", 7, "std")], ["A-3", "A-7"], 2)
    assert labels(chosen.json()) == ["Hall A-1", "Hall A-2"]
    # Every block of the front row strands a seat; the second row's does not, so it wins.
    rows = [row_of("A", 5, "std"), row_of("B", 5, "std", y=1.0)]
    chosen = await best(api, db, admin, rows, ["A-1", "A-5"], 2)
    assert labels(chosen.json()) == ["Hall B-2", "Hall B-3"]
    # With no other choice, a block that strands a seat is still sold.
    chosen = await best(api, db, admin, [row_of("A", 5, "std")], ["A-1", "A-5"], 2)
    assert labels(chosen.json()) == ["Hall A-2", "Hall A-3"]
    # No three adjacent seats left: sold out.
    chosen = await best(api, db, admin, [row_of("A", 5, "std")], ["A-3"], 3)
    assert chosen.status_code == 409 and reason(chosen) == "SOLD_OUT"


async def test_the_seat_map_is_an_svg_of_every_seat(api: httpx.AsyncClient, db: asyncpg.Pool, admin: User) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, TWO_ZONES)
    await order_seats(api, buyer, seated.ids("Stalls A-1"))
    svg = await api.get(f"/api/events/{seated.event['id']}/seat-map.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.count("<circle") == 11 + 2 + 3  # the seats, then the legend
    held = seated.seats["Stalls A-1"]["id"]
    circle = re.search(rf'<circle class="([^"]*)"[^>]*data-seat="{held}"', svg.text)
    assert circle is not None and "held" in circle[1].split()


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of an 8-bit, non-interlaced PNG (Chromium's screenshots)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks, header = 8, b"", b""
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at : at + 4]), data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks += body
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    step = 3 if colour == 2 else 4
    raw, rows, previous = zlib.decompress(chunks), [], bytearray(width * step)
    stride = width * step + 1
    for y in range(height):
        kind, line = raw[y * stride], bytearray(raw[y * stride + 1 : (y + 1) * stride])
        for i in range(len(line)):
            left = line[i - step] if i >= step else 0
            up, corner = previous[i], previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                guess = left + up - corner
                nearest = min((abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - corner), 2, corner))
                line[i] = (line[i] + nearest[2]) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(r) for r in rows] if step == 3 else [bytes(_rgb(r)) for r in rows]


def _rgb(rgba: bytes) -> bytearray:
    return bytearray(b for i, b in enumerate(rgba) if i % 4 != 3)


def screenshot(url: str, tmp_path: Path, width: int, height: int) -> Path:
    """Chromium's rendering of `url` in a window of that size, as a PNG."""
    shot = tmp_path / "seat-map.png"
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it"
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    window = f"--window-size={width},{height}"
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, profile, "--hide-scrollbars", window, f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return shot


async def test_the_seat_map_renders_in_chromium_with_sold_seats_apart(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User, tmp_path: Path
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    stalls = [row_of(r, 12, "premium" if r in "AB" else "standard", y=float(i)) for i, r in enumerate("ABCDEF")]
    balcony = [row_of(r, 14, "balcony", y=8.0 + i, x0=-1.0) for i, r in enumerate("GHJ")]
    zones = [{"name": "Stalls", "rows": stalls}, {"name": "Balcony", "rows": balcony}]
    seated = await seated_event(api, admin, owner, zones, prices={"premium": 0, "standard": 0, "balcony": 0})
    sold = seated.ids("Stalls A-5", "Stalls A-6", "Stalls A-7", "Stalls C-3", "Balcony H-8", "Balcony H-9")
    bought = (await order_seats(api, buyer, sold)).json()
    assert (await checkout(api, buyer, bought["id"])).json()["order"]["status"] == "ORDER_STATUS_PAID"
    await order_seats(api, buyer, seated.ids("Stalls D-10", "Stalls D-11"))
    house = {"seat_ids": seated.ids("Stalls B-1", "Stalls B-12")}
    assert (
        await api.post(f"/api/events/{seated.event['id']}/seats:block", json=house, headers=owner.headers)
    ).is_success

    url = f"{stack.gateway_url}/api/events/{seated.event['id']}/seat-map.svg"
    svg = (await api.get(url)).text
    size = re.search(r'width="(\d+)" height="(\d+)"', svg)
    assert size is not None
    width, height = int(size[1]), int(size[2])
    shot = screenshot(url, tmp_path, width, height)
    _, _, pixels = png_pixels(shot.read_bytes())

    def colour(seat_id: str) -> tuple[int, ...]:
        found = re.search(rf'cx="([\d.]+)" cy="([\d.]+)" r="[\d.]+" data-seat="{seat_id}"', svg)
        assert found is not None
        x, y = round(float(found[1])), round(float(found[2]))
        return tuple(pixels[y][3 * x : 3 * x + 3])

    premium, sold_premium = colour(seated.ids("Stalls A-1")[0]), colour(sold[0])
    assert premium == (0x00, 0x72, 0xB2)  # the first category's colour
    assert sold_premium == (0xC8, 0xC8, 0xC8) and colour(sold[-1]) == sold_premium  # sold: grey, any category
    assert colour(seated.ids("Stalls C-1")[0]) == (0xE6, 0x9F, 0x00)
    assert colour(seated.ids("Stalls D-10")[0]) not in (premium, sold_premium)  # held: faint
    assert colour(seated.ids("Stalls B-1")[0]) == (0xFF, 0xFF, 0xFF)  # blocked: hollow


async def test_one_buyers_seat_orders_at_once_keep_to_the_limit_and_their_request_id(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """Seat orders did not queue on the buyer the way other orders do: a buyer (or a retrying app)
    sending several at once had each count the others' seats before they were claimed, so a limit of 1
    seat per buyer let 3 of 10 through, and the same request_id sent 4 times at once made one order and
    answered the retries 409 ALREADY_EXISTS or 400 LIMIT_EXCEEDED. Now at most the limit is held, and
    every retry answers the one order."""
    owner = await create_user(db)
    rows = [row_of("A", 15, "std"), row_of("B", 15, "std", y=1.0), row_of("C", 2, "std", y=2.0)]
    seated = await seated_event(api, admin, owner, [{"name": "Hall", "rows": rows}], max_per_order=1)
    seat_ids = [seat["id"] for seat in seated.seats.values()]
    for round_ in range(3):
        buyer = await create_user(db)
        answers = await asyncio.gather(
            *(order_seats(api, buyer, [s]) for s in seat_ids[round_ * 10 : round_ * 10 + 10])
        )
        assert {r.status_code for r in answers} <= {200, 400}, [r.text for r in answers]
        assert sum(r.status_code == 200 for r in answers) == 1, [reason(r) for r in answers]
        assert all(reason(r) == "LIMIT_EXCEEDED" for r in answers if r.status_code == 400)
    assert Counter((await statuses(api, seated.event["id"])).values())["HELD"] == 3

    other = await create_user(db)
    request_id = str(uuid.uuid4())
    retries = await asyncio.gather(*(order_seats(api, other, seat_ids[30:31], request_id=request_id) for _ in range(4)))
    assert [r.status_code for r in retries] == [200] * 4, [r.text for r in retries]
    assert len({r.json()["id"] for r in retries}) == 1


async def test_best_available_asking_for_more_seats_than_remain_says_how_many_are_left(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """With one seat left, asking for the best 2 said "no 2 adjacent seats of std seat are left", as if
    the seats were only apart: the buyer could not tell that one would do. Still a 409 SOLD_OUT, now
    saying how many are left (and ErrorInfo metadata `available`), like other orders."""
    owner, first, second = await create_user(db), await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, [{"name": "Hall", "rows": [row_of("A", 4, "std")]}])
    type_id = seated.types["std"]["id"]
    assert (await order_best(api, first, type_id, 3)).status_code == 200
    refused = await order_best(api, second, type_id, 2)
    assert refused.status_code == 409 and reason(refused) == "SOLD_OUT", refused.text
    assert refused.json()["message"] == "only 1 std seat ticket is left", refused.text
    assert refused.json()["details"][0]["metadata"]["available"] == "1"
    assert (await order_best(api, second, type_id, 1)).status_code == 200
    refused = await order_best(api, owner, type_id, 1)
    assert refused.status_code == 409 and refused.json()["message"] == "std seat is sold out", refused.text
    assert refused.json()["details"][0]["metadata"]["available"] == "0"


async def test_a_buyer_over_the_seat_limit_hears_how_many_more_they_may_take(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """Holding 1 of a 2-per-buyer seated type, asking for 2 more said "between 1 and 2 seats of std seat
    per buyer"; now it says how many they hold and may still take, as other orders do."""
    owner, buyer = await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, [{"name": "Hall", "rows": [row_of("A", 6, "std")]}], max_per_order=2)
    assert (await order_seats(api, buyer, seated.ids("Hall A-1"))).status_code == 200
    refused = await order_seats(api, buyer, seated.ids("Hall A-3", "Hall A-4"))
    assert refused.status_code == 400 and reason(refused) == "LIMIT_EXCEEDED", refused.text
    assert refused.json()["message"] == "you have 1 std seat seats already: 1 more at most (2 per buyer)"
    assert refused.json()["details"][0]["metadata"]["remaining"] == "1"
    assert (await order_seats(api, buyer, seated.ids("Hall A-3"))).status_code == 200


async def test_a_request_id_reused_for_other_seats_is_a_409(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """The same request_id with other seats (or for best-available, another count) answered 200 with
    the first order, as if the seats asked for were held; orders of items answer 409 REQUEST_ID_REUSED
    for that (AIP-155), and now so do orders of seats. A true retry still answers its order."""
    owner, buyer = await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, [{"name": "Hall", "rows": [row_of("A", 6, "std")]}])
    request_id = str(uuid.uuid4())
    first = await order_seats(api, buyer, seated.ids("Hall A-1"), request_id=request_id)
    assert first.status_code == 200, first.text
    again = await order_seats(api, buyer, seated.ids("Hall A-1"), request_id=request_id)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    other = await order_seats(api, buyer, seated.ids("Hall A-2"), request_id=request_id)
    assert other.status_code == 409 and reason(other) == "REQUEST_ID_REUSED", other.text
    body = {"request_id": request_id, "best_available": {"ticket_type_id": seated.types["std"]["id"], "quantity": 2}}
    best = await api.post("/api/orders", json=body, headers=buyer.headers)
    assert best.status_code == 409 and reason(best) == "REQUEST_ID_REUSED", best.text
    assert (await statuses(api, seated.event["id"]))["Hall A-2"] == "AVAILABLE"


async def test_seats_for_an_occurrence_not_of_the_event_are_a_400_naming_it(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """A made-up `seats_occurrence_id`, or one of another event's, answered 400 "no ticket type sells
    Hall A-1", as if the seat were the mistake; now the 400 names the occurrence. The event's own id
    still stands for the event as a whole (its series-wide ticket types)."""
    owner, buyer = await create_user(db), await create_user(db)
    seated = await seated_event(api, admin, owner, [{"name": "Hall", "rows": [row_of("A", 4, "std")]}])
    elsewhere = await create_event(
        api, owner, status="EVENT_STATUS_PUBLISHED", recurrence={"rrule": "FREQ=DAILY;COUNT=2"}
    )
    others = (await api.get(f"/api/events/{elsewhere['id']}/occurrences")).json()["occurrences"]

    async def buy(label: str, occurrence_id: str) -> httpx.Response:
        body = {"request_id": str(uuid.uuid4()), "seats": [{"seat_id": seated.seats[label]["id"]}]}
        return await api.post("/api/orders", json=body | {"seats_occurrence_id": occurrence_id}, headers=buyer.headers)

    for occurrence_id in (str(uuid.uuid4()), others[0]["id"]):
        refused = await buy("Hall A-1", occurrence_id)
        assert refused.status_code == 400 and reason(refused) == "INVALID_ARGUMENT", refused.text
        assert "occurrence" in refused.json()["message"], refused.text
        fields = [v["field"] for d in refused.json()["details"] for v in d.get("field_violations", [])]
        assert fields == ["order.seats_occurrence_id"], refused.text
    assert (await statuses(api, seated.event["id"]))["Hall A-1"] == "AVAILABLE"
    assert (await buy("Hall A-1", seated.event["id"])).status_code == 200


async def test_seats_or_a_plan_of_something_else_are_invalid_arguments_naming_the_field(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """Blocking seats of another event, or giving an event a plan of another venue, answered gRPC
    FAILED_PRECONDITION with reason INVALID_ARGUMENT and no field; now INVALID_ARGUMENT on the field."""
    owner = await create_user(db)
    seated = await seated_event(api, admin, owner, [{"name": "Hall", "rows": [row_of("A", 2, "std")]}])
    other = await seated_event(api, admin, owner, [{"name": "Hall", "rows": [row_of("A", 2, "std")]}])

    def invalid_on(response: httpx.Response, field: str) -> bool:
        fields = [v["field"] for d in response.json()["details"] for v in d.get("field_violations", [])]
        return response.status_code == 400 and response.json()["code"] == 3 and fields == [field]

    blocked = await api.post(
        f"/api/events/{seated.event['id']}/seats:block",
        json={"seat_ids": [*seated.ids("Hall A-1"), *other.ids("Hall A-1")]},
        headers=owner.headers,
    )
    assert invalid_on(blocked, "seat_ids") and reason(blocked) == "INVALID_ARGUMENT", blocked.text
    assert (await statuses(api, seated.event["id"]))["Hall A-1"] == "AVAILABLE"
    moved = await api.patch(
        f"/api/events/{seated.event['id']}",
        json={"seating_plan_id": other.plan["id"]},
        params={"update_mask": "seating_plan_id"},
        headers=owner.headers,
    )
    assert invalid_on(moved, "seating_plan_id") and reason(moved) == "INVALID_ARGUMENT", moved.text
