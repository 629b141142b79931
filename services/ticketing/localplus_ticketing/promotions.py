"""Use cases of promotions (boosted placements): create and change drafts, pay the budget through
Stripe, review by admins, cancel, end, refunds of what is unspent, clicks and stats.

Row-level security decides who sees a promotion (its business's partners, admins) and who may write
a draft (owners and editors); the status, spend, payment and refund columns are the server's, changed
here as SERVER after the caller's access was checked, each status change logged by a trigger. Spend
is counted in SQL (see the migration 20261217000000_promotions.sql): impressions by the events
service out of leased allowance, clicks here."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.access import require_business_partner, signed_in
from localplus_common.auth import SERVER
from localplus_common.cities import city_slug, require_cities
from localplus_common.db import Connection, Database, act_as, current_identity
from localplus_common.errors import ApiError, aborted, invalid_argument, not_found, permission_denied
from localplus_common.money import currency_code
from localplus_common.paging import Page, PageRequest, decode_keyset, page_of, time_value, uuid_value
from localplus_ticketing.payment_provider import Checkout, PaymentProvider

log = logging.getLogger(__name__)

PLACEMENTS = {"search", "browse"}
BID_TYPES = {"cpc", "cpm"}
# Targeting lists: at most MAX_TARGETS entries of 1 to MAX_TARGET_LENGTH characters (the table checks both)
# (a city slug's and an event category's longest), checked before any SQL so the 400 names the field.
MAX_TARGETS = 50
MAX_TARGET_LENGTH = 64
# What a partner may change, and only while the promotion is a draft.
EDITABLE = ("placements", "cities", "categories", "starts_at", "ends_at", "budget_minor", "currency", "bid_type",
            "bid_minor")  # fmt: skip
# Everything but the payment's client secret (answered by :checkout only).
COLUMNS = (
    "id, event_id, business_id, placements, cities, categories, starts_at, ends_at, budget_minor, currency, "
    "bid_type, bid_minor, status, reject_reason, spent_milli, refunded_minor, payment_intent_id, paid_minor, "
    "created_at, updated_at"
)
NEWEST_KEYSET = {"created_at": time_value, "id": uuid_value}
QUEUE_KEYSET = {"updated_at": time_value, "id": uuid_value}
CANCELLABLE = ("draft", "awaiting_payment", "pending_review", "active")


@dataclass(frozen=True)
class PromotionInput:
    """A promotion's fields as the client sent them (None: not given)."""

    event_id: UUID | None = None
    placements: list[str] | None = None
    cities: list[str] | None = None
    categories: list[str] | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    budget_minor: int | None = None
    currency: str | None = None
    bid_type: str | None = None
    bid_minor: int | None = None

    def values(self) -> dict[str, Any]:
        given = {name: getattr(self, name) for name in EDITABLE if getattr(self, name) is not None}
        _validate(given)
        return given


def _validate(values: dict[str, Any]) -> None:
    placements = values.get("placements")
    if placements is not None and (not placements or not set(placements) <= PLACEMENTS):
        raise invalid_argument("placements", "placements must name PROMOTION_PLACEMENT_SEARCH and/or _BROWSE")
    for field in ("cities", "categories"):
        targets = values.get(field) or []
        if len(targets) > MAX_TARGETS:
            raise invalid_argument(field, f"{field} may name at most {MAX_TARGETS}")
        if any(not 1 <= len(target) <= MAX_TARGET_LENGTH for target in targets):
            raise invalid_argument(field, f"each of {field} must be 1 to {MAX_TARGET_LENGTH} characters")
    if "bid_type" in values and values["bid_type"] not in BID_TYPES:
        raise invalid_argument("bid_type", "bid_type must be BID_TYPE_CPC or BID_TYPE_CPM")
    for field in ("budget_minor", "bid_minor"):
        if field in values and values[field] <= 0:
            raise invalid_argument(field, f"{field} must be positive")
    if "currency" in values:
        currency_code("currency", values["currency"])  # stored as _normalised gives it
    starts, ends = values.get("starts_at"), values.get("ends_at")
    if starts and ends and ends <= starts:
        raise invalid_argument("ends_at", "ends_at must be after starts_at")
    if ends and ends <= datetime.now(UTC):
        raise invalid_argument("ends_at", "ends_at must be in the future")


