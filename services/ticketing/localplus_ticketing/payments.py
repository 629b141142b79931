"""What Stripe tells us, and what we tell Stripe after the fact: webhooks, refunds, reconciliation.

Each Stripe event is processed exactly once: its id goes into `stripe_events` in the transaction of
its effect, so a repeated (or concurrent) delivery of the same event finds the row and does nothing.
Events may arrive in any order; each handler acts on the order's state as it is, under the order's
lock (a refund before the payment's success closes the order, so the success issues nothing; a
success after the hold expired pays if the tickets are still there and is refunded otherwise; a
second payment of an order already paid is refunded). Money going back out (refunds) is recorded as
a pending `refunds` row in the same transaction and sent to Stripe after commit with the row's id as
idempotency key; the reconciler sends what a crash or an unreachable Stripe left pending."""

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from localplus_common.auth import SERVER
from localplus_common.db import Connection, Database
from localplus_common.errors import ApiError
from localplus_common.telemetry import TICKETS_SOLD, WEBHOOKS
from localplus_ticketing import promotions
from localplus_ticketing.codes import TicketSigner
from localplus_ticketing.orders import pay
from localplus_ticketing.payment_provider import PaymentProvider

log = logging.getLogger(__name__)
# Older than that, a payment nobody finished is not going to be: the reconciler stops asking Stripe.
RECONCILE_WINDOW = timedelta(days=7)
# The namespace of _lock_payment's advisory locks (the reservations' is 20261210).
PAYMENT_LOCKS = 20261224


@dataclass(frozen=True)
class Applied:
    """What a payment's event did, for after its commit: the refunds to send to Stripe, the tickets issued."""

    refunds: list[UUID] = field(default_factory=list)
    tickets: int = 0


async def handle_webhook(
    db: Database, payments: PaymentProvider, signer: TicketSigner, payload: bytes, signature: str
) -> None:
    event = payments.verified_event(payload, signature)
    promotion_id = _promotion_of(event)
    if promotion_id is not None:
        if await db.run(lambda conn: _apply_promotion(conn, event, promotion_id), SERVER):
            await promotions.settle_refund(db, payments, promotion_id)
        WEBHOOKS.labels(event.get("type", "")).inc()
        return
    # By key, and a payment's success pays the order: generic plans, as for orders.
    applied = await db.run(lambda conn: _apply(conn, signer, event), SERVER, generic_plans=True)
    WEBHOOKS.labels(event.get("type", "")).inc()
    TICKETS_SOLD.labels("stripe").inc(applied.tickets)
    for refund_id in applied.refunds:
        await settle_refund(db, payments, refund_id)


def _promotion_of(event: dict[str, Any]) -> UUID | None:
    """The promotion a PaymentIntent's event is for (its metadata names one), else None."""
    subject = event.get("data", {}).get("object", {})
    named = (subject.get("metadata") or {}).get("promotion_id") if isinstance(subject, dict) else None
    try:
        return UUID(str(named)) if named else None
    except ValueError:
        return None


async def _first_delivery(conn: Connection, event: dict[str, Any], subject: dict[str, Any]) -> bool:
    """Records the event; False if it was processed before (Stripe repeats deliveries)."""
    first = await conn.fetchval(
        "insert into public.stripe_events (id, type, object_id) values ($1, $2, $3) on conflict (id) do nothing "
        "returning id",
        event["id"],
        event.get("type", ""),
        subject.get("id"),
    )
    return first is not None


async def _apply_promotion(conn: Connection, event: dict[str, Any], promotion_id: UUID) -> bool:
    """A promotion's payment event, once (like orders'); answers whether a refund is to be sent."""
    subject: dict[str, Any] = event["data"]["object"]
    if not await _first_delivery(conn, event, subject) or event.get("type") != "payment_intent.succeeded":
        return False
    amount = int(subject.get("amount_received") or subject.get("amount") or 0)
    return await promotions.paid(conn, promotion_id, subject.get("id", ""), amount)


