"""Stripe's webhook through the gateway (`POST /api/webhooks/stripe`), with events built here and
signed as Stripe signs them (localstripe sends only some kinds, and only when it does something):
forged and replayed deliveries are refused; every event is processed once however often and however
concurrently it arrives; events arriving in any order leave the order right (a refund before the
payment's success, a success after the hold expired, a second payment of one order); and the real
path, a PaymentIntent confirmed at localstripe and its own webhook.

localstripe has no Checkout Sessions (its API answers 404), so `checkout.session.*` events are built
here as Stripe documents them."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from localplus_common.db import Database
from localplus_dev.stack import Stack
from localplus_ticketing import payments
from localplus_ticketing.payment_provider import PaymentProvider
from localplus_ticketing.settings import TicketingSettings
from tests.stripe_support import (
    WEBHOOK,
    awaiting_payment,
    charge,
    checkout_session,
    deliver,
    expire_hold,
    localstripe,
    order_refunds,
    order_row,
    order_tickets,
    payment_intent,
    refunded_at_stripe,
    run_reconcile,
    signed,
    stripe_event,
)
from tests.support import create_user, lock_waiters
from tests.ticketing_support import event_with_tickets, pay_at_stripe, reserve, wait_for_status


async def status_of(db: asyncpg.Pool, order_id: str) -> str:
    return str((await order_row(db, order_id))["status"])


async def ticket_type_row(db: asyncpg.Pool, ticket_type_id: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "select sold, inventory - sold - localplus_private.tickets_held(id) as available "
        "from public.ticket_types, localplus_private.tickets_sold(id) as sold where id = $1",
        uuid.UUID(ticket_type_id),
    )
    assert row is not None
    return row


async def events_recorded(db: asyncpg.Pool, event_id: str) -> int:
    count: int = await db.fetchval("select count(*) from public.stripe_events where id = $1", event_id)
    return count


async def test_forged_altered_or_unsigned_deliveries_are_refused_and_change_nothing(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    event = stripe_event("payment_intent.succeeded", payment_intent(order))
    body = json.dumps(event).encode()

    forged = await api.post(WEBHOOK, content=body, headers=signed(body, secret="whsec_someone_else"))
    altered = await api.post(WEBHOOK, content=body.replace(b"succeeded", b"succeeded "), headers=signed(body))
    unsigned = await api.post(WEBHOOK, content=body, headers={"content-type": "application/json"})
    garbage = await api.post(WEBHOOK, content=b"not json", headers=signed(b"not json"))
    for refused in (forged, altered, unsigned):
        assert refused.status_code == 400, refused.text
        assert refused.json()["details"][0]["reason"] == "INVALID_ARGUMENT"
    assert garbage.status_code == 400, garbage.text
    assert await status_of(db, order["id"]) == "awaiting_payment"
    assert await order_tickets(db, order["id"]) == []
    assert await events_recorded(db, event["id"]) == 0

    # The same event, signed with the right secret, is accepted: only the signature was wrong.
    assert (await deliver(api, event)).status_code == 200
    assert await status_of(db, order["id"]) == "paid"


async def test_a_signed_body_that_is_no_stripe_event_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """The signature proves who sent a body, not that it is well formed: a signed body without the shape
    of a Stripe event is a 400, never a 500, and records nothing."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    event = stripe_event("payment_intent.succeeded", payment_intent(order))
    subject = event["data"]["object"]
    malformed: list[Any] = [
        [1, 2],
        "payment_intent.succeeded",
        {**event, "data": {"object": "oops"}},
        {**event, "data": []},
        {key: value for key, value in event.items() if key != "id"},
        {**event, "type": 7},
        {**event, "data": {"object": {key: value for key, value in subject.items() if key != "id"}}},
        {**event, "data": {"object": {**subject, "amount_received": "lots"}}},
        {**event, "data": {"object": {**subject, "amount": True}}},
        {**event, "data": {"object": {**subject, "metadata": ["order_id", order["id"]]}}},
        {**event, "data": {"object": {**subject, "currency": 764}}},
    ]
    for body in malformed:
        raw = json.dumps(body).encode()
        refused = await api.post(WEBHOOK, content=raw, headers=signed(raw))
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["details"][0]["reason"] == "INVALID_ARGUMENT", refused.text
    assert await status_of(db, order["id"]) == "awaiting_payment"
    assert await events_recorded(db, event["id"]) == 0
    assert (await deliver(api, event)).status_code == 200
    assert await status_of(db, order["id"]) == "paid"


