"""Orders: reserve tickets (a hold that expires), read them, pay for them, give them up, refund them.

Who may act is decided under row-level security as the caller (their event, their order); the
writes are the server's own, through the SQL functions of the ticketing migration that lock what
they count (so two buyers never get the same last ticket), run as service_role. Their statements
look rows up by key, so they run on generic plans (Database.run's generic_plans: a rush pays for
planning under row-level security on every call otherwise)."""

import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.access import OWNER, signed_in, visible_event
from localplus_common.auth import SERVER, Identity
from localplus_common.db import Connection, Database, act_as
from localplus_common.errors import (
    aborted,
    already_exists,
    failed_precondition,
    invalid_argument,
    not_found,
    permission_denied,
)
from localplus_common.paging import Page, PageRequest, decode_keyset, page_of, time_value, uuid_value
from localplus_common.requests import text
from localplus_common.telemetry import TICKETS_SOLD
from localplus_ticketing import seating
from localplus_ticketing.codes import TicketSigner
from localplus_ticketing.payment_provider import Checkout, LineItem, PaymentProvider

MAX_ITEMS = 20
MAX_QUANTITY = 100
MAX_REQUEST_ID = 100
MAX_REASON = 500
# Confirmation codes: no 0/O or 1/I, so people can read them out.
CONFIRMATION_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
MY_ORDERS_KEYSET = {"created_at": time_value, "id": uuid_value}

# What a client sees of an order; client_secret and checkout_url are added for the buyer only.
ORDER_COLUMNS = """
  o.id, o.event_id, o.occurrence_id, o.buyer_id, o.request_id, o.currency, o.total_minor, o.refunded_minor,
  o.expires_at, o.confirmation_code, o.payment_intent_id, o.checkout_session_id, o.paid_at, o.created_at,
  -- An unpaid order past its hold is expired whether or not the sweeper has been by.
  case when o.status in ('reserved', 'awaiting_payment') and o.expires_at <= now() then 'expired'
       else o.status end as status
"""


@dataclass(frozen=True)
class NewOrder:
    request_id: str
    items: tuple[tuple[UUID, int], ...]  # (ticket type, quantity)


@dataclass(frozen=True)
class OrderView:
    """An order with its items, as its reader may see it."""

    order: dict[str, Any]
    items: list[asyncpg.Record]
    seats: list[asyncpg.Record] = field(default_factory=list)  # an order of seats: which (seating.py)


@dataclass(frozen=True)
class Payment:
    """What paying an order did: localplus_private.pay_order's outcome and the tickets it issued; when
    paid, what the payment wrote on the order (its confirmation code, and paid_at: the transaction's now())."""

    outcome: str
    tickets: int = 0
    paid: dict[str, Any] = field(default_factory=dict)


def confirmation_code() -> str:
    return "LP-" + "".join(secrets.choice(CONFIRMATION_ALPHABET) for _ in range(8))


def buyer() -> Identity:
    identity = signed_in()
    if identity.user_id is None:
        raise permission_denied("orders are made by people: sign in as one")
    return identity


async def create_order(db: Database, new: NewOrder, hold: timedelta) -> OrderView:
    """Hold the tickets for `hold`; the same request_id from the same buyer answers with the same order."""
    identity = buyer()
    _check(new)
    type_ids = [type_id for type_id, _ in new.items]

    async def reserve(conn: Connection) -> OrderView:
        # Which event the types are for (as the server: the buyer may know an unlisted one only by its link).
        events = await conn.fetch("select distinct event_id from public.ticket_types where id = any($1)", type_ids)
        if len(events) > 1:
            raise invalid_argument("order.items", "one order holds tickets of one event")
        if not events:
            raise not_found("ticket type not found")
        event_id = events[0]["event_id"]
        await act_as(conn, identity, event_id=event_id)
        # The event and its types as the buyer sees them, in one query (a rush pays for each round trip):
        # hidden types are visible to the event's editors only (row-level security).
        visible = await conn.fetchval(
            "select (select count(*) from public.ticket_types where id = any($2))"
            "  from public.events e where e.id = $1",
            event_id,
            type_ids,
        )
        if visible is None:
            raise not_found("event not found")
        if visible < len(type_ids):
            raise not_found("ticket type not found")
        await act_as(conn, SERVER)
        order_id = await conn.fetchval(
            "select localplus_private.reserve_order($1, $2, $3::jsonb, $4)",
            identity.user_id,
            new.request_id,
            json.dumps([{"ticket_type_id": str(type_id), "quantity": quantity} for type_id, quantity in new.items]),
            hold,
        )
        view = await _read(conn, order_id, with_secrets=True)
        # The same request_id answers its order (a retry); with other items it is another request, and
        # answering the first order would tell the caller theirs was made (AIP-155).
        if {(item["ticket_type_id"], item["quantity"]) for item in view.items} != set(new.items):
            raise already_exists("this request_id was used for an order of other items", "REQUEST_ID_REUSED")
        return view

    return await db.run(reserve, SERVER, generic_plans=True)