async def _apply(conn: Connection, signer: TicketSigner, event: dict[str, Any]) -> Applied:
    """The event's effect, once (a repeat delivery applies nothing)."""
    subject: dict[str, Any] = event.get("data", {}).get("object", {})
    if not await _first_delivery(conn, event, subject):
        return Applied()  # processed before
    match event.get("type"):
        case "payment_intent.succeeded":
            amount = subject.get("amount_received") or subject.get("amount")
            order_id = await _order_of(conn, subject)
            return await _paid(conn, signer, order_id, subject["id"], amount, subject.get("currency"))
        case "checkout.session.completed" if subject.get("payment_status") == "paid":
            order_id = await _order_of(conn, subject)
            intent_id = subject.get("payment_intent") or ""
            return await _paid(conn, signer, order_id, intent_id, subject.get("amount_total"), subject.get("currency"))
        case "payment_intent.canceled":
            await _payment_ended(conn, await _order_of(conn, subject), subject["id"], "")
        case "checkout.session.expired":
            await _payment_ended(
                conn, await _order_of(conn, subject), subject.get("payment_intent") or "", subject["id"]
            )
        case "charge.refunded":
            payment_intent_id = subject.get("payment_intent") or ""
            await _lock_payment(conn, payment_intent_id)
            refunded = int(subject.get("amount_refunded") or 0)
            await _refunded_at_stripe(conn, payment_intent_id, refunded, subject.get("amount"))
        case "charge.dispute.created":
            await conn.execute(
                "update public.orders set disputed_at = coalesce(disputed_at, now()), updated_at = now() "
                "where payment_intent_id = $1",
                subject.get("payment_intent"),
            )
    return Applied()


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


async def _paid(
    conn: Connection,
    signer: TicketSigner,
    order_id: UUID | None,
    payment_intent_id: str,
    amount: int | None,
    currency: str | None,
) -> Applied:
    """A payment of `amount` in `currency` by `payment_intent_id` succeeded."""
    if order_id is None:
        return Applied()  # not one of ours
    await _lock_payment(conn, payment_intent_id)
    order = await conn.fetchrow("select total_minor, currency from public.orders where id = $1 for update", order_id)
    if order is None:
        return Applied()  # gone with its event meanwhile
    if amount is None or int(amount) != order["total_minor"] or (currency or "").upper() != order["currency"]:
        # Not what the order costs: it pays nothing and goes back whole; the order stays as it was.
        reason = f"paid {amount} {(currency or '?').upper()} for an order of {order['total_minor']} {order['currency']}"
        log.error("order %s: %s by %s; refunding that payment", order_id, reason, payment_intent_id or "?")
        return await _refund_whole(conn, order_id, payment_intent_id, int(amount or 0), reason)
    # Also when the process died between creating the PaymentIntent and recording it.
    recorded = await conn.fetchval(
        "update public.orders set payment_intent_id = coalesce(payment_intent_id, nullif($2, '')) where id = $1 "
        "returning payment_intent_id",
        order_id,
        payment_intent_id,
    )
    if payment_intent_id and payment_intent_id == recorded:
        await _apply_refund_that_came_first(conn, payment_intent_id)
    payment = await pay(conn, signer, order_id)
    outcome = payment.outcome
    if outcome == "paid":
        # Part of it was refunded at Stripe before this success reached us (close_refunded_order).
        await conn.execute(
            "update public.orders set status = 'partially_refunded' where id = $1 and refunded_minor > 0", order_id
        )
    if not payment_intent_id or payment_intent_id == recorded:
        if outcome in ("sold_out", "cancelled"):
            reason = "sold out after the hold expired" if outcome == "sold_out" else "paid after it was cancelled"
            refund_id = await conn.fetchval("select localplus_private.refund_payment($1, $2)", order_id, reason)
            log.info("order %s paid but %s: refunding", order_id, reason)
            return Applied([refund_id] if refund_id is not None else [])
        # Paid now, paid before by this payment, or refunded before its success arrived.
        return Applied(tickets=payment.tickets)
    if outcome == "paid":
        # Paid by another payment than the one recorded (e.g. the web's Checkout Session while the app's
        # PaymentIntent is open): the order's refunds go to the payment that holds its money.
        await conn.execute("update public.orders set payment_intent_id = $2 where id = $1", order_id, payment_intent_id)
        return Applied(tickets=payment.tickets)
    log.info("order %s paid again by %s: refunding that payment", order_id, payment_intent_id)
    return await _refund_whole(conn, order_id, payment_intent_id, int(amount), "a second payment of this order")


async def _refund_whole(conn: Connection, order_id: UUID, payment_intent_id: str, amount: int, reason: str) -> Applied:
    """A payment that is not the order's money goes back whole, to that payment, once however many
    events (a PaymentIntent's and its Checkout Session's) report it. The order's lock is held."""
    if not payment_intent_id or amount <= 0:
        return Applied()  # nothing Stripe could refund
    refund_id: UUID | None = await conn.fetchval(
        """
        insert into public.refunds (order_id, amount_minor, reason, status, payment_intent_id)
        select $1, $2, $3, 'pending', $4
         where not exists (select 1 from public.refunds where order_id = $1 and payment_intent_id = $4)
        returning id
        """,
        order_id,
        amount,
        reason,
        payment_intent_id,
    )
    return Applied([refund_id] if refund_id is not None else [])