async def test_a_delivery_signed_more_than_five_minutes_ago_is_a_replay(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    event = stripe_event("payment_intent.succeeded", payment_intent(order))
    stale = await deliver(api, event, at=int(event["created"]) - 301)
    assert stale.status_code == 400, stale.text
    assert await status_of(db, order["id"]) == "awaiting_payment"
    assert await events_recorded(db, event["id"]) == 0
    # Within Stripe's tolerance it is accepted.
    assert (await deliver(api, event, at=int(event["created"]) - 240)).status_code == 200
    assert await status_of(db, order["id"]) == "paid"


async def test_one_event_delivered_five_times_at_once_is_processed_once(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=10)
    order = await awaiting_payment(api, buyer, ticket_type["id"], quantity=3)
    event = stripe_event("payment_intent.succeeded", payment_intent(order))
    deliveries = await asyncio.gather(*(deliver(api, event) for _ in range(5)))
    assert [d.status_code for d in deliveries] == [200] * 5, [d.text for d in deliveries]
    assert await events_recorded(db, event["id"]) == 1
    assert len(await order_tickets(db, order["id"])) == 3
    assert (await ticket_type_row(db, ticket_type["id"]))["sold"] == 3
    # Other events for the same payment (Stripe sends several) change nothing more either.
    others = [stripe_event("payment_intent.succeeded", payment_intent(order)) for _ in range(5)]
    assert {d.status_code for d in await asyncio.gather(*(deliver(api, other) for other in others))} == {200}
    assert len(await order_tickets(db, order["id"])) == 3
    assert await order_refunds(db, order["id"]) == []


async def test_a_refund_arriving_before_the_payment_success_leaves_the_order_refunded_without_tickets(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=2)
    order = await awaiting_payment(api, buyer, ticket_type["id"], quantity=2)
    total = int(order["total_minor"])
    assert (await deliver(api, stripe_event("charge.refunded", charge(order, total)))).status_code == 200
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(order)))).status_code == 200
    row = await order_row(db, order["id"])
    assert row["status"] == "refunded" and row["refunded_minor"] == total and row["paid_at"] is None
    assert await order_tickets(db, order["id"]) == []
    assert dict(await ticket_type_row(db, ticket_type["id"])) == {"sold": 0, "available": 2}
    # Nothing to send back: Stripe refunded it already.
    assert await order_refunds(db, order["id"]) == []


