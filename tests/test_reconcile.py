"""The reconciliation command (`python -m localplus_ticketing.reconcile`) run as a subprocess against
the stack, as cron would run it: payments whose webhook never reached the service (localstripe's
webhook pointed elsewhere while the buyer pays), and refunds left pending by a crash or by a Stripe
that could not be reached or refused them."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from localplus_dev.postgres import free_port
from localplus_dev.stack import Stack
from tests.stripe_support import (
    awaiting_payment,
    deliver,
    expire_hold,
    localstripe,
    order_refunds,
    order_row,
    order_tickets,
    payment_intent,
    refunded_at_stripe,
    run_reconcile,
    stripe_event,
    webhooks_missed,
)
from tests.support import User, create_user
from tests.ticketing_support import event_with_tickets, pay_at_stripe, wait_for_status


async def pay_unseen(stack: Stack, payment_intent_id: str) -> None:
    """The buyer pays at localstripe; its webhook goes out, but never reaches the service."""
    async with webhooks_missed(stack) as catcher:
        await pay_at_stripe(stack, payment_intent_id)
        await catcher.wait_for("payment_intent.succeeded", payment_intent_id)


async def paid_order(
    api: httpx.AsyncClient, stack: Stack, buyer: User, ticket_type_id: str, quantity: int
) -> dict[str, Any]:
    order = await awaiting_payment(api, buyer, ticket_type_id, quantity=quantity)
    await pay_at_stripe(stack, order["payment_intent_id"])
    await wait_for_status(api, buyer, order["id"], "ORDER_STATUS_PAID")
    return order


async def test_a_payment_whose_webhook_was_missed_is_paid_by_the_reconciler(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"], quantity=2)
    await pay_unseen(stack, order["payment_intent_id"])
    assert (await order_row(db, order["id"]))["status"] == "awaiting_payment"

    code, output = await run_reconcile(stack, "--older-than", "0")
    assert code == 0, output
    assert f"order {order['id']}: paid" in output
    paid = await wait_for_status(api, buyer, order["id"], "ORDER_STATUS_PAID", within_s=0)
    assert paid["confirmation_code"]
    assert [t["status"] for t in await order_tickets(db, order["id"])] == ["valid", "valid"]

    # Nothing is left for the next run.
    code, output = await run_reconcile(stack, "--older-than", "0")
    assert code == 0 and order["id"] not in output, output


async def test_a_young_order_is_left_to_its_webhook(api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    await pay_unseen(stack, order["payment_intent_id"])
    code, output = await run_reconcile(stack)  # by default only what is 5 minutes old
    assert code == 0 and order["id"] not in output, output
    assert (await order_row(db, order["id"]))["status"] == "awaiting_payment"
    code, output = await run_reconcile(stack, "--older-than", "0")
    assert f"order {order['id']}: paid" in output, output


async def test_a_missed_payment_for_a_ticket_sold_meanwhile_is_refunded_by_the_reconciler(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner, late, quick = await create_user(db), await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=1)
    order = await awaiting_payment(api, late, ticket_type["id"])
    await expire_hold(db, order["id"])
    theirs = await awaiting_payment(api, quick, ticket_type["id"])
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(theirs)))).status_code == 200
    await pay_unseen(stack, order["payment_intent_id"])

    code, output = await run_reconcile(stack, "--older-than", "0")
    assert code == 0 and f"order {order['id']}: refunded" in output, output
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [int(order["total_minor"])]
    assert [r["status"] for r in await order_refunds(db, order["id"])] == ["succeeded"]
    assert await order_tickets(db, order["id"]) == []


async def crash_after_recording_a_refund(db: asyncpg.Pool, order_id: str) -> uuid.UUID:
    """What the refund's transaction commits, without the call to Stripe after it (the process died)."""
    refund_id: uuid.UUID = await db.fetchval(
        "select localplus_private.refund_tickets($1, '{}', 'crash', null, false)", uuid.UUID(order_id)
    )
    return refund_id


async def test_a_refund_left_pending_is_sent_once_stripe_can_be_reached(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=30_000, inventory=5)
    order = await paid_order(api, stack, buyer, ticket_type["id"], quantity=2)
    refund_id = await crash_after_recording_a_refund(db, order["id"])

    # Stripe unreachable: the run says so, and the refund stays pending.
    code, output = await run_reconcile(stack, "--older-than", "0", stripe_api_base=f"http://127.0.0.1:{free_port()}")
    assert code == 0, output
    assert f"refund {refund_id}: not sent, still pending" in output
    assert [r["status"] for r in await order_refunds(db, order["id"])] == ["pending"]

    code, output = await run_reconcile(stack, "--older-than", "0")
    assert code == 0 and f"refund {refund_id}: sent to Stripe as re_" in output, output
    [refund] = await order_refunds(db, order["id"])
    assert refund["status"] == "succeeded" and refund["stripe_refund_id"].startswith("re_")
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [60_000]

    code, output = await run_reconcile(stack, "--older-than", "0")
    assert str(refund_id) not in output, output
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [60_000]


async def test_a_refund_made_at_stripe_just_before_a_crash_is_recorded_not_repeated(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=30_000, inventory=5)
    order = await paid_order(api, stack, buyer, ticket_type["id"], quantity=1)
    refund_id = await crash_after_recording_a_refund(db, order["id"])
    async with localstripe(stack) as stripe:
        made = await stripe.post(
            "/v1/refunds",
            data={
                "payment_intent": order["payment_intent_id"],
                "amount": 30_000,
                "metadata[refund_id]": str(refund_id),
            },
        )
    assert made.status_code == 200, made.text

    code, output = await run_reconcile(stack, "--older-than", "0")
    assert code == 0 and f"refund {refund_id}: sent to Stripe as {made.json()['id']}" in output, output
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [30_000]


async def test_a_refund_stripe_refuses_is_recorded_and_sent_later(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    """Stripe's refusal (localstripe's, for a PaymentIntent it has not taken the money of yet) does not
    undo the refund or fail the request: the tickets are void at once, the refund waits."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=10_000, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(order)))).status_code == 200
    refunded = await api.post(f"/api/orders/{order['id']}:refund", json={"reason": "x"}, headers=owner.headers)
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["order"]["status"] == "ORDER_STATUS_REFUNDED"
    assert [t["status"] for t in refunded.json()["tickets"]] == ["TICKET_STATUS_VOID"]
    [refund] = await order_refunds(db, order["id"])
    assert refund["status"] == "pending" and refund["stripe_refund_id"] is None

    await pay_at_stripe(stack, order["payment_intent_id"])
    code, output = await run_reconcile(stack, "--older-than", "0")
    assert code == 0 and f"refund {refund['id']}: sent to Stripe" in output, output
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [10_000]