async def _payment_ended(
    conn: Connection, order_id: UUID | None, payment_intent_id: str, checkout_session_id: str
) -> None:
    """A PaymentIntent cancelled or a Checkout Session expired: the order is given up (its holds
    released at once), unless the buyer still has another way to pay it open."""
    if order_id is None:
        return
    other_open = await conn.fetchval(
        "select coalesce(payment_intent_id, $2) <> $2 or coalesce(checkout_session_id, $3) <> $3 "
        "from public.orders where id = $1 for update",
        order_id,
        payment_intent_id,
        checkout_session_id,
    )
    if not other_open:
        await conn.execute("select localplus_private.cancel_order($1)", order_id)


async def _lock_payment(conn: Connection, payment_intent_id: str) -> None:
    """Until commit, no other event of this PaymentIntent's success or refund is processed. An order
    names a Checkout Session's PaymentIntent only once its success is processed, so the order's lock
    cannot order a refund's event against that success: this lock does."""
    if payment_intent_id:
        await conn.execute("select pg_advisory_xact_lock($1, hashtext($2))", PAYMENT_LOCKS, payment_intent_id)


async def _apply_refund_that_came_first(conn: Connection, payment_intent_id: str) -> None:
    """A refund at Stripe whose event arrived before any order named its PaymentIntent, applied now
    that the order does (the payment's lock is held)."""
    kept = await conn.fetchrow(
        "delete from public.stripe_refunds_awaiting_order where payment_intent_id = $1 "
        "returning amount_refunded, amount",
        payment_intent_id,
    )
    if kept is not None:
        await _refunded_at_stripe(conn, payment_intent_id, kept["amount_refunded"], kept["amount"])


async def _refunded_at_stripe(
    conn: Connection, payment_intent_id: str, refunded_at_stripe: int, charged: int | None
) -> None:
    """`refunded_at_stripe` (Stripe's running total) of a charge of `charged` refunded at Stripe: our
    refund (already recorded), or one made there (the dashboard). The payment's lock is held."""
    # The order's lock: two refunds' events (each with Stripe's running total) or a refund's and the
    # payment's success, processed at once, must each see what the other recorded.
    order = await conn.fetchrow(
        "select id, status, total_minor from public.orders where payment_intent_id = $1 for update",
        payment_intent_id,
    )
    if order is None:
        if payment_intent_id:
            # Its order may not know it yet (a Checkout Session's success not processed yet): kept until
            # a success names it (_apply_refund_that_came_first). Stripe's totals only grow.
            await conn.execute(
                """
                insert into public.stripe_refunds_awaiting_order as kept (payment_intent_id, amount_refunded, amount)
                values ($1, $2, $3)
                on conflict (payment_intent_id) do update
                   set amount_refunded = greatest(kept.amount_refunded, excluded.amount_refunded),
                       amount = coalesce(excluded.amount, kept.amount)
                """,
                payment_intent_id,
                refunded_at_stripe,
                charged,
            )
        return
    # Our refund of a payment that was not the order's money (_refund_whole): the order is as it was.
    not_the_orders = await conn.fetchval(
        "select coalesce(sum(amount_minor), 0) from public.refunds where order_id = $1 and payment_intent_id = $2",
        order["id"],
        payment_intent_id,
    )
    if not_the_orders and refunded_at_stripe <= not_the_orders:
        return
    if order["status"] not in ("paid", "partially_refunded", "refunded"):
        await conn.execute("select localplus_private.close_refunded_order($1, $2)", order["id"], refunded_at_stripe)
        return
    ours = await conn.fetchval(
        "select coalesce(sum(amount_minor), 0) from public.refunds where order_id = $1 and payment_intent_id is null",
        order["id"],
    )
    if refunded_at_stripe <= ours:
        return
    if refunded_at_stripe >= int(charged or order["total_minor"]):
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


async def settle_refund(db: Database, payments: PaymentProvider, refund_id: UUID) -> str | None:
    """Send a pending refund to Stripe (its id is the idempotency key) and record that it went.
    Answers Stripe's refund id, or None when it was not pending or could not be sent (it stays
    pending for the reconciler: the request that recorded it has succeeded all the same)."""
    refund = await db.run(
        lambda conn: conn.fetchrow(
            "select r.amount_minor, coalesce(r.payment_intent_id, o.payment_intent_id) as payment_intent_id "
            "from public.refunds r join public.orders o on o.id = r.order_id where r.id = $1 and r.status = 'pending'",
            refund_id,
        ),
        SERVER,
    )
    if refund is None:
        return None
    if not refund["payment_intent_id"]:
        log.error("refund %s has no payment to refund", refund_id)
        return None
    try:
        stripe_refund_id = await payments.refund(refund_id, refund["payment_intent_id"], refund["amount_minor"])
    except ApiError:
        log.warning("refund %s not sent to Stripe; it stays pending for the reconciler", refund_id)
        return None
    await db.run(
        lambda conn: conn.execute(
            "update public.refunds set status = 'succeeded', stripe_refund_id = $2, updated_at = now() "
            "where id = $1 and status = 'pending'",
            refund_id,
            stripe_refund_id,
        ),
        SERVER,
    )
    return stripe_refund_id