async def test_a_partial_refund_arriving_before_the_payment_success_leaves_the_rest_paid(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """Stripe's running totals of 3,000 and then 5,000 refunded, both before the success: the payment
    still pays (tickets issued), the order partially refunded by 5,000, nothing sent back."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=2)
    order = await awaiting_payment(api, buyer, ticket_type["id"], quantity=2)
    total = int(order["total_minor"])
    assert total > 5_000
    for refunded in (3_000, 5_000):
        assert (await deliver(api, stripe_event("charge.refunded", charge(order, refunded)))).status_code == 200
    assert await status_of(db, order["id"]) == "awaiting_payment"
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(order)))).status_code == 200
    row = await order_row(db, order["id"])
    assert row["status"] == "partially_refunded" and row["refunded_minor"] == 5_000 and row["paid_at"] is not None
    assert [t["status"] for t in await order_tickets(db, order["id"])] == ["valid", "valid"]
    assert [(r["amount_minor"], r["status"]) for r in await order_refunds(db, order["id"])] == [
        (3_000, "succeeded"),
        (2_000, "succeeded"),
    ]
    # The rest refunded at Stripe later: the tickets go, and only what was left counts.
    assert (await deliver(api, stripe_event("charge.refunded", charge(order, total)))).status_code == 200
    row = await order_row(db, order["id"])
    assert row["status"] == "refunded" and row["refunded_minor"] == total
    assert {t["status"] for t in await order_tickets(db, order["id"])} == {"void"}


async def test_a_partial_refund_before_a_success_that_finds_the_tickets_gone_refunds_the_rest(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner, late, quick = await create_user(db), await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=1)
    order = await awaiting_payment(api, late, ticket_type["id"])
    total = int(order["total_minor"])
    assert (await deliver(api, stripe_event("charge.refunded", charge(order, 1_000)))).status_code == 200
    await expire_hold(db, order["id"])
    theirs = await awaiting_payment(api, quick, ticket_type["id"])
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(theirs)))).status_code == 200
    await pay_at_stripe(stack, order["payment_intent_id"])
    refunded = await wait_for_status(api, late, order["id"], "ORDER_STATUS_REFUNDED")
    assert refunded["refunded_minor"] == str(total)
    for _ in range(100):
        if await refunded_at_stripe(stack, order["payment_intent_id"]):
            break
        await asyncio.sleep(0.2)
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [total - 1_000]
    assert await order_tickets(db, order["id"]) == []


SESSION_ORDER_TOTAL = 10_000


async def _refunded_before_its_session_completed(
    api: httpx.AsyncClient, db: asyncpg.Pool, running_totals: list[int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An order of SESSION_ORDER_TOTAL paid by a Checkout Session whose refunds at Stripe (Stripe's
    running totals) are delivered before its `checkout.session.completed`: (the order, its ticket type)."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=SESSION_ORDER_TOTAL // 2, inventory=2)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=2)).json()
    assert int(order["total_minor"]) == SESSION_ORDER_TOTAL
    intent_id = f"pi_{uuid.uuid4().hex[:24]}"
    for refunded in running_totals:
        refund = stripe_event("charge.refunded", charge({**order, "payment_intent_id": intent_id}, refunded))
        assert (await deliver(api, refund)).status_code == 200
    assert await status_of(db, order["id"]) == "reserved"
    session = checkout_session(order, status="complete", payment_status="paid", payment_intent=intent_id)
    assert (await deliver(api, stripe_event("checkout.session.completed", session))).status_code == 200
    return order, ticket_type


async def test_a_refund_delivered_before_its_checkout_session_completed_leaves_the_order_refunded(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """The session's PaymentIntent is unknown until `checkout.session.completed`: the refund that names
    it first is kept, not dropped (which issued tickets for money given back)."""
    order, ticket_type = await _refunded_before_its_session_completed(api, db, [SESSION_ORDER_TOTAL])
    row = await order_row(db, order["id"])
    assert row["status"] == "refunded" and row["refunded_minor"] == SESSION_ORDER_TOTAL and row["paid_at"] is None
    assert await order_tickets(db, order["id"]) == []
    assert dict(await ticket_type_row(db, ticket_type["id"])) == {"sold": 0, "available": 2}
    assert await order_refunds(db, order["id"]) == []


async def test_partial_refunds_delivered_before_their_checkout_session_completed_leave_the_rest_paid(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """Stripe's running totals of 3,000 and then 5,000, both before the session's success: the payment
    still pays, its tickets are issued, and the order counts 5,000 refunded (nothing sent back)."""
    order, _ = await _refunded_before_its_session_completed(api, db, [3_000, 5_000])
    row = await order_row(db, order["id"])
    assert row["status"] == "partially_refunded" and row["refunded_minor"] == 5_000 and row["paid_at"] is not None
    assert [t["status"] for t in await order_tickets(db, order["id"])] == ["valid", "valid"]
    assert [(r["amount_minor"], r["status"]) for r in await order_refunds(db, order["id"])] == [(5_000, "succeeded")]


async def test_a_refund_delivered_while_its_checkout_session_s_success_is_processed_is_not_lost(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """The success has recorded the PaymentIntent on the order (not committed yet) and found no refund
    kept for it; the refund's event, processed meanwhile, finds no order naming it and keeps itself.
    Unless the two are ordered, the success commits tickets and the refund stays kept for good. The
    success is held up inside its payment by locking its ticket type's buckets, as a busy sale would."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=2)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=2)).json()
    total = int(order["total_minor"])
    intent_id = f"pi_{uuid.uuid4().hex[:24]}"
    session = checkout_session(order, status="complete", payment_status="paid", payment_intent=intent_id)
    refund = stripe_event("charge.refunded", charge({**order, "payment_intent_id": intent_id}, total))
    async with db.acquire() as busy_sale:
        holding = busy_sale.transaction()
        await holding.start()
        await busy_sale.execute(
            "select 1 from public.ticket_type_buckets where ticket_type_id = $1 for update",
            uuid.UUID(ticket_type["id"]),
        )
        paying = asyncio.ensure_future(deliver(api, stripe_event("checkout.session.completed", session)))
        if not await lock_waiters(db, query_like="%pay_order%"):
            raise AssertionError(f"the success never reached its payment: {(await paying).text}")
        refunding = asyncio.ensure_future(deliver(api, refund))
        await lock_waiters(db, query_like="%advisory%", seconds=2)  # until the refund waits for the success
        await holding.commit()
    assert (await paying).status_code == 200 and (await refunding).status_code == 200
    # The refund waited for the success, so it is a refund of a paid order: its tickets are void.
    row = await order_row(db, order["id"])
    assert row["status"] == "refunded" and row["refunded_minor"] == total
    assert {t["status"] for t in await order_tickets(db, order["id"])} <= {"void"}
    assert dict(await ticket_type_row(db, ticket_type["id"])) == {"sold": 0, "available": 2}


async def test_the_reconciler_drops_refunds_kept_for_a_payment_no_order_named_within_a_week(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    """A refund of a charge that is not ours (another product on the same Stripe account) is kept like
    one whose success is still on the way; the reconciler drops it once no success can come."""
    ours, strangers = f"pi_{uuid.uuid4().hex[:24]}", f"pi_{uuid.uuid4().hex[:24]}"
    for intent_id in (ours, strangers):
        refund = {
            "id": f"ch_{uuid.uuid4().hex[:24]}",
            "object": "charge",
            "amount": 100,
            "amount_refunded": 100,
            "currency": "thb",
            "payment_intent": intent_id,
            "status": "succeeded",
        }
        assert (await deliver(api, stripe_event("charge.refunded", refund))).status_code == 200
    await db.execute(
        "update public.stripe_refunds_awaiting_order set received_at = now() - interval '8 days' "
        "where payment_intent_id = $1",
        strangers,
    )
    code, output = await run_reconcile(stack)
    assert code == 0, output
    kept = await db.fetch(
        "select payment_intent_id from public.stripe_refunds_awaiting_order where payment_intent_id = any($1)",
        [ours, strangers],
    )
    assert [row["payment_intent_id"] for row in kept] == [ours]


async def test_a_success_after_the_hold_expired_pays_while_the_tickets_are_still_there(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=2)
    order = await awaiting_payment(api, buyer, ticket_type["id"], quantity=2)
    await expire_hold(db, order["id"])
    assert await status_of(db, order["id"]) == "expired"
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(order)))).status_code == 200
    assert await status_of(db, order["id"]) == "paid"
    assert len(await order_tickets(db, order["id"])) == 2
    assert dict(await ticket_type_row(db, ticket_type["id"])) == {"sold": 2, "available": 0}


