"""What the ticketing tests share: a published event with a ticket type, orders through the gateway,
paying at localstripe as a buyer's app would, and waiting for its webhook."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from localplus_dev.stack import Stack
from localplus_dev.stripe import DEV_API_KEY
from tests.support import User, create_event


async def event_with_tickets(
    api: httpx.AsyncClient, owner: User, *, price_minor: int = 50_000, inventory: int = 100, **ticket: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A published event of `owner`'s and one ticket type of it."""
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED")
    body = {"name": "General admission", "currency": "THB", "inventory": inventory, "price_minor": price_minor}
    created = await api.post(f"/api/events/{event['id']}/ticket-types", json=body | ticket, headers=owner.headers)
    assert created.status_code == 200, created.text
    return event, created.json()


async def reserve(
    api: httpx.AsyncClient, buyer: User, ticket_type_id: str, quantity: int = 1, request_id: str | None = None
) -> httpx.Response:
    body = {
        "request_id": request_id or str(uuid.uuid4()),
        "items": [{"ticket_type_id": ticket_type_id, "quantity": quantity}],
    }
    return await api.post("/api/orders", json=body, headers=buyer.headers)


async def checkout(api: httpx.AsyncClient, buyer: User, order_id: str, **body: Any) -> httpx.Response:
    return await api.post(f"/api/orders/{order_id}:checkout", json=body, headers=buyer.headers)


async def pay_at_stripe(stack: Stack, payment_intent_id: str) -> dict[str, Any]:
    """Pay as the buyer's app would at localstripe: set a card, then confirm (CONTRACT §9)."""
    headers = {"authorization": f"Bearer {DEV_API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.stripe.url, headers=headers, timeout=30) as stripe:
        card = await stripe.post(f"/v1/payment_intents/{payment_intent_id}", data={"payment_method": "pm_card_visa"})
        assert card.status_code == 200, card.text
        confirmed = await stripe.post(f"/v1/payment_intents/{payment_intent_id}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        result: dict[str, Any] = confirmed.json()
        return result


async def wait_for_status(
    api: httpx.AsyncClient, buyer: User, order_id: str, status: str, within_s: float = 20.0
) -> dict[str, Any]:
    """The order once it has `status` (webhooks arrive a second or so after the payment)."""
    deadline = time.monotonic() + within_s
    while True:
        response = await api.get(f"/api/orders/{order_id}", headers=buyer.headers)
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()
        if order["status"] == status or time.monotonic() > deadline:
            assert order["status"] == status, order
            return order
        await asyncio.sleep(0.2)


async def my_tickets(api: httpx.AsyncClient, buyer: User) -> list[dict[str, Any]]:
    response = await api.get("/api/me/tickets", params={"page_size": 100}, headers=buyer.headers)
    assert response.status_code == 200, response.text
    tickets: list[dict[str, Any]] = response.json()["tickets"]
    return tickets