def _check_bid(values: dict[str, Any]) -> None:
    # A CPM bid is per thousand impressions, so it may be more than a small budget; a click may not.
    if values["bid_type"] == "cpc" and values["bid_minor"] > values["budget_minor"]:
        raise invalid_argument("bid_minor", "a click cannot cost more than the budget")


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "currency" in out:
        out["currency"] = currency_code("currency", out["currency"])
    if "cities" in out:
        out["cities"] = sorted({city_slug(city) for city in out["cities"]})
    if "placements" in out:
        out["placements"] = sorted(set(out["placements"]))
    return out


async def _visible(conn: Connection, promotion_id: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(f"select {COLUMNS} from public.promotions where id = $1", promotion_id)
    if row is None:
        raise not_found("promotion not found")
    return row


async def _require_manager(conn: Connection, promotion: asyncpg.Record, action: str) -> None:
    manager = await conn.fetchval(
        "select localplus_private.is_platform_admin() "
        "or localplus_private.is_business_partner($1, array['owner', 'editor'])",
        promotion["business_id"],
    )
    if not manager:
        raise permission_denied(f"only the business's owners and editors may {action} its promotions")


async def create_promotion(db: Database, new: PromotionInput) -> asyncpg.Record:
    identity = signed_in()
    if new.event_id is None:
        raise invalid_argument("event_id", "event_id is required")
    values = _normalised(new.values())
    for field in ("placements", "starts_at", "ends_at", "budget_minor", "currency", "bid_type", "bid_minor"):
        if field not in values:
            raise invalid_argument(field, f"{field} is required")
    _check_bid(values)

    async def create(conn: Connection) -> asyncpg.Record:
        event = await conn.fetchrow(
            "select id, business_id, status, visibility from public.events where id = $1", new.event_id
        )
        if event is None:
            raise not_found("event not found")
        if event["business_id"] is None:
            raise invalid_argument("event_id", "only a business's events can be promoted")
        if event["status"] != "published" or event["visibility"] != "public":
            raise invalid_argument("event_id", "only published public events can be promoted")
        await _require_manager(conn, event, "create")
        await require_cities(conn, values.get("cities") or [], "cities")
        columns = ["event_id", "business_id", "created_by", *values]
        params = [new.event_id, event["business_id"], identity.user_id, *values.values()]
        placeholders = ", ".join(f"${i}" for i in range(1, len(params) + 1))
        row: asyncpg.Record | None = await conn.fetchrow(
            f"insert into public.promotions ({', '.join(columns)}) values ({placeholders}) returning {COLUMNS}",
            *params,
        )
        assert row is not None
        return row

    return await db.run(create)


async def get_promotion(db: Database, promotion_id: UUID) -> asyncpg.Record:
    signed_in()
    return await db.run(lambda conn: _visible(conn, promotion_id))


async def update_promotion(db: Database, promotion_id: UUID, changes: PromotionInput) -> asyncpg.Record:
    signed_in()
    values = _normalised(changes.values())

    async def update(conn: Connection) -> asyncpg.Record:
        current = await _visible(conn, promotion_id)
        await _require_manager(conn, current, "change")
        if current["status"] != "draft":
            raise aborted("only a draft promotion can change; cancel it and create another", "INVALID_STATE")
        merged = {**{name: current[name] for name in EDITABLE}, **values}
        _validate(merged)
        _check_bid(merged)
        if not values:
            return current
        await require_cities(conn, values.get("cities") or [], "cities")
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=2))
        row = await conn.fetchrow(
            f"update public.promotions set {sets} where id = $1 and status = 'draft' returning {COLUMNS}",
            promotion_id,
            *values.values(),
        )
        if row is None:
            raise aborted("the promotion is no longer a draft", "INVALID_STATE")
        return row

    return await db.run(update)