async def test_a_success_after_the_hold_expired_and_the_last_ticket_went_is_refunded_at_stripe(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    """The real path: the late buyer pays at localstripe, whose own webhook finds the ticket gone."""
    owner, late, quick = await create_user(db), await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=1)
    order = await awaiting_payment(api, late, ticket_type["id"])
    await expire_hold(db, order["id"])
    theirs = await awaiting_payment(api, quick, ticket_type["id"])
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(theirs)))).status_code == 200
    assert await status_of(db, theirs["id"]) == "paid"

    await pay_at_stripe(stack, order["payment_intent_id"])
    refunded = await wait_for_status(api, late, order["id"], "ORDER_STATUS_REFUNDED")
    assert refunded["refunded_minor"] == order["total_minor"]
    assert await order_tickets(db, order["id"]) == []
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [int(order["total_minor"])]
    [refund] = await order_refunds(db, order["id"])
    assert refund["status"] == "succeeded" and refund["stripe_refund_id"].startswith("re_")
    assert dict(await ticket_type_row(db, ticket_type["id"])) == {"sold": 1, "available": 0}


async def test_a_cancelled_payment_or_an_expired_session_gives_the_order_up(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, buyer, web_buyer = await create_user(db), await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=2)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    reserved = (await reserve(api, web_buyer, ticket_type["id"])).json()
    assert (await ticket_type_row(db, ticket_type["id"]))["available"] == 0

    canceled = payment_intent(order, status="canceled")
    assert (await deliver(api, stripe_event("payment_intent.canceled", canceled))).status_code == 200
    expired = checkout_session(reserved, status="expired")
    assert (await deliver(api, stripe_event("checkout.session.expired", expired))).status_code == 200
    assert await status_of(db, order["id"]) == "cancelled"
    assert await status_of(db, reserved["id"]) == "cancelled"
    assert (await ticket_type_row(db, ticket_type["id"]))["available"] == 2


