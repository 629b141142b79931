"""What the seating tests share: a venue with a seating plan, a published event using it with a ticket
type per category, its seats by label, and orders of seats through the gateway."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support import User, create_event


def row_of(name: str, count: int, category: str, y: float = 0.0, x0: float = 0.0, **seat: Any) -> dict[str, Any]:
    """A row of `count` seats numbered from 1, a unit apart (the first at x0 + 1)."""
    seats = [{"number": str(n), "x": x0 + n, "y": y, "category": category} | seat for n in range(1, count + 1)]
    return {"name": name, "seats": seats}


@dataclass
class SeatedEvent:
    event: dict[str, Any]
    plan: dict[str, Any]
    types: dict[str, dict[str, Any]]  # category -> ticket type
    seats: dict[str, dict[str, Any]]  # "Zone A-1" -> seat

    def ids(self, *labels: str) -> list[str]:
        return [self.seats[label]["id"] for label in labels]


async def add_venue(api: httpx.AsyncClient, admin: User) -> str:
    body = {"city": "bangkok", "name": "Riverside Theatre", "address": "1 Charoen Krung Rd"}
    response = await api.post("/api/venues", json=body, headers=admin.headers)
    assert response.status_code == 200, response.text
    venue_id: str = response.json()["id"]
    return venue_id


async def add_plan(
    api: httpx.AsyncClient, who: User, venue_id: str, zones: list[dict[str, Any]], **plan: Any
) -> httpx.Response:
    body = {"name": "Main hall", "zones": zones} | plan
    return await api.post(f"/api/venues/{venue_id}/seating-plans", json=body, headers=who.headers)


async def seated_event(
    api: httpx.AsyncClient,
    admin: User,
    owner: User,
    zones: list[dict[str, Any]],
    *,
    prices: dict[str, int] | None = None,
    general_admission: list[dict[str, Any]] | None = None,
    max_per_order: int = 10,
) -> SeatedEvent:
    """A published event of `owner`'s at a new venue, using a new plan of `zones`, each category sold
    by a ticket type of its own (price from `prices`, default 50,000 satang)."""
    venue_id = await add_venue(api, admin)
    created = await add_plan(api, admin, venue_id, zones, general_admission=general_admission or [])
    assert created.status_code == 200, created.text
    plan = created.json()
    event = await create_event(
        api, owner, status="EVENT_STATUS_PUBLISHED", venue_id=venue_id, seating_plan_id=plan["id"]
    )
    categories = dict.fromkeys(
        [seat["category"] for zone in zones for row in zone["rows"] for seat in row["seats"]]
        + [area["category"] for area in general_admission or []]
    )
    types = {}
    for category in categories:
        body = {
            "name": f"{category} seat",
            "currency": "THB",
            "inventory": 0,
            "price_minor": (prices or {}).get(category, 50_000),
            "seat_category": category,
            "max_per_order": max_per_order,
        }
        response = await api.post(f"/api/events/{event['id']}/ticket-types", json=body, headers=owner.headers)
        assert response.status_code == 200, response.text
        types[category] = response.json()
    return SeatedEvent(event, plan, types, {f"{s['zone']} {s['label']}": s for s in await seats_of(api, event["id"])})


async def seats_of(api: httpx.AsyncClient, event_id: str, **params: str) -> list[dict[str, Any]]:
    response = await api.get(f"/api/events/{event_id}/seats", params=params)
    assert response.status_code == 200, response.text
    seats: list[dict[str, Any]] = response.json().get("seats", [])
    return seats


async def statuses(api: httpx.AsyncClient, event_id: str) -> dict[str, str]:
    """Each seat's status by "Zone A-1", without the prefix ("AVAILABLE")."""
    return {
        f"{s['zone']} {s['label']}": s["status"].removeprefix("SEAT_STATUS_") for s in await seats_of(api, event_id)
    }


async def order_seats(
    api: httpx.AsyncClient, buyer: User, seat_ids: list[str], request_id: str | None = None
) -> httpx.Response:
    body = {"request_id": request_id or str(uuid.uuid4()), "seats": [{"seat_id": s} for s in seat_ids]}
    return await api.post("/api/orders", json=body, headers=buyer.headers)


async def order_best(api: httpx.AsyncClient, buyer: User, ticket_type_id: str, quantity: int) -> httpx.Response:
    body = {
        "request_id": str(uuid.uuid4()),
        "best_available": {"ticket_type_id": ticket_type_id, "quantity": quantity},
    }
    return await api.post("/api/orders", json=body, headers=buyer.headers)


def labels(order: dict[str, Any]) -> list[str]:
    return [f"{s['zone']} {s['label']}" for s in order["seats"]]


def reason(response: httpx.Response) -> str:
    details = response.json().get("details", [])
    return next((d.get("reason", "") for d in details if "reason" in d), "")