async def business_promotions(db: Database, business_id: UUID, page: PageRequest) -> Page[asyncpg.Record]:
    """A business's promotions, newest first, for its partners and admins (row-level security): 404 for
    a business that does not exist, 403 for anyone else, as for its other figures."""
    identity = signed_in()
    after = decode_keyset(page, NEWEST_KEYSET)

    async def read(conn: Connection) -> list[asyncpg.Record]:
        await require_business_partner(conn, identity, business_id, "promotions")
        return await conn.fetch(
            f"select {COLUMNS} from public.promotions where business_id = $1 "
            "and ($3::timestamptz is null or (created_at, id) < ($3, $4)) order by created_at desc, id desc limit $2",
            business_id,
            page.size + 1,
            *(after or (None, None)),
        )

    return page_of(await db.run(read), page, NEWEST_KEYSET)


async def moderation_queue(db: Database, page: PageRequest) -> Page[asyncpg.Record]:
    """Paid promotions waiting for review, longest waiting first (platform admins)."""
    if not signed_in().is_platform_admin:
        raise permission_denied("the moderation queue is for platform admins")
    after = decode_keyset(page, QUEUE_KEYSET)
    rows = await db.run(
        lambda conn: conn.fetch(
            f"select {COLUMNS} from public.promotions where status = 'pending_review' "
            "and ($2::timestamptz is null or (updated_at, id) > ($2, $3)) order by updated_at, id limit $1",
            page.size + 1,
            *(after or (None, None)),
        )
    )
    return page_of(rows, page, QUEUE_KEYSET)


@dataclass(frozen=True)
class CheckoutView:
    promotion: asyncpg.Record
    payment_intent_id: str
    client_secret: str


async def checkout(db: Database, payments: PaymentProvider, promotion_id: UUID) -> CheckoutView:
    """A PaymentIntent for the budget of a draft; asking again answers the one already open."""
    signed_in()

    async def check(conn: Connection) -> tuple[asyncpg.Record, str]:
        promotion = await _visible(conn, promotion_id)
        await _require_manager(conn, promotion, "pay for")
        await act_as(conn, SERVER)
        secret = await conn.fetchval("select client_secret from public.promotions where id = $1", promotion_id)
        return promotion, secret or ""

    promotion, secret = await db.run(check)
    if promotion["status"] == "awaiting_payment" and secret:
        return CheckoutView(promotion, promotion["payment_intent_id"], secret)
    if promotion["status"] != "draft":
        raise aborted(f"the promotion is {promotion['status']}; only a draft is paid for", "INVALID_STATE")
    started = await payments.promotion_payment_intent(
        promotion_id, promotion["budget_minor"], promotion["currency"], promotion["updated_at"]
    )
    # Still the budget asked of Stripe: a draft changed during the call would otherwise be paid for
    # at its old budget and spend its new one.
    row = await db.run(
        lambda conn: conn.fetchrow(
            "update public.promotions set status = 'awaiting_payment', payment_intent_id = $2, client_secret = $3, "
            "updated_at = now() where id = $1 and status = 'draft' and budget_minor = $4 and currency = $5 "
            f"returning {COLUMNS}",
            promotion_id,
            started.payment_intent_id,
            started.client_secret,
            promotion["budget_minor"],
            promotion["currency"],
        ),
        SERVER,
    )
    if row is None:
        return await _checked_out_meanwhile(db, payments, promotion, started)
    return CheckoutView(row, started.payment_intent_id, started.client_secret)


async def _checked_out_meanwhile(
    db: Database, payments: PaymentProvider, draft: asyncpg.Record, started: Checkout
) -> CheckoutView:
    """The draft was no longer the one `started` pays for. A concurrent checkout of the same budget
    recorded its PaymentIntent first: that one is answered, and `started` cancelled unless it is the
    same (Stripe answers one idempotency key with one PaymentIntent). Anything else changed: a 409."""
    recorded = await db.run(
        lambda conn: conn.fetchrow(
            f"select {COLUMNS}, client_secret from public.promotions where id = $1 and status = 'awaiting_payment' "
            "and budget_minor = $2 and currency = $3",
            draft["id"],
            draft["budget_minor"],
            draft["currency"],
        ),
        SERVER,
    )
    if recorded is None or recorded["payment_intent_id"] != started.payment_intent_id:
        await payments.cancel_payment_intent(started.payment_intent_id)
    if recorded is None or not recorded["client_secret"]:
        raise aborted("the promotion changed meanwhile", "INVALID_STATE")
    return CheckoutView(recorded, recorded["payment_intent_id"], recorded["client_secret"])