async def get_order(db: Database, order_id: UUID) -> OrderView:
    identity = signed_in()

    async def get(conn: Connection) -> OrderView:
        view = await _visible(conn, order_id)
        if view.order["buyer_id"] == identity.user_id:
            await act_as(conn, SERVER)
            return await _read(conn, order_id, with_secrets=True)
        return view

    return await db.run(get, generic_plans=True)


async def list_my_orders(db: Database, page: PageRequest) -> Page[OrderView]:
    identity = signed_in()
    after = decode_keyset(page, MY_ORDERS_KEYSET)

    async def list_them(conn: Connection) -> Page[OrderView]:
        rows = await conn.fetch(
            f"""
            select {ORDER_COLUMNS} from public.orders o
             where o.buyer_id = $1 and ($3::timestamptz is null or (o.created_at, o.id) < ($3, $4))
             order by o.created_at desc, o.id desc
             limit $2
            """,
            identity.user_id,
            page.size + 1,
            *(after or (None, None)),
        )
        listed = page_of(rows, page, MY_ORDERS_KEYSET)
        ids = [row["id"] for row in listed.items]
        items, seats = await _items(conn, ids), await seating.order_seats(conn, ids)
        return Page(
            [OrderView(dict(row), items.get(row["id"], []), seats.get(row["id"], [])) for row in listed.items],
            listed.next_page_token,
        )

    return await db.run(list_them)


async def checkout_order(
    db: Database,
    payments: PaymentProvider,
    signer: TicketSigner,
    order_id: UUID,
    session: tuple[str, str] | None,
) -> OrderView:
    """Start paying: a PaymentIntent, or with `session` = (success_url, cancel_url) a Checkout Session.
    A free order is paid at once. Asking again returns the checkout already started."""
    identity = signed_in()

    async def read_or_pay_free(conn: Connection) -> tuple[OrderView, Payment | None]:
        # A free order is paid at once, in the transaction that read it (fewer round trips in a rush).
        view = await _own_unpaid(conn, order_id, identity)
        if view.order["status"] in ("paid", "partially_refunded") or view.order["total_minor"] != 0:
            return view, None
        payment = await pay(conn, signer, order_id, known=view)
        if payment.outcome == "paid":  # the order as read, with what paying it changed (no second read)
            return OrderView(view.order | payment.paid, view.items, view.seats), payment
        return await _read(conn, order_id, with_secrets=True), payment

    view, free_payment = await db.run(read_or_pay_free, SERVER, generic_plans=True)
    if free_payment is not None:
        TICKETS_SOLD.labels("free").inc(free_payment.tickets)
    order = view.order
    if order["status"] in ("paid", "partially_refunded") or order["total_minor"] == 0:
        return view
    if order["payment_intent_id"] and session is None and order.get("client_secret"):
        return view
    if order["checkout_session_id"] and session is not None and order.get("checkout_url"):
        return view
    if session is None:
        checkout = await payments.payment_intent(order_id, order["total_minor"], order["currency"])
    else:
        names = await db.run(lambda conn: _line_items(conn, order_id), SERVER)
        checkout = await payments.checkout_session(order_id, names, order["currency"], *session)
    recorded = await db.run(lambda conn: _start_payment(conn, order_id, checkout), SERVER, generic_plans=True)
    if recorded is None:
        if checkout.payment_intent_id:
            await payments.cancel_payment_intent(checkout.payment_intent_id)
        raise aborted("the reservation ran out meanwhile; reserve again", "HOLD_EXPIRED")
    if checkout.payment_intent_id and recorded != checkout.payment_intent_id:
        # A concurrent checkout of this order recorded its PaymentIntent first: that one is the order's,
        # and this one is cancelled, so the buyer cannot pay twice. (Stripe answers one idempotency key
        # with one PaymentIntent, so this is where it does not: localstripe, or a key's 24 hours past.)
        await payments.cancel_payment_intent(checkout.payment_intent_id)
    return await db.run(lambda conn: _read(conn, order_id, with_secrets=True), SERVER, generic_plans=True)


