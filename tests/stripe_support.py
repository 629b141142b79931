"""Stripe as the payment tests see it: events built and signed exactly as Stripe signs them, what
localstripe holds (its refunds), a stand-in endpoint that receives localstripe's webhooks instead of
the gateway (a missed webhook), and the reconciliation command run against the stack."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx

from localplus_dev.stack import Stack
from localplus_dev.stripe import DEV_API_KEY, DEV_WEBHOOK_SECRET
from tests.support import User
from tests.ticketing_support import checkout, reserve

WEBHOOK = "/api/webhooks/stripe"
# The stack registers localstripe's webhook to the gateway under this id (localplus_dev.stripe).
STACK_WEBHOOK_ID = "localplus"


def stripe_event(event_type: str, subject: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": event_type,
        "data": {"object": subject},
    }


def signed(body: bytes, *, secret: str = DEV_WEBHOOK_SECRET, at: int | None = None) -> dict[str, str]:
    """The headers Stripe sends: `Stripe-Signature: t=<ts>,v1=<HMAC-SHA256 of "<ts>.<body>">`."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"stripe-signature": f"t={timestamp},v1={digest}", "content-type": "application/json"}


async def deliver(api: httpx.AsyncClient, event: dict[str, Any], **signing: Any) -> httpx.Response:
    body = json.dumps(event).encode()
    return await api.post(WEBHOOK, content=body, headers=signed(body, **signing))


def payment_intent(order: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The PaymentIntent object of a `payment_intent.*` event for `order` (paid in full)."""
    return {
        "id": order["payment_intent_id"],
        "object": "payment_intent",
        "amount": int(order["total_minor"]),
        "amount_received": int(order["total_minor"]),
        "currency": order["currency"].lower(),
        "status": "succeeded",
        "metadata": {"order_id": order["id"]},
    } | fields


def charge(order: dict[str, Any], amount_refunded: int) -> dict[str, Any]:
    """The Charge object of a `charge.*` event for the order's PaymentIntent."""
    return {
        "id": f"ch_{uuid.uuid4().hex[:24]}",
        "object": "charge",
        "amount": int(order["total_minor"]),
        "amount_refunded": amount_refunded,
        "refunded": amount_refunded >= int(order["total_minor"]),
        "currency": order["currency"].lower(),
        "payment_intent": order["payment_intent_id"],
        "status": "succeeded",
    }


def checkout_session(order: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A Checkout Session object for `order` (localstripe has none, so tests build them)."""
    return {
        "id": f"cs_test_{uuid.uuid4().hex}",
        "object": "checkout.session",
        "mode": "payment",
        "client_reference_id": order["id"],
        "metadata": {"order_id": order["id"]},
        "amount_total": int(order["total_minor"]),
        "currency": order["currency"].lower(),
        "payment_status": "unpaid",
        "status": "open",
        "payment_intent": None,
    } | fields


async def awaiting_payment(
    api: httpx.AsyncClient, buyer: User, ticket_type_id: str, quantity: int = 1
) -> dict[str, Any]:
    """An order of `buyer`'s checked out with a PaymentIntent at localstripe (not paid)."""
    reserved = await reserve(api, buyer, ticket_type_id, quantity=quantity)
    assert reserved.status_code == 200, reserved.text
    started = await checkout(api, buyer, reserved.json()["id"])
    assert started.status_code == 200, started.text
    order: dict[str, Any] = started.json()["order"]
    assert order["status"] == "ORDER_STATUS_AWAITING_PAYMENT" and order["payment_intent_id"]
    return order


@asynccontextmanager
async def localstripe(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {DEV_API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.stripe.url, headers=headers, timeout=30) as client:
        yield client


async def refunded_at_stripe(stack: Stack, payment_intent_id: str) -> list[int]:
    """The amounts localstripe refunded of a (paid) PaymentIntent, smallest first."""
    async with localstripe(stack) as stripe:
        listed = await stripe.get("/v1/refunds", params={"payment_intent": payment_intent_id, "limit": 100})
    assert listed.status_code == 200, listed.text
    return sorted(int(refund["amount"]) for refund in listed.json()["data"])


async def order_row(db: asyncpg.Pool, order_id: str) -> asyncpg.Record:
    row = await db.fetchrow("select * from public.orders where id = $1", uuid.UUID(order_id))
    assert row is not None
    return row


async def order_tickets(db: asyncpg.Pool, order_id: str) -> list[asyncpg.Record]:
    return list(await db.fetch("select * from public.tickets where order_id = $1 order by id", uuid.UUID(order_id)))


async def order_refunds(db: asyncpg.Pool, order_id: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch("select * from public.refunds where order_id = $1 order by created_at, id", uuid.UUID(order_id))
    )


async def expire_hold(db: asyncpg.Pool, order_id: str) -> None:
    """The order's hold ran out and the sweeper has been by."""
    await db.execute("update public.ticket_holds set expires_at = now() - interval '1 second' where order_id = $1",
                     uuid.UUID(order_id))  # fmt: skip
    await db.execute("update public.orders set expires_at = now() - interval '1 second' where id = $1",
                     uuid.UUID(order_id))  # fmt: skip
    await db.execute("select localplus_private.expire_due_orders()")


class WebhookCatcher:
    """An HTTP endpoint that answers 200 to anything and keeps the JSON bodies: localstripe's webhook
    pointed here is one the service never receives (a missed webhook), and the test knows when it went."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    async def __aenter__(self) -> WebhookCatcher:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        self.events.append(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def wait_for(self, event_type: str, object_id: str, within_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            for event in self.events:
                if event["type"] == event_type and event["data"]["object"]["id"] == object_id:
                    return event
            assert time.monotonic() < deadline, f"localstripe sent no {event_type} for {object_id}"
            await asyncio.sleep(0.1)


@asynccontextmanager
async def webhooks_missed(stack: Stack) -> AsyncIterator[WebhookCatcher]:
    """While inside, localstripe's webhook goes to a catcher instead of the gateway; restored after."""
    async with WebhookCatcher() as catcher, localstripe(stack) as stripe:
        redirected = await stripe.post(
            f"/_config/webhooks/{STACK_WEBHOOK_ID}", data={"url": catcher.url, "secret": DEV_WEBHOOK_SECRET}
        )
        assert redirected.status_code == 200, redirected.text
        try:
            yield catcher
        finally:
            restored = await stripe.post(
                f"/_config/webhooks/{STACK_WEBHOOK_ID}",
                data={"url": f"{stack.gateway_url}{WEBHOOK}", "secret": DEV_WEBHOOK_SECRET},
            )
            assert restored.status_code == 200, restored.text


async def run_reconcile(stack: Stack, *args: str, stripe_api_base: str | None = None) -> tuple[int, str]:
    """`python -m localplus_ticketing.reconcile` against the stack, as an operator (or cron) runs it."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=stack.database_url,
        STRIPE_API_BASE=stripe_api_base or stack.stripe.url,
        LOCALPLUS_ENV="dev",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "localplus_ticketing.reconcile",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()