async def test_a_session_ending_leaves_the_order_payable_by_its_payment_intent(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """A buyer who started paying in the app as well as on the web keeps the order while one way is open."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=2)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    expired = checkout_session(order, status="expired")
    assert (await deliver(api, stripe_event("checkout.session.expired", expired))).status_code == 200
    assert await status_of(db, order["id"]) == "awaiting_payment"
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(order)))).status_code == 200
    assert await status_of(db, order["id"]) == "paid"


async def test_a_completed_checkout_session_pays_the_order_once(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=2)).json()
    unpaid = checkout_session(order, status="complete", payment_status="unpaid")
    assert (await deliver(api, stripe_event("checkout.session.completed", unpaid))).status_code == 200
    assert await status_of(db, order["id"]) == "reserved"

    intent_id = f"pi_{uuid.uuid4().hex[:24]}"
    session = checkout_session(order, status="complete", payment_status="paid", payment_intent=intent_id)
    assert (await deliver(api, stripe_event("checkout.session.completed", session))).status_code == 200
    row = await order_row(db, order["id"])
    assert row["status"] == "paid" and row["payment_intent_id"] == intent_id
    # The same payment's PaymentIntent event follows; it is the same money, not a second payment.
    paid_intent = payment_intent({**order, "payment_intent_id": intent_id})
    assert (await deliver(api, stripe_event("payment_intent.succeeded", paid_intent))).status_code == 200
    assert len(await order_tickets(db, order["id"])) == 2
    assert await order_refunds(db, order["id"]) == []


async def test_an_order_paid_twice_keeps_one_payment_and_refunds_the_other_at_stripe(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    """Paid on the web's Checkout Session, then in the app with its PaymentIntent (at localstripe)."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"], quantity=2)
    web_payment = f"pi_{uuid.uuid4().hex[:24]}"
    session = checkout_session(order, status="complete", payment_status="paid", payment_intent=web_payment)
    assert (await deliver(api, stripe_event("checkout.session.completed", session))).status_code == 200
    row = await order_row(db, order["id"])
    assert row["status"] == "paid" and row["payment_intent_id"] == web_payment

    await pay_at_stripe(stack, order["payment_intent_id"])
    for _ in range(100):
        refunds = await order_refunds(db, order["id"])
        if refunds and refunds[0]["status"] == "succeeded":
            break
        await asyncio.sleep(0.2)
    [refund] = refunds
    assert refund["payment_intent_id"] == order["payment_intent_id"] and refund["status"] == "succeeded"
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [int(order["total_minor"])]
    # The order keeps its tickets and the payment that bought them.
    row = await order_row(db, order["id"])
    assert row["status"] == "paid" and row["refunded_minor"] == 0 and row["payment_intent_id"] == web_payment
    assert [t["status"] for t in await order_tickets(db, order["id"])] == ["valid", "valid"]


async def test_a_payment_of_another_amount_or_currency_issues_nothing_and_goes_back_whole(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    """The real path: the order's PaymentIntent changed at localstripe before it was confirmed pays more
    than the order costs; built events say another currency, or less. None is the order's payment."""
    owner, buyer, other = await create_user(db), await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"], quantity=2)
    wrong = int(order["total_minor"]) + 500
    async with localstripe(stack) as stripe:
        changed = await stripe.post(f"/v1/payment_intents/{order['payment_intent_id']}", data={"amount": wrong})
        assert changed.status_code == 200, changed.text
    await pay_at_stripe(stack, order["payment_intent_id"])
    for _ in range(100):
        refunds = await order_refunds(db, order["id"])
        if refunds and refunds[0]["status"] == "succeeded":
            break
        await asyncio.sleep(0.2)
    [refund] = refunds
    assert refund["amount_minor"] == wrong and refund["payment_intent_id"] == order["payment_intent_id"]
    assert await refunded_at_stripe(stack, order["payment_intent_id"]) == [wrong]
    await asyncio.sleep(1)  # localstripe's charge.refunded for it, which must not close the order either
    row = await order_row(db, order["id"])
    assert row["status"] == "awaiting_payment" and row["paid_at"] is None and row["refunded_minor"] == 0
    assert await order_tickets(db, order["id"]) == []
    assert (await ticket_type_row(db, ticket_type["id"]))["sold"] == 0
    # The reconciler, asking Stripe about that succeeded PaymentIntent, does not pay the order either.
    code, output = await run_reconcile(stack, "--older-than", "0")
    assert code == 0, output
    assert await status_of(db, order["id"]) == "awaiting_payment" and len(await order_refunds(db, order["id"])) == 1

    # Payments made at Stripe for another order of ours, in another currency or of less: each goes back
    # once, however many events say it succeeded, and the right one still pays the order.
    theirs = await awaiting_payment(api, other, ticket_type["id"])
    for amount, currency in ((int(theirs["total_minor"]), "jpy"), (1, theirs["currency"].lower())):
        async with localstripe(stack) as stripe:
            created = await stripe.post(
                "/v1/payment_intents",
                data={"amount": amount, "currency": currency, "metadata[order_id]": theirs["id"]},
            )
        assert created.status_code == 200, created.text
        intent = created.json()
        await pay_at_stripe(stack, intent["id"])
        for _ in range(100):
            if [r["status"] for r in await order_refunds(db, theirs["id"])][-1:] == ["succeeded"]:
                break
            await asyncio.sleep(0.2)
        again = payment_intent(theirs, id=intent["id"], amount=amount, amount_received=amount, currency=currency)
        assert (await deliver(api, stripe_event("payment_intent.succeeded", again))).status_code == 200
    await asyncio.sleep(1)
    back = [(r["amount_minor"], r["status"]) for r in await order_refunds(db, theirs["id"])]
    assert back == [(int(theirs["total_minor"]), "succeeded"), (1, "succeeded")]
    assert await status_of(db, theirs["id"]) == "awaiting_payment" and await order_tickets(db, theirs["id"]) == []
    await pay_at_stripe(stack, theirs["payment_intent_id"])
    await wait_for_status(api, other, theirs["id"], "ORDER_STATUS_PAID")
    assert len(await order_tickets(db, theirs["id"])) == 1


async def test_a_dispute_is_recorded_on_the_order(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(order)))).status_code == 200
    dispute = {
        "id": f"dp_{uuid.uuid4().hex[:24]}",
        "object": "dispute",
        "amount": int(order["total_minor"]),
        "charge": f"ch_{uuid.uuid4().hex[:24]}",
        "payment_intent": order["payment_intent_id"],
        "reason": "fraudulent",
        "status": "needs_response",
    }
    assert (await deliver(api, stripe_event("charge.dispute.created", dispute))).status_code == 200
    row = await order_row(db, order["id"])
    assert row["disputed_at"] is not None and row["status"] == "paid"