async def cancel_order(db: Database, payments: PaymentProvider, order_id: UUID) -> OrderView:
    """Give up an unpaid order; its tickets go back on sale at once."""
    identity = signed_in()

    async def cancel(conn: Connection) -> OrderView:
        view = await _visible(conn, order_id)
        if view.order["buyer_id"] != identity.user_id:
            raise permission_denied("only the buyer may cancel an order")
        await act_as(conn, SERVER)
        outcome = await conn.fetchval("select localplus_private.cancel_order($1)", order_id)
        if outcome in ("paid", "partially_refunded", "refunded"):
            raise failed_precondition("a paid order is refunded, not cancelled", "INVALID_STATE")
        return await _read(conn, order_id, with_secrets=True)

    view = await db.run(cancel, generic_plans=True)
    if view.order["payment_intent_id"]:
        await payments.cancel_payment_intent(view.order["payment_intent_id"])
    return view


async def pay(conn: Connection, signer: TicketSigner, order_id: UUID, *, known: OrderView | None = None) -> Payment:
    """Pay an order and issue its tickets (as the server, in the caller's transaction): one ticket per
    admission, each with its signed code. The caller counts the tickets once its transaction commits.
    `known`: the order as this transaction has read it already (its event, items and seats do not change)."""
    if known is None:
        known = await _order(conn, order_id, "")
        if known is None:
            return Payment("no_order")
    event_id = known.order["event_id"]
    admissions = sum(item["quantity"] for item in known.items)
    ticket_ids = [uuid.uuid4() for _ in range(admissions)]
    codes = [signer.sign(ticket_id, event_id) for ticket_id in ticket_ids]
    # Assigned seating: held seats become sold first (a seat lost after the hold expired is sold out).
    # An order without seats has nothing to sell or copy onto its tickets (a seat order's claims are
    # never deleted, only ended, so `seats` is empty only for an order that never had any).
    if known.seats and not await seating.sell_seats(conn, order_id):
        return Payment("sold_out")
    code = confirmation_code()
    paid = await conn.fetchrow(
        "select localplus_private.pay_order($1, $2, $3, $4) as outcome, now() as paid_at",
        order_id,
        ticket_ids,
        codes,
        code,
    )
    assert paid is not None
    if paid["outcome"] != "paid":
        return Payment(paid["outcome"])
    if known.seats:
        await seating.seat_tickets(conn, order_id)
    return Payment("paid", admissions, {"status": "paid", "paid_at": paid["paid_at"], "confirmation_code": code})


@dataclass(frozen=True)
class Refunded:
    view: OrderView
    tickets: list[asyncpg.Record]
    refund_id: UUID | None  # None when nothing was left to refund


async def refund_order(db: Database, order_id: UUID, ticket_ids: list[UUID], reason: str) -> Refunded:
    """Void tickets of a paid order (all its remaining ones when `ticket_ids` is empty) and record the
    refund; the money goes back through Stripe afterwards (payments.settle_refund)."""
    identity = signed_in()
    text("reason", reason)
    if len(reason) > MAX_REASON:
        raise invalid_argument("reason", f"reason must be at most {MAX_REASON} characters")
    if len(set(ticket_ids)) < len(ticket_ids):
        raise invalid_argument("ticket_ids", "each ticket at most once")

    async def refund(conn: Connection) -> Refunded:
        view = await _visible(conn, order_id)
        event = await visible_event(conn, view.order["event_id"])
        if event["caller_rank"] < OWNER:
            raise permission_denied("only the event's owner or a platform admin may refund orders")
        await act_as(conn, SERVER)
        refund_id = await conn.fetchval(
            "select localplus_private.refund_tickets($1, $2, $3, $4, false)",
            order_id,
            ticket_ids,
            reason,
            identity.user_id,
        )
        refunded = await conn.fetch(
            "select t.* from public.tickets t join public.refunds r on t.id = any (r.ticket_ids) "
            "where r.id = $1 order by t.id",
            refund_id,
        )
        return Refunded(await _read(conn, order_id, with_secrets=False), list(refunded), refund_id)

    return await db.run(refund)


# Reading


async def _visible(conn: Connection, order_id: UUID) -> OrderView:
    """The order as the caller may see it (theirs, or of an event they edit); 404 otherwise."""
    view = await _order(conn, order_id, "")
    if view is None:
        raise not_found("order not found")
    return view


async def _read(conn: Connection, order_id: UUID, *, with_secrets: bool) -> OrderView:
    """The order as the server reads it (after the caller's access was checked)."""
    view = await _order(conn, order_id, ", o.client_secret, o.checkout_url" if with_secrets else "")
    assert view is not None
    return view