async def paid(conn: Connection, promotion_id: UUID, payment_intent_id: str, amount: int) -> bool:
    """A PaymentIntent for a promotion succeeded (the webhook, as SERVER): an awaited payment sends it
    to review; one that arrives after the promotion was cancelled is refunded whole. Answers whether a
    refund is to be sent."""
    updated = await conn.fetchval(
        "update public.promotions set status = 'pending_review', paid_minor = $3, updated_at = now() "
        "where id = $1 and payment_intent_id = $2 and status = 'awaiting_payment' returning id",
        promotion_id,
        payment_intent_id,
        amount,
    )
    if updated is not None:
        return False
    late = await conn.fetchval(
        "update public.promotions set paid_minor = $3, refunded_minor = $3, refund_status = 'pending', "
        "updated_at = now() where id = $1 and payment_intent_id = $2 and paid_minor = 0 and status = 'cancelled' "
        "returning id",
        promotion_id,
        payment_intent_id,
        amount,
    )
    return late is not None


async def approve(db: Database, promotion_id: UUID) -> asyncpg.Record:
    return await _decide(db, promotion_id, "active", "")


async def reject(db: Database, payments: PaymentProvider, promotion_id: UUID, reason: str) -> asyncpg.Record:
    if not reason.strip():
        raise invalid_argument("reason", "a rejection needs a reason the partner can act on")
    await _decide(db, promotion_id, "rejected", reason.strip())
    await settle_refund(db, payments, promotion_id)
    return await db.run(lambda conn: _visible(conn, promotion_id), SERVER)


async def _decide(db: Database, promotion_id: UUID, to_status: str, reason: str) -> asyncpg.Record:
    identity = signed_in()
    if not identity.is_platform_admin:
        raise permission_denied("only platform admins review promotions")

    async def decide(conn: Connection) -> asyncpg.Record:
        await act_as(conn, SERVER)
        await conn.execute("select set_config('request.jwt.claims', $1, true)", identity.claims_json)
        # The row lock: of two moderators at once, the second sees the first's decision.
        status = await conn.fetchval("select status from public.promotions where id = $1 for update", promotion_id)
        if status is None:
            raise not_found("promotion not found")
        if status != "pending_review":
            raise aborted(f"the promotion is {status}; only a paid one waiting for review is decided", "INVALID_STATE")
        if to_status == "rejected":
            await conn.execute("select localplus_private.close_promotion($1, 'rejected', $2)", promotion_id, reason)
        else:
            await conn.execute(
                "update public.promotions set status = 'active', updated_at = now() where id = $1", promotion_id
            )
        return await _visible(conn, promotion_id)

    return await db.run(decide)


async def cancel(db: Database, payments: PaymentProvider, promotion_id: UUID) -> asyncpg.Record:
    """Stop a promotion; the unspent part of a paid budget is refunded (spend is final from here)."""
    identity = signed_in()

    async def stop(conn: Connection) -> asyncpg.Record:
        promotion = await _visible(conn, promotion_id)
        await _require_manager(conn, promotion, "cancel")
        await act_as(conn, SERVER)
        await conn.execute("select set_config('request.jwt.claims', $1, true)", identity.claims_json)
        status = await conn.fetchval("select status from public.promotions where id = $1 for update", promotion_id)
        if status not in CANCELLABLE:
            raise aborted(f"the promotion is {status} already", "INVALID_STATE")
        await conn.execute("select localplus_private.close_promotion($1, 'cancelled', null)", promotion_id)
        return await _visible(conn, promotion_id)

    row = await db.run(stop)
    if row["paid_minor"] == 0 and row["payment_intent_id"]:
        await payments.cancel_payment_intent(row["payment_intent_id"])
    await settle_refund(db, payments, promotion_id)
    return await db.run(lambda conn: _visible(conn, promotion_id), SERVER)


