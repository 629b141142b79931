"""The ticketing service killed in the middle of a rush loses no paid order and oversells nothing.

Buyers reserve a paid ticket type, check out and pay at localstripe while its webhooks arrive; the
service is SIGKILLed half-way and restarted. Requests that met the dead service are retried (a
reservation with its same request_id). localstripe never retries a webhook, so the payments whose
webhook came while the service was down stay unpaid on our side until the reconciler asks Stripe:
then every payment has its order PAID with exactly its tickets. Throughout (sampled during the rush)
sold + unexpired holds stay within the inventory and every sold ticket is issued."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import httpx

from localplus_common.config import Settings
from localplus_common.db import Database, create_pool
from localplus_dev.stack import Stack
from localplus_dev.stripe import DEV_API_KEY
from localplus_ticketing import payments
from localplus_ticketing.codes import TicketSigner
from localplus_ticketing.payment_provider import PaymentProvider
from localplus_ticketing.settings import TicketingSettings
from tests.support import User, create_user
from tests.test_rush import many_buyers
from tests.ticketing_support import checkout, event_with_tickets, pay_at_stripe, reserve

INVENTORY = 40
BUYERS = 60
PRICE_MINOR = 50_000
# Buyers arrive one every ARRIVAL_S, so the rush runs before, during and after the outage.
ARRIVAL_S = 0.08
# Paid at Stripe before the kill: the service dies with their webhooks (sent 1 s after a payment) in flight.
PAID_BEFORE_KILL = 8
# Every LATE-th buyer, once checked out, waits for the kill to pay: a webhook surely lost.
LATE = 4
# Down for longer than localstripe's webhook delay, so the webhooks of payments made meanwhile are lost.
DOWNTIME_S = 2.0
WEBHOOK_DELAY_S = 1.0
# sold and unexpired holds of the type, and its tickets issued, in one snapshot.
SAMPLE = """
select t.inventory, localplus_private.tickets_sold(t.id) as sold,
       (select coalesce(sum(h.quantity), 0) from public.ticket_holds h
         where h.ticket_type_id = t.id and h.expires_at > now()) as held,
       (select count(*) from public.tickets k where k.ticket_type_id = t.id and k.status <> 'void') as issued
  from public.ticket_types t where t.id = $1
"""


@dataclass
class Rush:
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    paid: dict[str, tuple[str, int]] = field(default_factory=dict)  # order id -> (PaymentIntent, quantity)
    paid_before_kill: int = 0
    last_payment: float = 0.0
    unavailable: int = 0  # answers from the dead (or not yet serving) service, retried
    samples: list[asyncpg.Record] = field(default_factory=list)


async def retried(rush: Rush, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """`send` again while the gateway has no ticketing service to pass it to (503, or a dropped connection)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            response = await send()
            if response.status_code != 503:
                return response
        except httpx.TransportError:
            pass
        rush.unavailable += 1
        assert time.monotonic() < deadline, "the ticketing service did not come back"
        await asyncio.sleep(0.1)


async def buy(
    api: httpx.AsyncClient,
    stack: Stack,
    rush: Rush,
    buyer: User,
    type_id: str,
    quantity: int,
    *,
    arrival: float,
    late: bool,
) -> None:
    """Arrive, reserve, check out, pay at Stripe; `late` buyers pay only once the service is dead."""
    await asyncio.sleep(arrival)
    request_id = str(uuid.uuid4())
    reserved = await retried(rush, lambda: reserve(api, buyer, type_id, quantity, request_id))
    if reserved.status_code == 409:
        assert reserved.json()["details"][0]["reason"] == "SOLD_OUT", reserved.text
        return
    assert reserved.status_code == 200, reserved.text
    order_id = reserved.json()["id"]
    started = await retried(rush, lambda: checkout(api, buyer, order_id, mode="CHECKOUT_MODE_PAYMENT_INTENT"))
    assert started.status_code == 200, started.text
    intent = started.json()["order"]["payment_intent_id"]
    if late:
        await rush.killed.wait()
    await pay_at_stripe(stack, intent)
    rush.paid[order_id] = (intent, quantity)
    rush.last_payment = time.monotonic()
    if not rush.killed.is_set():
        rush.paid_before_kill += 1


async def kill_and_restart(stack: Stack, rush: Rush) -> None:
    deadline = time.monotonic() + 30
    while rush.paid_before_kill < PAID_BEFORE_KILL:
        assert time.monotonic() < deadline, f"only {rush.paid_before_kill} payments before the kill"
        await asyncio.sleep(0.01)
    ticketing = stack.supervisor.child("ticketing")
    os.kill(ticketing.pid, signal.SIGKILL)
    await asyncio.to_thread(ticketing.popen.wait)
    rush.killed.set()
    await asyncio.sleep(DOWNTIME_S)
    await asyncio.to_thread(stack.restart_service, "ticketing")


async def snapshot(db: asyncpg.Pool, type_id: uuid.UUID) -> asyncpg.Record:
    row = await db.fetchrow(SAMPLE, type_id)
    assert row is not None
    return row


async def sample(db: asyncpg.Pool, rush: Rush, type_id: uuid.UUID, done: asyncio.Event) -> None:
    while not done.is_set():
        rush.samples.append(await snapshot(db, type_id))
        await asyncio.sleep(0.02)