async def test_partial_refunds_at_stripe_processed_at_once_record_stripe_s_total(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """Two refunds made in Stripe's dashboard: each `charge.refunded` carries the running total (100,
    then 300). Processed at once, each must see what the other recorded, or 400 is recorded for 300.
    The race is held open: both deliveries read what is refunded, then wait on a lock the test holds
    on `refunds`, until both are waiting; without the order's lock both then record their difference."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, price_minor=1_000, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    assert (await deliver(api, stripe_event("payment_intent.succeeded", payment_intent(order)))).status_code == 200

    async with db.acquire() as gate:
        transaction = gate.transaction()
        await transaction.start()
        await gate.execute("lock table public.refunds in share mode")
        deliveries = [
            asyncio.ensure_future(deliver(api, stripe_event("charge.refunded", charge(order, amount))))
            for amount in (100, 300)
        ]
        for _ in range(100):
            waiting = await db.fetchval(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and pid <> $1 "
                "and (query like '%public.%' or query like '%advisory%')",
                gate.get_server_pid(),
            )
            if waiting == 2:
                break
            await asyncio.sleep(0.05)
        assert waiting == 2, "both deliveries should be waiting"
        await transaction.rollback()
    assert [(await d).status_code for d in deliveries] == [200, 200]
    row = await order_row(db, order["id"])
    assert row["refunded_minor"] == 300 and row["status"] == "partially_refunded"
    # They are taken one at a time, in the order they reach the payment's lock: 100 then the 200 more,
    # or the total of 300 first, after which the delivery of 100 has nothing left to record.
    refunds = sorted(r["amount_minor"] for r in await order_refunds(db, order["id"]))
    assert refunds in ([100, 200], [300]), refunds


async def test_unknown_events_and_payments_of_other_orders_are_acknowledged_and_ignored(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    strangers = [
        stripe_event("customer.created", {"id": "cus_123", "object": "customer"}),
        stripe_event("invoice.paid", {"id": "in_123", "object": "invoice", "metadata": {"order_id": order["id"]}}),
        # Payments of someone else's (another app on the same Stripe account).
        stripe_event("payment_intent.succeeded", payment_intent(order, id="pi_other", metadata={})),
        stripe_event("payment_intent.succeeded", payment_intent(order, metadata={"order_id": str(uuid.uuid4())})),
        stripe_event("payment_intent.succeeded", payment_intent(order, metadata={"order_id": "ord_42"})),
        stripe_event("checkout.session.completed", {"id": "cs_other", "object": "checkout.session",
                                                    "payment_status": "paid", "payment_intent": "pi_other"}),
        stripe_event("charge.refunded", charge({**order, "payment_intent_id": "pi_other"}, 100)),
    ]  # fmt: skip
    for event in strangers:
        delivered = await deliver(api, event)
        assert delivered.status_code == 200, (event["type"], delivered.text)
    assert await status_of(db, order["id"]) == "awaiting_payment"
    assert await order_tickets(db, order["id"]) == []


async def test_a_payment_confirmed_at_localstripe_pays_through_its_own_webhook(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=5)
    order = await awaiting_payment(api, buyer, ticket_type["id"], quantity=2)
    await pay_at_stripe(stack, order["payment_intent_id"])
    await wait_for_status(api, buyer, order["id"], "ORDER_STATUS_PAID")
    recorded = await db.fetch("select type from public.stripe_events where object_id = $1", order["payment_intent_id"])
    assert [r["type"] for r in recorded] == ["payment_intent.succeeded"]
    assert len(await order_tickets(db, order["id"])) == 2


async def test_the_sweeper_cancels_an_expired_orders_payment_at_stripe(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, service_db: Database
) -> None:
    """An order that expired unpaid can no longer be paid at Stripe: its tickets went back on sale."""
    owner, buyer = await create_user(db), await create_user(db)
    _, ticket_type = await event_with_tickets(api, owner, inventory=1)
    order = await awaiting_payment(api, buyer, ticket_type["id"])
    await db.execute(
        "update public.orders set expires_at = now() - interval '1 second' where id = $1", uuid.UUID(order["id"])
    )
    await db.execute(
        "update public.ticket_holds set expires_at = now() - interval '1 second' where order_id = $1",
        uuid.UUID(order["id"]),
    )
    settings = TicketingSettings.from_env({"LOCALPLUS_ENV": "dev", "STRIPE_API_BASE": stack.stripe.url})
    # (The stack's own sweeper may get there first: either way the order expires and its payment is cancelled.)
    await payments.expire_orders(service_db, PaymentProvider(settings))
    assert await status_of(db, order["id"]) == "expired"
    async with localstripe(stack) as stripe:
        intent = await stripe.get(f"/v1/payment_intents/{order['payment_intent_id']}")
    assert intent.json()["status"] == "canceled", intent.text
    with pytest.raises(AssertionError):  # the buyer's app cannot confirm it any more
        await pay_at_stripe(stack, order["payment_intent_id"])
    assert await status_of(db, order["id"]) == "expired"
