"""What Stripe tells us, and what we tell Stripe after the fact: webhooks, refunds, reconciliation.

Each Stripe event is processed exactly once: its id goes into `stripe_events` in the transaction of
its effect, so a repeated (or concurrent) delivery of the same event finds the row and does nothing.
Events may arrive in any order; each handler acts on the order's state as it is (a refund before the
payment's success closes the order, so the success issues nothing; a success after the hold expired
pays if the tickets are still there and is refunded otherwise). Money going back out (refunds) is
recorded as a pending `refunds` row in the same transaction and sent to Stripe after commit with the
row's id as idempotency key; the reconciler retries what a crash left pending."""

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

from localplus_common.auth import SERVER
from localplus_common.db import Connection, Database
from localplus_ticketing.codes import TicketSigner
from localplus_ticketing.orders import pay
from localplus_ticketing.payment_provider import PaymentProvider

log = logging.getLogger(__name__)


async def handle_webhook(
    db: Database, payments: PaymentProvider, signer: TicketSigner, payload: bytes, signature: str
) -> None:
    event = payments.verified_event(payload, signature)
    refunds = await db.run(lambda conn: _apply(conn, signer, event), SERVER)
    for refund_id in refunds:
        await settle_refund(db, payments, refund_id)


async def _apply(conn: Connection, signer: TicketSigner, event: dict[str, Any]) -> list[UUID]:
    """The event's effect, once; answers the refunds to send to Stripe after commit."""
    subject: dict[str, Any] = event.get("data", {}).get("object", {})
    first = await conn.fetchval(
        "insert into public.stripe_events (id, type, object_id) values ($1, $2, $3) on conflict (id) do nothing "
        "returning id",
        event["id"],
        event.get("type", ""),
        subject.get("id"),
    )
    if first is None:
        return []  # processed before
    match event.get("type"):
        case "payment_intent.succeeded":
            return await _paid(conn, signer, await _order_of(conn, subject), subject["id"])
        case "checkout.session.completed" if subject.get("payment_status") == "paid":
            return await _paid(conn, signer, await _order_of(conn, subject), subject.get("payment_intent") or "")
        case "payment_intent.canceled" | "checkout.session.expired":
            order_id = await _order_of(conn, subject)
            if order_id is not None:
                await conn.execute("select localplus_private.cancel_order($1)", order_id)
        case "charge.refunded":
            await _refunded_at_stripe(conn, subject)
        case "charge.dispute.created":
            await conn.execute(
                "update public.orders set disputed_at = coalesce(disputed_at, now()), updated_at = now() "
                "where payment_intent_id = $1",
                subject.get("payment_intent"),
            )
    return []


async def _order_of(conn: Connection, subject: dict[str, Any]) -> UUID | None:
    """Our order a PaymentIntent or Checkout Session is for: by the metadata we gave it, else by its id."""
    named = (subject.get("metadata") or {}).get("order_id") or subject.get("client_reference_id")
    if named:
        try:
            order_id = UUID(str(named))
        except ValueError:
            return None
        exists = await conn.fetchval("select id from public.orders where id = $1", order_id)
        return order_id if exists else None
    found: UUID | None = await conn.fetchval(
        "select id from public.orders where payment_intent_id = $1 or checkout_session_id = $1", subject.get("id")
    )
    return found


async def _paid(conn: Connection, signer: TicketSigner, order_id: UUID | None, payment_intent_id: str) -> list[UUID]:
    if order_id is None:
        return []  # not one of ours
    if payment_intent_id:
        # Also when the process died between creating the PaymentIntent and recording it.
        await conn.execute(
            "update public.orders set payment_intent_id = coalesce(payment_intent_id, $2) where id = $1",
            order_id,
            payment_intent_id,
        )
    outcome = await pay(conn, signer, order_id)
    if outcome in ("sold_out", "cancelled"):
        reason = "sold out after the hold expired" if outcome == "sold_out" else "paid after it was cancelled"
        refund_id = await conn.fetchval("select localplus_private.refund_payment($1, $2)", order_id, reason)
        log.info("order %s paid but %s: refunding", order_id, reason)
        return [refund_id] if refund_id is not None else []
    return []