async def end_due(db: Database, payments: PaymentProvider) -> int:
    """End the active promotions past their end (the ticketing sweep), refunding what is unspent."""
    ended: list[asyncpg.Record] = await db.run(
        lambda conn: conn.fetch(
            "select id, localplus_private.close_promotion(id, 'ended', null) from public.promotions "
            "where status = 'active' and ends_at <= now()"
        ),
        SERVER,
    )
    for row in ended:
        await settle_refund(db, payments, row["id"])
    return len(ended)


async def settle_refund(db: Database, payments: PaymentProvider, promotion_id: UUID) -> None:
    """Send a promotion's pending refund to Stripe (the promotion's id is its idempotency key); left
    pending when Stripe does not answer, for the next sweep."""
    pending = await db.run(
        lambda conn: conn.fetchrow(
            "select payment_intent_id, refunded_minor from public.promotions "
            "where id = $1 and refund_status = 'pending'",
            promotion_id,
        ),
        SERVER,
    )
    if pending is None:
        return
    try:
        refund_id = await payments.refund(promotion_id, pending["payment_intent_id"], pending["refunded_minor"])
    except ApiError:  # Stripe did not answer: it stays pending, the sweep sends it again
        log.warning("promotion %s: refund not sent yet", promotion_id, exc_info=True)
        return
    await db.run(
        lambda conn: conn.execute(
            "update public.promotions set refund_status = 'succeeded', stripe_refund_id = $2, updated_at = now() "
            "where id = $1",
            promotion_id,
            refund_id,
        ),
        SERVER,
    )


async def settle_pending_refunds(db: Database, payments: PaymentProvider) -> None:
    pending = await db.run(
        lambda conn: conn.fetch("select id from public.promotions where refund_status = 'pending' limit 100"), SERVER
    )
    for row in pending:
        await settle_refund(db, payments, row["id"])


async def click(db: Database, promotion_id: UUID, viewer: str) -> bool:
    """Count a click on a sponsored result by `viewer` (`localplus_common.viewers.viewer_key`): once per
    viewer per day, never by the business's team."""
    identity = current_identity.get()

    async def count(conn: Connection) -> bool:
        business_id = await conn.fetchval("select business_id from public.promotions where id = $1", promotion_id)
        if business_id is None:
            raise not_found("promotion not found")
        own_team = identity.user_id is not None and await conn.fetchval(
            "select exists (select 1 from public.partners where business_id = $1 and user_id = $2)",
            business_id,
            identity.user_id,
        )
        if own_team:
            return False
        counted: bool = await conn.fetchval(
            "select localplus_private.record_promotion_click($1, $2)", promotion_id, viewer
        )
        return counted

    return await db.run(count, SERVER)


@dataclass(frozen=True)
class Stats:
    promotion: asyncpg.Record
    days: list[asyncpg.Record]


async def stats(db: Database, promotion_id: UUID, start: datetime | None, end: datetime | None) -> Stats:
    """Per UTC day: impressions and their spend from the servers' batches, clicks and theirs."""
    signed_in()
    if start is not None and end is not None and end < start:
        raise invalid_argument("end", "end must not be before start")

    async def read(conn: Connection) -> Stats:
        promotion = await _visible(conn, promotion_id)
        days = await conn.fetch(
            """
            select day, sum(impressions)::bigint as impressions, sum(clicks)::bigint as clicks,
                   sum(spent_milli)::bigint as spent_milli
              from (select day, impressions, 0 as clicks, spent_milli from public.promotion_impressions
                     where promotion_id = $1
                    union all
                    select day, 0, 1, spent_milli from public.promotion_clicks where promotion_id = $1) raw
             where ($2::timestamptz is null or day >= ($2 at time zone 'UTC')::date)
               and ($3::timestamptz is null or day < ($3 at time zone 'UTC')::date
                    or ($3 at time zone 'UTC')::time > '00:00' and day = ($3 at time zone 'UTC')::date)
             group by day order by day
            """,
            promotion_id,
            start,
            end,
        )
        return Stats(promotion, days)

    return await db.run(read)