async def _order(conn: Connection, order_id: UUID, extra_columns: str) -> OrderView | None:
    """An order with its items in one round trip (a rush pays for each); its seats in a second one
    only when it has any (an order of seats), as the caller may see them."""
    row = await conn.fetchrow(
        f"""
        select {ORDER_COLUMNS}{extra_columns},
               array(select i from public.order_items i where i.order_id = o.id order by i.ticket_type_id)
                 as items,
               exists (select 1 from public.seat_claims c where c.order_id = o.id) as seated
          from public.orders o where o.id = $1
        """,
        order_id,
    )
    if row is None:
        return None
    order = dict(row)
    items, seated = order.pop("items"), order.pop("seated")
    seats = (await seating.order_seats(conn, [order_id])).get(order_id, []) if seated else []
    return OrderView(order, items, seats)


async def _items(conn: Connection, order_ids: list[UUID]) -> dict[UUID, list[asyncpg.Record]]:
    rows = await conn.fetch(
        "select * from public.order_items where order_id = any($1) order by order_id, ticket_type_id", order_ids
    )
    by_order: dict[UUID, list[asyncpg.Record]] = {}
    for row in rows:
        by_order.setdefault(row["order_id"], []).append(row)
    return by_order


async def _own_unpaid(conn: Connection, order_id: UUID, identity: Identity) -> OrderView:
    """The caller's own order, still payable (or already paid); the right error otherwise. Read once as
    the server (a buyer may read their own order, secrets and all); anyone else's is checked as them."""
    view = await _order(conn, order_id, ", o.client_secret, o.checkout_url")
    if view is None or view.order["buyer_id"] != identity.user_id:
        await act_as(conn, identity)
        await _visible(conn, order_id)  # not found, unless the caller may read it (an editor of the event)
        raise permission_denied("only the buyer may pay for an order")
    status = view.order["status"]
    if status == "expired":
        raise aborted("the reservation ran out; reserve again", "HOLD_EXPIRED")
    if status in ("cancelled", "refunded"):
        raise failed_precondition(f"the order is {status}", "INVALID_STATE")
    return view


async def _line_items(conn: Connection, order_id: UUID) -> list[LineItem]:
    rows = await conn.fetch(
        "select t.name, i.unit_price_minor, i.quantity from public.order_items i "
        "join public.ticket_types t on t.id = i.ticket_type_id where i.order_id = $1 order by i.ticket_type_id",
        order_id,
    )
    return [LineItem(row["name"], row["unit_price_minor"], row["quantity"]) for row in rows]


async def _start_payment(conn: Connection, order_id: UUID, checkout: Checkout) -> str | None:
    """Record the checkout on the order, unless its hold ran out (or it was given up) meanwhile: None
    then, else the order's PaymentIntent ('' for none). A PaymentIntent or a Checkout Session that a
    concurrent checkout recorded first stays the order's (the last to write used to win, and the
    buyer could pay each one)."""
    recorded: str | None = await conn.fetchval(
        """
        update public.orders set status = 'awaiting_payment', updated_at = now(),
               payment_intent_id = case when $2 <> '' and client_secret is null then $2 else payment_intent_id end,
               client_secret = case when $2 <> '' and client_secret is null then nullif($3, '') else client_secret end,
               checkout_session_id = case when $4 <> '' and checkout_url is null then $4 else checkout_session_id end,
               checkout_url = case when $4 <> '' and checkout_url is null then nullif($5, '') else checkout_url end
         where id = $1 and status in ('reserved', 'awaiting_payment') and expires_at > now()
        returning coalesce(payment_intent_id, '')
        """,
        order_id,
        checkout.payment_intent_id,
        checkout.client_secret,
        checkout.checkout_session_id,
        checkout.checkout_url,
    )
    return recorded


def _check(new: NewOrder) -> None:
    text("order.request_id", new.request_id)
    if not 1 <= len(new.request_id) <= MAX_REQUEST_ID:
        raise invalid_argument("order.request_id", f"request_id is required, at most {MAX_REQUEST_ID} characters")
    if not new.items:
        raise invalid_argument("order.items", "an order holds at least one item")
    if len(new.items) > MAX_ITEMS:
        raise invalid_argument("order.items", f"an order holds at most {MAX_ITEMS} items")
    if len({type_id for type_id, _ in new.items}) < len(new.items):
        raise invalid_argument("order.items", "each ticket type at most once per order")
    for _, quantity in new.items:
        if not 1 <= quantity <= MAX_QUANTITY:
            raise invalid_argument("order.items.quantity", f"quantity must be between 1 and {MAX_QUANTITY}")