async def expire_orders(db: Database, payments: PaymentProvider) -> int:
    """Expire the unpaid orders whose hold ran out (their tickets go back on sale), then cancel their
    PaymentIntents at Stripe so that nobody pays for them late; answers how many expired. The cancels
    are best effort, after the commit: a payment that gets through anyway, or whose cancel was lost
    with this process, is settled by its webhook (_paid)."""
    expired = await db.run(
        lambda conn: conn.fetch("select order_id, payment_intent_id from localplus_private.expire_due_orders()"), SERVER
    )
    for order in expired:
        if order["payment_intent_id"]:
            await payments.cancel_payment_intent(order["payment_intent_id"])
    return len(expired)


@dataclass(frozen=True)
class Settled:
    """One thing the reconciler settled, or tried to: a refund or an order, and what became of it."""

    kind: str  # "refund" | "order"
    id: UUID
    outcome: str
    failed: bool = False


async def reconcile(
    db: Database, payments: PaymentProvider, signer: TicketSigner, older_than: timedelta
) -> list[Settled]:
    """Settle from Stripe's own state what missed webhooks and crashes left open, older than
    `older_than` (younger ones may still be on their way): pending refunds are sent, and orders whose
    PaymentIntent succeeded (or was cancelled) at Stripe are paid (or given up) as its webhook would
    have; refunds kept for a PaymentIntent no order named within RECONCILE_WINDOW are dropped.
    Answers what changed and what could not be done (retried on the next run)."""
    settled: list[Settled] = []
    pending = await db.run(
        lambda conn: conn.fetch(
            "select id from public.refunds where status = 'pending' and created_at <= now() - $1::interval "
            "order by created_at",
            older_than,
        ),
        SERVER,
    )
    for refund in pending:
        stripe_refund_id = await settle_refund(db, payments, refund["id"])
        if stripe_refund_id is None:
            settled.append(Settled("refund", refund["id"], "not sent, still pending", failed=True))
        else:
            settled.append(Settled("refund", refund["id"], f"sent to Stripe as {stripe_refund_id}"))
    open_payments = await db.run(
        lambda conn: conn.fetch(
            "select id, payment_intent_id from public.orders where payment_intent_id is not null "
            "and status in ('reserved', 'awaiting_payment', 'expired', 'cancelled') "
            "and updated_at <= now() - $1::interval and updated_at > now() - $2::interval order by updated_at",
            older_than,
            RECONCILE_WINDOW,
        ),
        SERVER,
    )
    for order in open_payments:
        try:
            outcome = await _settle_from_stripe(db, payments, signer, order["id"], order["payment_intent_id"])
        except ApiError as error:
            settled.append(Settled("order", order["id"], f"not settled: {error.message}", failed=True))
            continue
        if outcome is not None:
            settled.append(Settled("order", order["id"], outcome))
    # Refunds kept for a PaymentIntent no order named within the window are not ours (another product
    # on the same Stripe account): Stripe retries a success for three days at most.
    await db.run(
        lambda conn: conn.execute(
            "delete from public.stripe_refunds_awaiting_order where received_at <= now() - $1::interval",
            RECONCILE_WINDOW,
        ),
        SERVER,
    )
    return settled


async def _settle_from_stripe(
    db: Database, payments: PaymentProvider, signer: TicketSigner, order_id: UUID, payment_intent_id: str
) -> str | None:
    """Settle one order as its missed webhook would have; its new status, None when nothing changed."""
    intent = await payments.payment_intent_state(payment_intent_id)

    async def settle(conn: Connection) -> tuple[str, str, Applied]:
        before = await conn.fetchval("select status from public.orders where id = $1 for update", order_id)
        applied = Applied()
        if intent.status == "succeeded":
            applied = await _paid(conn, signer, order_id, payment_intent_id, intent.amount, intent.currency)
        elif intent.status == "canceled":
            await conn.execute("select localplus_private.cancel_order($1)", order_id)
        after = await conn.fetchval("select status from public.orders where id = $1", order_id)
        return before, after, applied

    before, after, applied = await db.run(settle, SERVER)
    TICKETS_SOLD.labels("stripe").inc(applied.tickets)
    for refund_id in applied.refunds:
        await settle_refund(db, payments, refund_id)
    return after if after != before else None