async def _refunded_at_stripe(conn: Connection, charge: dict[str, Any]) -> None:
    """A charge refunded at Stripe: ours (already recorded), or made there (the dashboard)."""
    order = await conn.fetchrow(
        "select id, status, total_minor from public.orders where payment_intent_id = $1", charge.get("payment_intent")
    )
    if order is None:
        return
    refunded_at_stripe = int(charge.get("amount_refunded") or 0)
    if order["status"] not in ("paid", "partially_refunded", "refunded"):
        await conn.execute("select localplus_private.close_refunded_order($1, $2)", order["id"], refunded_at_stripe)
        return
    ours = await conn.fetchval(
        "select coalesce(sum(amount_minor), 0) from public.refunds where order_id = $1", order["id"]
    )
    if refunded_at_stripe <= ours:
        return
    if refunded_at_stripe >= int(charge.get("amount") or order["total_minor"]):
        await conn.execute(
            "select localplus_private.refund_tickets($1, '{}', 'refunded at Stripe', null, true)", order["id"]
        )
    else:
        # A partial refund made at Stripe does not say which tickets: the money is recorded, the tickets stay.
        await conn.execute(
            """
            with recorded as (
              insert into public.refunds (order_id, amount_minor, reason, status)
              values ($1, $2, 'refunded at Stripe', 'succeeded')
            )
            update public.orders set refunded_minor = least(total_minor, refunded_minor + $2),
                   status = 'partially_refunded', updated_at = now()
             where id = $1
            """,
            order["id"],
            refunded_at_stripe - ours,
        )


async def settle_refund(db: Database, payments: PaymentProvider, refund_id: UUID) -> None:
    """Send a pending refund to Stripe (its id is the idempotency key) and record that it went."""
    refund = await db.run(
        lambda conn: conn.fetchrow(
            "select r.id, r.amount_minor, o.payment_intent_id from public.refunds r "
            "join public.orders o on o.id = r.order_id where r.id = $1 and r.status = 'pending'",
            refund_id,
        ),
        SERVER,
    )
    if refund is None:
        return
    if not refund["payment_intent_id"]:
        log.error("refund %s has no payment to refund", refund_id)
        return
    stripe_refund_id = await payments.refund(refund_id, refund["payment_intent_id"], refund["amount_minor"])
    await db.run(
        lambda conn: conn.execute(
            "update public.refunds set status = 'succeeded', stripe_refund_id = $2, updated_at = now() where id = $1",
            refund_id,
            stripe_refund_id,
        ),
        SERVER,
    )


async def expire_orders(db: Database) -> int:
    expired: int = await db.run(lambda conn: conn.fetchval("select localplus_private.expire_orders()"), SERVER)
    return expired


async def reconcile(db: Database, payments: PaymentProvider, signer: TicketSigner, settled_after: timedelta) -> int:
    """Settle from Stripe's own state what missed webhooks left open: pending refunds, and orders with
    a payment started more than `settled_after` ago and not paid. Answers how many it settled."""
    pending = await db.run(
        lambda conn: conn.fetch(
            "select id from public.refunds where status = 'pending' and created_at <= now() - $1::interval",
            settled_after,
        ),
        SERVER,
    )
    for refund in pending:
        await settle_refund(db, payments, refund["id"])
    open_payments = await db.run(
        lambda conn: conn.fetch(
            "select id, payment_intent_id from public.orders where payment_intent_id is not null "
            "and status in ('awaiting_payment', 'expired', 'cancelled') and updated_at <= now() - $1::interval "
            # Older than that, a payment nobody finished is not going to be.
            "and updated_at > now() - interval '7 days'",
            settled_after,
        ),
        SERVER,
    )
    settled = len(pending)
    for order in open_payments:
        if await _settle_from_stripe(db, payments, signer, order["id"], order["payment_intent_id"]):
            settled += 1
    return settled


async def _settle_from_stripe(
    db: Database, payments: PaymentProvider, signer: TicketSigner, order_id: UUID, payment_intent_id: str
) -> bool:
    """Settle one order as its missed webhook would have; whether Stripe's state settled it."""
    status = await payments.payment_intent_status(payment_intent_id)
    if status == "succeeded":
        for refund_id in await db.run(lambda conn: _paid(conn, signer, order_id, payment_intent_id), SERVER):
            await settle_refund(db, payments, refund_id)
        return True
    if status == "canceled":
        await db.run(lambda conn: conn.execute("select localplus_private.cancel_order($1)", order_id), SERVER)
        return True
    return False