# Orders of seats (assigned seating): seats are their own inventory, claimed in seating's SQL.


@dataclass(frozen=True)
class NewSeatOrder:
    request_id: str
    seat_ids: tuple[UUID, ...]  # chosen seats, all or none
    best_available: tuple[UUID, int] | None  # (seated ticket type, quantity)
    occurrence_id: UUID | None  # with seat_ids, when the event sells its seats per occurrence


# The ticket types selling some seats (of their category, for the occurrence when one is named).
SEAT_TYPES = """
select coalesce(array_agg(distinct t.id), '{}')
  from public.event_seats es join public.plan_seats ps on ps.id = es.plan_seat_id
  join public.ticket_types t on t.event_id = es.event_id and t.seat_category = ps.category
 where es.id = any($1) and ($2::uuid is null or coalesce(t.occurrence_id, t.event_id) = $2)
"""


async def create_seat_order(db: Database, new: NewSeatOrder, hold: timedelta) -> OrderView:
    """Hold chosen seats, or the best adjacent ones of a ticket type, for `hold` (409 SEAT_UNAVAILABLE
    naming the seats taken, SOLD_OUT when no block is left); the same request_id answers the same order."""
    identity = buyer()
    text("order.request_id", new.request_id)
    if not 1 <= len(new.request_id) <= MAX_REQUEST_ID:
        raise invalid_argument("order.request_id", f"request_id is required, at most {MAX_REQUEST_ID} characters")
    if bool(new.seat_ids) == (new.best_available is not None):
        raise invalid_argument("order.seats", "an order names seats or best_available (and then no items)")
    if not 1 <= len(new.seat_ids or [new.best_available]) <= MAX_QUANTITY:
        raise invalid_argument("order.seats", f"an order holds 1 to {MAX_QUANTITY} seats")
    if len(set(new.seat_ids)) < len(new.seat_ids):
        raise invalid_argument("order.seats", "each seat at most once")
    best_type, quantity = new.best_available or (None, 0)
    if best_type is not None and not 1 <= quantity <= MAX_QUANTITY:
        raise invalid_argument("order.best_available.quantity", f"quantity must be between 1 and {MAX_QUANTITY}")

    async def reserve(conn: Connection) -> OrderView:
        await act_as(conn, SERVER)
        if best_type is not None:
            events = await conn.fetch("select event_id from public.ticket_types where id = $1", best_type)
        else:
            events = await conn.fetch(
                "select distinct event_id from public.event_seats where id = any($1)", list(new.seat_ids)
            )
        if len(events) > 1:
            raise invalid_argument("order.seats", "one order holds seats of one event")
        if not events:
            raise not_found("ticket type not found" if best_type else "seat not found")
        event_id = events[0]["event_id"]
        # The ticket types that would sell the seats (reserve_seats picks among these), and then the
        # buyer must see each one: a hidden type is sold only to the event's editors.
        types = (
            [best_type] if best_type is not None else await conn.fetchval(SEAT_TYPES, new.seat_ids, new.occurrence_id)
        )
        await act_as(conn, identity, event_id=event_id)
        await visible_event(conn, event_id)
        if new.occurrence_id is not None:
            await seating.require_occurrence_of(conn, event_id, new.occurrence_id, "order.seats_occurrence_id")
        if await conn.fetchval("select count(*) from public.ticket_types where id = any($1)", types) < len(types):
            raise not_found("ticket type not found")  # hidden from this buyer
        await act_as(conn, SERVER)
        order_id = await conn.fetchval(
            "select localplus_private.reserve_seats($1, $2, $3, $4, $5, $6, $7, $8)",
            identity.user_id,
            new.request_id,
            event_id,
            new.occurrence_id,
            list(new.seat_ids),
            best_type,
            quantity,
            hold,
        )
        view = await _read(conn, order_id, with_secrets=True)
        # As for orders of items: the same request_id for other seats (or another best-available ask) is
        # another request, and answering the first order would tell the caller theirs was made (AIP-155).
        if best_type is not None:
            asked = {(item["ticket_type_id"], item["quantity"]) for item in view.items} == {(best_type, quantity)}
        else:
            asked = {seat["seat_id"] for seat in view.seats} == set(new.seat_ids)
        if not asked or not view.seats:
            raise already_exists("this request_id was used for an order of other seats", "REQUEST_ID_REUSED")
        return view

    return await db.run(reserve)