async def reconcile(stack: Stack) -> set[str]:
    """What the reconciler does in production, with the service's own settings, against the stack: the orders
    it settled."""
    ticketing = TicketingSettings.from_env({"LOCALPLUS_ENV": "dev", "STRIPE_API_BASE": stack.stripe.url})
    pool = await create_pool(Settings.from_env({"LOCALPLUS_ENV": "dev", "DATABASE_URL": stack.database_url}))
    try:
        settled = await payments.reconcile(
            Database(pool), PaymentProvider(ticketing), TicketSigner(ticketing.ticket_signing_key), timedelta(0)
        )
        return {str(item.id) for item in settled if item.kind == "order" and not item.failed}
    finally:
        await pool.close()


async def succeeded_at_stripe(stack: Stack, order_ids: set[str]) -> Counter[str]:
    """Succeeded PaymentIntents per order of ours, as Stripe (localstripe) has them."""
    headers = {"authorization": f"Bearer {DEV_API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.stripe.url, headers=headers, timeout=30) as stripe:
        listed = await stripe.get("/v1/payment_intents", params={"limit": 100_000})
    assert listed.status_code == 200, listed.text
    return Counter(
        intent["metadata"]["order_id"]
        for intent in listed.json()["data"]
        if intent["status"] == "succeeded" and (intent.get("metadata") or {}).get("order_id") in order_ids
    )


async def test_killing_ticketing_mid_rush_loses_no_paid_order(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner = await create_user(db)
    buyers = await many_buyers(db, BUYERS)
    event, ticket_type = await event_with_tickets(api, owner, price_minor=PRICE_MINOR, inventory=INVENTORY)
    type_id = uuid.UUID(ticket_type["id"])
    rush, done = Rush(), asyncio.Event()
    sampler = asyncio.create_task(sample(db, rush, type_id, done))
    try:
        buying = [
            buy(api, stack, rush, buyer, ticket_type["id"], 1 + n % 2, arrival=n * ARRIVAL_S, late=n % LATE == LATE - 1)
            for n, buyer in enumerate(buyers)
        ]
        await asyncio.gather(kill_and_restart(stack, rush), *buying)
        # Webhooks of the payments made after the restart have arrived.
        await asyncio.sleep(max(0.0, rush.last_payment + WEBHOOK_DELAY_S + 1.0 - time.monotonic()))
    finally:
        done.set()
        await sampler
        if not stack.supervisor.child("ticketing").alive:
            await asyncio.to_thread(stack.restart_service, "ticketing")

    assert rush.unavailable > 0, "no request met the dead service"
    rows = await db.fetch("select id::text, status from public.orders where id = any($1::uuid[])", list(rush.paid))
    statuses = {row["id"]: row["status"] for row in rows}
    lost = [order_id for order_id in rush.paid if statuses[order_id] != "paid"]
    assert lost, "no webhook was lost while the service was down: this test shows nothing"
    assert {statuses[order_id] for order_id in lost} == {"awaiting_payment"}
    assert len(lost) < len(rush.paid), "no webhook reached the restarted service"

    assert set(lost) <= await reconcile(stack)

    # Every sample, and the end state: nothing oversold, every sold ticket issued.
    final = await snapshot(db, type_id)
    for seen in [*rush.samples, final]:
        assert seen["sold"] + seen["held"] <= seen["inventory"], dict(seen)
        assert seen["issued"] == seen["sold"], dict(seen)
    assert len(rush.samples) > 10

    # Every payment made is a PAID order holding exactly its tickets; nothing else was sold.
    orders = await db.fetch(
        """
        select o.id::text as id, o.status, o.buyer_id,
               (select sum(i.quantity) from public.order_items i where i.order_id = o.id) as quantity,
               (select count(*) from public.tickets t where t.order_id = o.id) as tickets,
               (select count(*) from public.tickets t where t.order_id = o.id and t.holder_id = o.buyer_id) as held,
               (select count(*) from public.outbox m where m.aggregate_id = o.id and m.topic = 'order.paid') as paid
          from public.orders o where o.event_id = $1
        """,
        uuid.UUID(event["id"]),
    )
    by_id = {row["id"]: row for row in orders}
    for order_id, (_, quantity) in rush.paid.items():
        order = by_id[order_id]
        assert (order["status"], order["quantity"], order["tickets"], order["held"], order["paid"]) == (
            "paid",
            quantity,
            quantity,
            quantity,
            1,
        ), dict(order)
    unpaid = [row for row in orders if row["id"] not in rush.paid]
    assert all(row["status"] != "paid" and row["tickets"] == 0 and row["paid"] == 0 for row in unpaid)
    assert final["sold"] == sum(quantity for _, quantity in rush.paid.values())
    refunds = await db.fetchval("select count(*) from public.refunds where order_id = any($1::uuid[])", list(by_id))
    assert refunds == 0  # nothing paid was turned away

    # No ticket issued twice, and Stripe took each payment once.
    tickets = await db.fetchrow(
        "select count(*) as n, count(distinct id) as ids, count(distinct code) as codes "
        "from public.tickets where ticket_type_id = $1",
        type_id,
    )
    assert tickets is not None
    assert tickets["n"] == tickets["ids"] == tickets["codes"] == final["sold"]
    assert len({intent for intent, _ in rush.paid.values()}) == len(rush.paid)
    assert await succeeded_at_stripe(stack, set(by_id)) == dict.fromkeys(rush.paid, 1)

    # The restarted service serves the rest of the session.
    again = await api.get(f"/api/orders/{next(iter(rush.paid))}", headers=owner.headers)
    assert again.status_code == 200 and again.json()["status"] == "ORDER_STATUS_PAID", again.text
