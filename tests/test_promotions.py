"""Promotions (boosted placements) over the gateway: a partner pays a budget through localstripe, an
admin approves it, and `GET /api/events` answers `sponsored[]` beside the organic page: only promoted
events matching the request's own filters that the caller may see, never one on the page or twice,
the organic page unchanged. Spend never passes the budget under concurrent impressions; pacing
spreads it over the days; a viewer listing in a loop is charged one impression an hour (the
frequency cap); clicks count once per viewer per day; stats equal a recount of the raw rows;
cancelling refunds what is unspent. Row-level security in raw SQL as Supabase's REST runs it.
Distinct anonymous viewers are clients connecting from distinct loopback addresses (all of 127/8
reaches the gateway on Linux), as the gateway sees them."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import httpx
import pytest

from localplus_common.auth import Identity
from localplus_common.db import Database, current_identity
from localplus_common.errors import ApiError
from localplus_common.sponsored import ChargedViewers
from localplus_dev.stack import Stack
from localplus_ticketing import promotions
from localplus_ticketing.payment_provider import Checkout, PaymentProvider
from localplus_ticketing.settings import TicketingSettings
from tests.sql_callers import as_caller, claims_of
from tests.stripe_support import refunded_at_stripe
from tests.support import User, add_city, create_event, create_user, iso
from tests.ticketing_support import pay_at_stripe

SLOTS = 2  # SPONSORED_SLOTS' default


async def business_of(db: asyncpg.Pool, partner: User, role: str = "owner") -> str:
    business_id = await db.fetchval("insert into public.businesses (name) values ('Promoted Co') returning id")
    await db.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, $3)", business_id, partner.id, role
    )
    return str(business_id)


async def add_partner(db: asyncpg.Pool, business: str, partner: User, role: str) -> None:
    await db.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, $3)",
        uuid.UUID(business),
        partner.id,
        role,
    )


def promotion_body(event_id: str, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    body: dict[str, Any] = {
        "event_id": event_id,
        "placements": ["PROMOTION_PLACEMENT_SEARCH", "PROMOTION_PLACEMENT_BROWSE"],
        "starts_at": iso(now - timedelta(minutes=1)),
        "ends_at": iso(now + timedelta(hours=23)),  # one day: pacing lets it spend everything today
        "budget_minor": "100000",
        "currency": "THB",
        "bid_type": "BID_TYPE_CPM",
        "bid_minor": "1000",
    }
    body.update(overrides)
    return body


async def create_promotion(api: httpx.AsyncClient, who: User, event_id: str, **overrides: Any) -> dict[str, Any]:
    response = await api.post("/api/promotions", json=promotion_body(event_id, **overrides), headers=who.headers)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


async def wait_promotion(
    api: httpx.AsyncClient, who: User, promotion_id: str, status: str, within_s: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        response = await api.get(f"/api/promotions/{promotion_id}", headers=who.headers)
        assert response.status_code == 200, response.text
        promotion: dict[str, Any] = response.json()
        if promotion["status"] == status or time.monotonic() > deadline:
            assert promotion["status"] == status, promotion
            return promotion
        await asyncio.sleep(0.2)


async def paid_promotion(
    api: httpx.AsyncClient, stack: Stack, owner: User, event_id: str, **overrides: Any
) -> dict[str, Any]:
    promotion = await create_promotion(api, owner, event_id, **overrides)
    started = await api.post(f"/api/promotions/{promotion['id']}:checkout", json={}, headers=owner.headers)
    assert started.status_code == 200, started.text
    checkout = started.json()
    assert checkout["promotion"]["status"] == "PROMOTION_STATUS_AWAITING_PAYMENT" and checkout["client_secret"]
    await pay_at_stripe(stack, checkout["payment_intent_id"])
    paid = await wait_promotion(api, owner, promotion["id"], "PROMOTION_STATUS_PENDING_REVIEW")
    return paid | {"payment_intent_id": checkout["payment_intent_id"]}


async def active_promotion(
    api: httpx.AsyncClient, stack: Stack, owner: User, admin: User, event_id: str, **overrides: Any
) -> dict[str, Any]:
    paid = await paid_promotion(api, stack, owner, event_id, **overrides)
    approved = await api.post(f"/api/promotions/{paid['id']}:approve", json={}, headers=admin.headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["promotion"]["status"] == "PROMOTION_STATUS_ACTIVE"
    return approved.json()["promotion"] | {"payment_intent_id": paid["payment_intent_id"]}


async def listing(api: httpx.AsyncClient, who: User | None = None, **params: Any) -> dict[str, Any]:
    """A list of events; a page of one unless asked otherwise (see promoted_setup)."""
    params.setdefault("page_size", 1)
    response = await api.get("/api/events", params=params, headers=who.headers if who else {})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sponsored_ids(body: dict[str, Any]) -> list[str]:
    return [item["promotion_id"] for item in body.get("sponsored", [])]


async def until_served(
    api: httpx.AsyncClient, promotion_id: str, within_s: float = 10.0, **params: Any
) -> dict[str, Any]:
    """The first list that carries the promotion (servers read live promotions every second)."""
    deadline = time.monotonic() + within_s
    while True:
        body = await listing(api, **params)
        if promotion_id in sponsored_ids(body) or time.monotonic() > deadline:
            assert promotion_id in sponsored_ids(body), body
            return body
        await asyncio.sleep(0.2)


async def never_served(api: httpx.AsyncClient, promotion_id: str, tries: int = 8, **params: Any) -> None:
    for _ in range(tries):
        assert promotion_id not in sponsored_ids(await listing(api, **params)), params
        await asyncio.sleep(0.3)


async def promoted_setup(
    api: httpx.AsyncClient, db: asyncpg.Pool, **event_fields: Any
) -> tuple[User, str, str, dict[str, Any]]:
    """An owner with a business, a fresh city and a published public event of theirs in it, plus an
    unpromoted twin starting an hour earlier: a page of one shows the twin, so the event is free to be
    sponsored beside it."""
    owner = await create_user(db)
    business = await business_of(db, owner)
    city = await add_city(db, f"promo-{uuid.uuid4().hex[:8]}")
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
    await create_event(
        api, owner, business_id=business, city=city, status="EVENT_STATUS_PUBLISHED",
        starts_at=iso(starts - timedelta(hours=1)), ends_at=iso(starts + timedelta(hours=2)), **event_fields,
    )  # fmt: skip
    event = await create_event(
        api, owner, business_id=business, city=city, status="EVENT_STATUS_PUBLISHED",
        starts_at=iso(starts), ends_at=iso(starts + timedelta(hours=3)), **event_fields,
    )  # fmt: skip
    return owner, business, city, event


@asynccontextmanager
async def viewers_at(stack: Stack, count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """`count` anonymous clients, each connecting from an address of its own (127.0.1.1, 127.0.1.2, ...):
    so many viewers as the gateway sees them."""
    async with AsyncExitStack() as clients:
        yield [
            await clients.enter_async_context(
                httpx.AsyncClient(
                    base_url=stack.gateway_url,
                    timeout=30,
                    transport=httpx.AsyncHTTPTransport(local_address=f"127.0.1.{n}"),
                )
            )
            for n in range(1, count + 1)
        ]


async def flushed(db: asyncpg.Pool, promotion_id: str, impressions: int, within_s: float = 10.0) -> None:
    """Wait until the servers recorded `impressions` (they flush every second)."""
    deadline = time.monotonic() + within_s
    while True:
        recorded = await db.fetchval(
            "select coalesce(sum(impressions), 0) from public.promotion_impressions where promotion_id = $1",
            uuid.UUID(promotion_id),
        )
        if recorded >= impressions or time.monotonic() > deadline:
            assert recorded == impressions
            return
        await asyncio.sleep(0.2)


# Create, pay, review


async def test_a_partner_pays_the_budget_and_an_admin_approves_it(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, business, city, event = await promoted_setup(api, db)
    paid = await paid_promotion(api, stack, owner, event["id"], cities=[city])
    assert paid["business_id"] == business and paid["spent_minor"] == "0" and paid["budget_minor"] == "100000"

    queue = await api.get("/api/moderation/promotions", params={"page_size": 100}, headers=admin.headers)
    assert paid["id"] in [p["id"] for p in queue.json()["promotions"]]
    assert (await api.get("/api/moderation/promotions", headers=owner.headers)).status_code == 403
    assert (await api.post(f"/api/promotions/{paid['id']}:approve", json={}, headers=owner.headers)).status_code == 403
    no_reason = await api.post(f"/api/promotions/{paid['id']}:reject", json={"reason": " "}, headers=admin.headers)
    assert no_reason.status_code == 400

    approved = await api.post(f"/api/promotions/{paid['id']}:approve", json={}, headers=admin.headers)
    assert approved.json()["promotion"]["status"] == "PROMOTION_STATUS_ACTIVE"
    again = await api.post(f"/api/promotions/{paid['id']}:approve", json={}, headers=admin.headers)
    assert again.status_code == 409

    body = await until_served(api, paid["id"], city=city)
    (item,) = body["sponsored"]
    assert item["event"]["id"] == event["id"] and item["position"] == 0 and len(body["events"]) == 1

    log = await db.fetch(
        "select actor_id, from_status, to_status from public.promotion_moderation_log "
        "where promotion_id = $1 order by id",
        uuid.UUID(paid["id"]),
    )
    assert [(r["from_status"], r["to_status"]) for r in log] == [
        ("draft", "awaiting_payment"),
        ("awaiting_payment", "pending_review"),
        ("pending_review", "active"),
    ]
    assert log[-1]["actor_id"] == admin.id
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("delete from public.promotion_moderation_log where promotion_id = $1", uuid.UUID(paid["id"]))


async def test_a_rejection_has_a_reason_and_refunds_the_budget(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, _, _, event = await promoted_setup(api, db)
    paid = await paid_promotion(api, stack, owner, event["id"], budget_minor="5000")
    rejected = await api.post(
        f"/api/promotions/{paid['id']}:reject", json={"reason": "misleading title"}, headers=admin.headers
    )
    assert rejected.status_code == 200, rejected.text
    promotion = rejected.json()["promotion"]
    assert promotion["status"] == "PROMOTION_STATUS_REJECTED" and promotion["reject_reason"] == "misleading title"
    assert promotion["refunded_minor"] == "5000"
    assert await refunded_at_stripe(stack, paid["payment_intent_id"]) == [5000]
    reason = await db.fetchval(
        "select reason from public.promotion_moderation_log where promotion_id = $1 and to_status = 'rejected'",
        uuid.UUID(paid["id"]),
    )
    assert reason == "misleading title"


async def test_only_owners_and_editors_promote_their_published_public_events(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, business, city, event = await promoted_setup(api, db)
    editor, viewer, stranger = await create_user(db), await create_user(db), await create_user(db)
    await add_partner(db, business, editor, "editor")
    await add_partner(db, business, viewer, "viewer")
    await create_promotion(api, editor, event["id"])
    for who, status in ((viewer, 403), (stranger, 403)):
        response = await api.post("/api/promotions", json=promotion_body(event["id"]), headers=who.headers)
        assert response.status_code == status, response.text
    draft = await create_event(api, owner, business_id=business, city=city)
    unlisted = await create_event(
        api,
        owner,
        business_id=business,
        city=city,
        visibility="EVENT_VISIBILITY_UNLISTED",
        status="EVENT_STATUS_PUBLISHED",
    )
    for other in (draft, unlisted):
        response = await api.post("/api/promotions", json=promotion_body(other["id"]), headers=owner.headers)
        assert response.status_code == 400, response.text
    bad = await api.post(
        "/api/promotions",
        json=promotion_body(event["id"], bid_type="BID_TYPE_CPC", bid_minor="200000"),
        headers=owner.headers,
    )
    assert bad.status_code == 400
    anonymous = await api.post("/api/promotions", json=promotion_body(event["id"]))
    assert anonymous.status_code == 401


def violated_field(response: httpx.Response) -> str:
    """The field a 400's BadRequest names."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["message"] and any(d.get("reason") == "INVALID_ARGUMENT" for d in body["details"]), body
    (field,) = [v["field"] for d in body["details"] for v in d.get("field_violations", [])]
    return field


async def test_targeting_lists_are_bounded_in_count_and_length(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, _, _, event = await promoted_setup(api, db)
    # The most they may hold: 50 entries of 64 characters each (cities that exist).
    prefix = uuid.uuid4().hex[:8]
    most = {field: [f"{prefix}{n:02d}".ljust(64, field[0]) for n in range(50)] for field in ("cities", "categories")}
    for slug in most["cities"]:
        await add_city(db, slug)
    draft = await create_promotion(api, owner, event["id"], **most)
    assert len(draft["cities"]) == 50 and len(draft["categories"]) == 50
    for field in ("cities", "categories"):
        for bad in (["a"] * 51, ["a" * 65], [""], ["ok", "x" * 10_000]):
            created = await api.post(
                "/api/promotions", json=promotion_body(event["id"], **{field: bad}), headers=owner.headers
            )
            assert violated_field(created) == field, bad
            patched = await api.patch(f"/api/promotions/{draft['id']}", json={field: bad}, headers=owner.headers)
            assert violated_field(patched) == field, bad
    unchanged = await api.get(f"/api/promotions/{draft['id']}", headers=owner.headers)
    assert unchanged.json()["cities"] == draft["cities"] and unchanged.json()["categories"] == draft["categories"]
    # The same bounds hold for a partner writing in SQL (Supabase's REST): the table's checks.
    too_long_or_empty: list[list[str | None]] = [["a"] * 51, ["a" * 65], [""], [None]]
    for field in ("cities", "categories"):
        for entries in too_long_or_empty:
            async with as_caller(db, owner.id) as conn:
                with pytest.raises(asyncpg.CheckViolationError):
                    await conn.execute(
                        f"insert into public.promotions (event_id, business_id, placements, starts_at, ends_at,"
                        f" budget_minor, currency, bid_type, bid_minor, created_by, {field})"
                        " select id, business_id, '{search}', now(), now() + interval '1 day', 1000, 'THB', 'cpc', 10,"
                        " $2, $3 from public.events where id = $1",
                        uuid.UUID(event["id"]),
                        owner.id,
                        entries,
                    )
            async with as_caller(db, owner.id) as conn:
                with pytest.raises(asyncpg.CheckViolationError):
                    await conn.execute(
                        f"update public.promotions set {field} = $2 where id = $1", uuid.UUID(draft["id"]), entries
                    )


async def test_a_currency_is_an_iso_4217_code(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner, _, _, event = await promoted_setup(api, db)
    for bad in ("XYZ", "BAHT", "TH"):
        created = await api.post(
            "/api/promotions", json=promotion_body(event["id"], currency=bad), headers=owner.headers
        )
        assert violated_field(created) == "currency", bad
    assert (await create_promotion(api, owner, event["id"], currency="thb"))["currency"] == "THB"


async def test_stats_of_a_range_that_ends_before_it_starts_are_a_400(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """A range the wrong way round is the client's mistake (as for the analytics' ranges), not an empty
    200 that reads as a promotion nobody saw."""
    owner, _, _, event = await promoted_setup(api, db)
    draft = await create_promotion(api, owner, event["id"])
    url = f"/api/promotions/{draft['id']}/stats"
    backwards = {"start": "2027-01-02T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    assert violated_field(await api.get(url, params=backwards, headers=owner.headers)) == "end"
    one_day = {"start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00Z"}
    assert (await api.get(url, params=one_day, headers=owner.headers)).status_code == 200


async def test_cities_are_slugs_of_cities_that_exist(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """A promotion for a city nobody lists would never be shown: the slug is checked as `city=` is."""
    owner, _, _, event = await promoted_setup(api, db)
    known = await add_city(db, f"city-{uuid.uuid4().hex[:8]}")
    created = await api.post(
        "/api/promotions", json=promotion_body(event["id"], cities=[known, "atlantis"]), headers=owner.headers
    )
    assert violated_field(created) == "cities" and "atlantis" in created.json()["message"]
    draft = await create_promotion(api, owner, event["id"], cities=[known.upper()])
    assert draft["cities"] == [known]
    # Spaces around a slug do not count either, as in `city=`.
    padded = await create_promotion(api, owner, event["id"], cities=[f" {known.upper()} "])
    assert padded["cities"] == [known]
    patched = await api.patch(f"/api/promotions/{draft['id']}", json={"cities": ["nowhere"]}, headers=owner.headers)
    assert violated_field(patched) == "cities" and "nowhere" in patched.json()["message"]
    assert (await api.get(f"/api/promotions/{draft['id']}", headers=owner.headers)).json()["cities"] == [known]


async def test_partners_see_only_their_businesses_promotions_in_the_api_and_in_sql(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, business, _, event = await promoted_setup(api, db)
    other_owner, _, _, other_event = await promoted_setup(api, db)
    mine = await create_promotion(api, owner, event["id"])
    theirs = await create_promotion(api, other_owner, other_event["id"])
    viewer = await create_user(db)
    await add_partner(db, business, viewer, "viewer")

    assert (await api.get(f"/api/promotions/{theirs['id']}", headers=owner.headers)).status_code == 404
    assert (await api.get(f"/api/promotions/{mine['id']}", headers=viewer.headers)).status_code == 200
    listed = await api.get(f"/api/businesses/{business}/promotions", headers=owner.headers)
    assert [p["id"] for p in listed.json()["promotions"]] == [mine["id"]]
    # As for the business's other figures: 403 for another business's partner, 404 for no business.
    refused = await api.get(f"/api/businesses/{business}/promotions", headers=other_owner.headers)
    assert refused.status_code == 403, refused.text
    unknown = await api.get(f"/api/businesses/{uuid.uuid4()}/promotions", headers=owner.headers)
    assert unknown.status_code == 404, unknown.text
    assert (
        await api.patch(f"/api/promotions/{mine['id']}", json={"bid_minor": "2000"}, headers=viewer.headers)
    ).status_code == 403
    patched = await api.patch(f"/api/promotions/{mine['id']}", json={"bid_minor": "2000"}, headers=owner.headers)
    assert patched.status_code == 200 and patched.json()["bid_minor"] == "2000", patched.text

    async with as_caller(db, owner.id) as conn:
        seen = await conn.fetch("select id from public.promotions")
        assert {str(r["id"]) for r in seen} == {mine["id"]}
    async with as_caller(db, None) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("select id from public.promotions")


@pytest.mark.parametrize(
    "statement",
    [
        "update public.promotions set spent_milli = 0",
        "update public.promotions set reserved_milli = 0",
        "update public.promotions set status = 'active'",
        "update public.promotions set refunded_minor = 100",
        "insert into public.promotion_impressions (promotion_id, day, impressions, spent_milli) "
        "select id, current_date, 1, 0 from public.promotions",
        "insert into public.promotion_clicks (promotion_id, viewer, day, spent_milli) "
        "select id, 'x', current_date, 0 from public.promotions",
        "select localplus_private.lease_promotion(id, 1000) from public.promotions",
        "select localplus_private.record_promotion_click(id, 'x') from public.promotions",
        "select localplus_private.close_promotion(id, 'cancelled', null) from public.promotions",
    ],
)
async def test_nobody_but_the_server_writes_spend_counts_or_status_in_sql(
    api: httpx.AsyncClient, db: asyncpg.Pool, statement: str
) -> None:
    owner, _, _, event = await promoted_setup(api, db)
    await create_promotion(api, owner, event["id"])
    async with as_caller(db, owner.id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)


async def test_partners_never_learn_who_clicked_in_sql(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """A click's viewer is a user id or an unsalted hash of an address and User-Agent (which a guess of
    every address reverses): the business sees how many clicked and what they cost, never who."""
    owner, business, _, event = await promoted_setup(api, db)
    viewer = await add_partner_of_role(db, business, "viewer")
    promotion = await create_promotion(api, owner, event["id"])
    await db.execute(
        "insert into public.promotion_clicks (promotion_id, viewer, day, spent_milli) values ($1, $2, current_date, 0)",
        uuid.UUID(promotion["id"]),
        f"u:{uuid.uuid4()}",
    )
    for partner in (owner, viewer):
        async with as_caller(db, partner.id) as conn:
            assert await conn.fetchval("select count(*) from public.promotion_clicks") == 1
            assert (
                await conn.fetchval("select sum(spent_milli) from public.promotion_clicks where day = current_date")
                == 0
            )
        for statement in ("select viewer from public.promotion_clicks", "select * from public.promotion_clicks"):
            async with as_caller(db, partner.id) as conn:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(statement)


class StripeMeanwhile:
    """A payment provider during whose PaymentIntent call something else happens (what a concurrent
    request could do in the round trip to Stripe); with `stripe`, the calls then go on to it."""

    def __init__(self, meanwhile: Callable[[], Awaitable[None]], stripe: PaymentProvider | None = None) -> None:
        self.meanwhile = meanwhile
        self.stripe = stripe
        self.amounts: list[int] = []
        self.cancelled: list[str] = []

    async def promotion_payment_intent(
        self, promotion_id: uuid.UUID, amount: int, currency: str, draft_version: datetime
    ) -> Checkout:
        self.amounts.append(amount)
        await self.meanwhile()
        if self.stripe is not None:
            return await self.stripe.promotion_payment_intent(promotion_id, amount, currency, draft_version)
        return Checkout(payment_intent_id=f"pi_meanwhile_{uuid.uuid4().hex}", client_secret="secret")

    async def cancel_payment_intent(self, payment_intent_id: str) -> None:
        self.cancelled.append(payment_intent_id)
        if self.stripe is not None:
            await self.stripe.cancel_payment_intent(payment_intent_id)


async def test_checkouts_of_one_draft_at_once_answer_one_payment_that_stays_payable(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    """Stripe answers every checkout of the same budget with the same PaymentIntent (one idempotency
    key). The checkouts that found the draft already awaiting payment cancelled that PaymentIntent: the
    one the promotion was waiting for, which could then never be paid."""
    owner, _, _, event = await promoted_setup(api, db)
    promotion = await create_promotion(api, owner, event["id"])
    url = f"/api/promotions/{promotion['id']}:checkout"
    started = await asyncio.gather(*(api.post(url, json={}, headers=owner.headers) for _ in range(6)))
    assert [r.status_code for r in started] == [200] * 6, [r.text for r in started]
    (intent_id,) = {r.json()["payment_intent_id"] for r in started}
    await pay_at_stripe(stack, intent_id)
    await wait_promotion(api, owner, promotion["id"], "PROMOTION_STATUS_PENDING_REVIEW")


async def test_a_budget_raised_while_checking_out_is_never_the_one_paid_for(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """The draft's budget is read, Stripe asked for that amount, then the draft becomes
    awaiting_payment: a PATCH in between must not leave a promotion paid for 1,000 with a budget of
    10,000,000 (spent, and never refunded past what was paid)."""
    owner, _, _, event = await promoted_setup(api, db)
    promotion = await create_promotion(api, owner, event["id"], budget_minor="1000")

    async def raise_budget() -> None:
        raised = await api.patch(
            f"/api/promotions/{promotion['id']}", json={"budget_minor": "10000000"}, headers=owner.headers
        )
        assert raised.status_code == 200, raised.text

    stripe = StripeMeanwhile(raise_budget)
    caller = current_identity.set(Identity(role="authenticated", user_id=owner.id, claims=claims_of(owner.id)))
    try:
        with pytest.raises(ApiError) as refused:
            await promotions.checkout(Database(db), cast(PaymentProvider, stripe), uuid.UUID(promotion["id"]))
    finally:
        current_identity.reset(caller)
    assert refused.value.reason == "INVALID_STATE"
    assert stripe.amounts == [1000] and len(stripe.cancelled) == 1
    row = await db.fetchrow(
        "select status, budget_minor, payment_intent_id from public.promotions where id = $1",
        uuid.UUID(promotion["id"]),
    )
    assert row is not None and (row["status"], row["budget_minor"], row["payment_intent_id"]) == (
        "draft",
        10000000,
        None,
    )


class KeyRecordingStripe(PaymentProvider):
    """localstripe, recording the idempotency key of every call: localstripe ignores them, Stripe
    answers a repeated one with its first answer for a day."""

    def __init__(self, settings: TicketingSettings) -> None:
        super().__init__(settings)
        self.keys: list[str] = []

    async def _call(self, create: Any, params: dict[str, Any], idempotency_key: str) -> Any:
        self.keys.append(idempotency_key)
        return await super()._call(create, params, idempotency_key)


async def test_a_checkout_after_one_that_found_the_budget_changed_gets_a_payment_it_can_make(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool
) -> None:
    """The checkout that found the budget changed during its call to Stripe cancelled the PaymentIntent
    it got. With a key made of the budget alone, the next checkout of that budget asked again under
    the same key, and Stripe would have answered the cancelled PaymentIntent, which nobody can pay."""
    owner, _, _, event = await promoted_setup(api, db)
    promotion = await create_promotion(api, owner, event["id"], budget_minor="1000")
    url = f"/api/promotions/{promotion['id']}"

    async def set_budget(budget: str) -> None:
        changed = await api.patch(url, json={"budget_minor": budget}, headers=owner.headers)
        assert changed.status_code == 200, changed.text

    stripe = KeyRecordingStripe(
        TicketingSettings.from_env({"LOCALPLUS_ENV": "dev", "STRIPE_API_BASE": stack.stripe.url})
    )
    meanwhile = StripeMeanwhile(lambda: set_budget("2000"), stripe)
    caller = current_identity.set(Identity(role="authenticated", user_id=owner.id, claims=claims_of(owner.id)))
    try:
        with pytest.raises(ApiError):
            await promotions.checkout(Database(db), cast(PaymentProvider, meanwhile), uuid.UUID(promotion["id"]))
        assert len(meanwhile.cancelled) == 1
        await set_budget("1000")
        started = await promotions.checkout(Database(db), stripe, uuid.UUID(promotion["id"]))
    finally:
        current_identity.reset(caller)
    first, again = (key for key in stripe.keys if "-payment-intent-" in key)
    assert first != again
    assert started.payment_intent_id != meanwhile.cancelled[0]
    await pay_at_stripe(stack, started.payment_intent_id)
    await wait_promotion(api, owner, promotion["id"], "PROMOTION_STATUS_PENDING_REVIEW")


async def add_partner_of_role(db: asyncpg.Pool, business: str, role: str) -> User:
    partner = await create_user(db)
    await add_partner(db, business, partner, role)
    return partner


# What is served


async def test_sponsored_results_follow_the_requests_own_filters(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, _, city, event = await promoted_setup(api, db, title="Harbour jazz night", category="music")
    promotion = await active_promotion(api, stack, owner, admin, event["id"])
    pid = promotion["id"]
    starts = datetime.fromisoformat(event["starts_at"].replace("Z", "+00:00"))
    await until_served(api, pid, city=city)
    await until_served(api, pid, city=city, q="jazz")
    await until_served(api, pid, city=city, category="music")
    await until_served(api, pid, city=city, near="13.7246,100.5133")
    await until_served(api, pid, city=city, starts_after=iso(starts - timedelta(hours=1)))
    for params in (
        {"city": city, "q": "opera"},
        {"city": city, "category": "food"},
        {"city": city, "near": "18.79,98.98"},
        {"city": city, "starts_after": iso(starts + timedelta(hours=1))},
        {"city": city, "starts_before": iso(starts - timedelta(hours=1))},
    ):
        await never_served(api, pid, tries=2, **params)


async def test_targeting_placements_cities_and_categories(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, _business, city, event = await promoted_setup(api, db, title="Rooftop salsa", category="dance")
    search_only = await active_promotion(
        api, stack, owner, admin, event["id"], placements=["PROMOTION_PLACEMENT_SEARCH"], categories=["dance"]
    )
    await until_served(api, search_only["id"], city=city, q="salsa", category="dance")
    await until_served(api, search_only["id"], city=city, q="salsa", category=" Dance ")  # as search compares it
    await never_served(api, search_only["id"], tries=2, city=city, category="dance")  # browse
    await never_served(api, search_only["id"], tries=2, city=city, q="salsa")  # no category asked for
    # A promotion for the city is served however the request spells it (spaces around, upper case).
    in_city = await active_promotion(api, stack, owner, admin, event["id"], cities=[city])
    await until_served(api, in_city["id"], city=f" {city.upper()} ")


async def test_never_an_event_already_on_the_page_nor_the_same_event_twice(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, _, city, event = await promoted_setup(api, db)
    first = await active_promotion(api, stack, owner, admin, event["id"])
    second = await active_promotion(api, stack, owner, admin, event["id"], bid_minor="3000")
    await until_served(api, first["id"], city=city)
    await until_served(api, second["id"], city=city)  # both live: servers read live promotions every second
    seen: Counter[str] = Counter()
    for _ in range(20):
        page_one = await listing(api, city=city)
        items = page_one.get("sponsored", [])
        assert len(items) == 1 and items[0]["event"]["id"] == event["id"], items  # once, though promoted twice
        seen[items[0]["promotion_id"]] += 1
        page_two = await listing(api, city=city, page_token=page_one["next_page_token"])
        assert [e["id"] for e in page_two["events"]] == [event["id"]]
        assert page_two.get("sponsored", []) == []  # its only promoted event is on the page
    assert set(seen) == {first["id"], second["id"]}


@pytest.mark.parametrize(
    "change", ["unlisted", "private", "cancelled", "event_ended", "promotion_cancelled", "promotion_ended"]
)
async def test_never_a_hidden_cancelled_or_ended_event_or_promotion(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User, change: str
) -> None:
    owner, _, city, event = await promoted_setup(api, db)
    promotion = await active_promotion(api, stack, owner, admin, event["id"])
    await until_served(api, promotion["id"], city=city)
    event_id, promotion_id = uuid.UUID(event["id"]), uuid.UUID(promotion["id"])
    if change in ("unlisted", "private"):
        await db.execute("update public.events set visibility = $2 where id = $1", event_id, change)
    elif change == "cancelled":
        await db.execute("update public.events set status = 'cancelled' where id = $1", event_id)
    elif change == "event_ended":
        await db.execute(
            "update public.events set starts_at = now() - interval '3 hours', ends_at = now() - interval '1 hour' "
            "where id = $1",
            event_id,
        )
    elif change == "promotion_cancelled":
        cancelled = await api.post(f"/api/promotions/{promotion['id']}:cancel", json={}, headers=owner.headers)
        assert cancelled.status_code == 200, cancelled.text
    else:
        await db.execute("update public.promotions set ends_at = now() where id = $1", promotion_id)
    await asyncio.sleep(1.5)  # the servers' next read of live promotions
    starts_after = iso(datetime.now(UTC) - timedelta(days=1))
    await never_served(api, promotion["id"], tries=3, city=city, starts_after=starts_after)
    await never_served(api, promotion["id"], tries=2, city=city)


async def test_organic_results_are_identical_with_and_without_promotions_over_five_pages(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, business, city, first = await promoted_setup(api, db)
    events = [first]
    for day in range(2, 13):
        starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=day)
        events.append(
            await create_event(
                api, owner, business_id=business, city=city, status="EVENT_STATUS_PUBLISHED",
                starts_at=iso(starts), ends_at=iso(starts + timedelta(hours=2)),
            )
        )  # fmt: skip

    async def pages(**params: Any) -> list[dict[str, Any]]:
        out, token = [], ""
        for _ in range(6):
            body = await listing(api, city=city, page_size=2, page_token=token, **params)
            out.append({"events": body["events"], "next_page_token": body.get("next_page_token", "")})
            token = body.get("next_page_token", "")
            if not token:
                break
        return out

    variants: list[dict[str, Any]] = [{}, {"q": "jazz"}]
    for params in variants:
        before = await pages(**params)
        assert len(before) >= 5
        promoted = [
            await active_promotion(api, stack, owner, admin, e["id"]) for e in (events[0], events[5], events[11])
        ]
        await asyncio.sleep(1.5)
        after = await pages(**params)
        assert after == before
        served = 0
        for page_number, _page in enumerate(after):
            token = "" if page_number == 0 else after[page_number - 1]["next_page_token"]
            body = await listing(api, city=city, page_size=2, page_token=token, **params)
            on_page = {e["id"] for e in body["events"]}
            items = body.get("sponsored", [])
            assert len(items) <= SLOTS
            assert not on_page & {item["event"]["id"] for item in items}
            assert len({item["event"]["id"] for item in items}) == len(items)
            served += len(items)
        assert served > 0
        for promotion in promoted:
            await api.post(f"/api/promotions/{promotion['id']}:cancel", json={}, headers=owner.headers)
        await asyncio.sleep(1.5)


# Spend


async def test_fifty_concurrent_impressions_with_one_impression_of_budget_left_spend_it_once(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, _, city, event = await promoted_setup(api, db)
    paid = await paid_promotion(api, stack, owner, event["id"], budget_minor="10", bid_minor="1000")
    pid = uuid.UUID(paid["id"])
    # 10 THB of budget is 10,000 thousandths; one impression (1000 per thousand) costs 1000: one left.
    await db.execute("update public.promotions set reserved_milli = 9000, spent_milli = 9000 where id = $1", pid)
    approved = await api.post(f"/api/promotions/{paid['id']}:approve", json={}, headers=admin.headers)
    assert approved.status_code == 200
    await asyncio.sleep(1.5)  # every server has read it live

    async with viewers_at(stack, 50) as viewers:  # 50 people, each charged (the frequency cap aside)
        bodies = await asyncio.gather(*(listing(viewer, city=city) for viewer in viewers))
    served = sum(sponsored_ids(body).count(paid["id"]) for body in bodies)
    assert served == 1
    await flushed(db, paid["id"], 1)
    row = await db.fetchrow(
        "select spent_milli, reserved_milli, budget_minor from public.promotions where id = $1", pid
    )
    assert row is not None and row["spent_milli"] == 10_000 == row["budget_minor"] * 1000
    await never_served(api, paid["id"], tries=3, city=city)


async def test_pacing_spreads_the_budget_over_the_promotions_days(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, _, city, event = await promoted_setup(api, db)
    now = datetime.now(UTC).replace(microsecond=0)
    # Ten days, 30 impressions of budget: three may go on the first day.
    promotion = await active_promotion(
        api, stack, owner, admin, event["id"], budget_minor="30", bid_minor="1000",
        starts_at=iso(now - timedelta(minutes=1)), ends_at=iso(now - timedelta(minutes=1) + timedelta(days=10)),
    )  # fmt: skip
    await asyncio.sleep(1.5)
    async with viewers_at(stack, 12) as viewers:
        bodies = [await listing(viewer, city=city) for viewer in viewers]
    assert sum(sponsored_ids(body).count(promotion["id"]) for body in bodies) == 3
    await flushed(db, promotion["id"], 3)
    assert (
        await db.fetchval("select spent_milli from public.promotions where id = $1", uuid.UUID(promotion["id"])) == 3000
    )


async def promotion_figures(api: httpx.AsyncClient, who: User, promotion_id: str) -> tuple[int, int]:
    """Impressions and spent_minor in the promotion's stats."""
    stats = await api.get(f"/api/promotions/{promotion_id}/stats", headers=who.headers)
    assert stats.status_code == 200, stats.text
    return int(stats.json().get("impressions", 0)), int(stats.json().get("spent_minor", 0))


async def test_a_viewer_listing_in_a_loop_is_charged_one_impression_and_two_viewers_two(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    """The frequency cap: one anonymous address listing 20 times (a new User-Agent each time, which any
    client writes) is shown the promotion every time and charged one impression; another address, one more."""
    owner, _, city, event = await promoted_setup(api, db)
    # 1000 per thousand impressions: an impression costs 1 minor unit.
    promotion = await active_promotion(api, stack, owner, admin, event["id"], bid_minor="1000")
    pid = promotion["id"]
    await asyncio.sleep(1.5)  # every server has read it live

    async def served_to(viewer: httpx.AsyncClient) -> int:
        served = 0
        for n in range(20):
            response = await viewer.get(
                "/api/events", params={"city": city, "page_size": 1}, headers={"user-agent": f"browser {n}"}
            )
            assert response.status_code == 200, response.text
            served += sponsored_ids(response.json()).count(pid)
        return served

    async with viewers_at(stack, 2) as (one, other):
        assert await served_to(one) == 20
        await flushed(db, pid, 1)
        await asyncio.sleep(1.5)  # nothing more comes with a later flush
        assert await promotion_figures(api, owner, pid) == (1, 1)
        assert await db.fetchval("select spent_milli from public.promotions where id = $1", uuid.UUID(pid)) == 1000
        assert await served_to(other) == 20
        await flushed(db, pid, 2)
        await asyncio.sleep(1.5)
        assert await promotion_figures(api, owner, pid) == (2, 2)


def test_the_frequency_caps_memory_is_bounded_and_its_entries_expire() -> None:
    now = [0.0]
    charged = ChargedViewers(window_s=60.0, max_entries=2, clock=lambda: now[0])
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert charged.claim("a:x", first) and not charged.claim("a:x", first)
    assert charged.claim("a:y", first) and charged.claim("a:x", second)  # another viewer, another promotion
    # Full: the oldest pair was forgotten (charged again), never more than two kept.
    assert charged.claim("a:x", first) and not charged.claim("a:x", second)
    now[0] = 59.0
    assert not charged.claim("a:x", first)
    now[0] = 60.0  # the window is over for what was charged at 0
    assert charged.claim("a:x", second) and not charged.claim("a:x", second)
    charged.forget("a:x", third)  # nothing to forget: no error
    charged.forget("a:x", second)
    assert charged.claim("a:x", second)


async def test_competing_promotions_rotate_weighted_by_price(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    # The page (of one) shows the soonest event, promoted by nobody; three later ones compete.
    owner, business, city, _ = await promoted_setup(api, db)
    later = []
    for day in (8, 9, 10):
        starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=day)
        later.append(
            await create_event(
                api, owner, business_id=business, city=city, status="EVENT_STATUS_PUBLISHED",
                starts_at=iso(starts), ends_at=iso(starts + timedelta(hours=2)),
            )
        )  # fmt: skip
    cheap = await active_promotion(api, stack, owner, admin, later[0]["id"], bid_minor="100", budget_minor="100000")
    dear = [
        await active_promotion(api, stack, owner, admin, e["id"], bid_minor="2000", budget_minor="100000")
        for e in later[1:]
    ]
    await asyncio.sleep(1.5)
    shown: Counter[str] = Counter()
    for _ in range(60):
        shown.update(sponsored_ids(await listing(api, city=city, page_size=1)))
    assert shown[cheap["id"]] < min(shown[d["id"]] for d in dear)
    assert sum(shown.values()) == 60 * SLOTS


# Clicks, stats, refunds


async def test_clicks_count_once_per_viewer_per_day_and_never_for_the_team_and_stats_recount(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, business, city, event = await promoted_setup(api, db)
    promotion = await active_promotion(api, stack, owner, admin, event["id"], bid_type="BID_TYPE_CPC", bid_minor="500")
    pid = promotion["id"]
    viewer, editor = await create_user(db), await create_user(db)
    await add_partner(db, business, editor, "editor")
    await until_served(api, pid, city=city)
    for _ in range(7):
        assert pid in sponsored_ids(await listing(api, city=city))
    assert pid in sponsored_ids(await listing(api, viewer, city=city))
    served = 2  # two viewers (this address, `viewer`): an impression each within the hour, however often
    # The business's own team sees it, uncounted.
    for _ in range(3):
        assert pid in sponsored_ids(await listing(api, owner, city=city))

    async def click(who: User | None = None, headers: dict[str, str] | None = None, **body: Any) -> bool:
        headers = {"user-agent": "promo-test"} | (headers or {}) | (who.headers if who else {})
        response = await api.post(f"/api/promotions/{pid}:click", json=body, headers=headers)
        assert response.status_code == 200, response.text
        counted: bool = response.json().get("counted", False)
        return counted

    assert await click(viewer) and not await click(viewer)
    # An anonymous viewer is the address the gateway saw and the User-Agent, as for views: a made-up
    # viewer_id or x-forwarded-for is not a new viewer, so nobody can spend a CPC budget by rotating them.
    assert await click(viewer_id="install-1") and not await click(viewer_id="install-1")
    assert not await click(viewer_id="install-2") and not await click()
    assert not await click(viewer_id="install-3", headers={"x-forwarded-for": "203.0.113.9"})
    # Nor is a made-up User-Agent: an anonymous click pays once per address and day, whatever the browser.
    assert not await click(headers={"user-agent": "another browser"})
    assert not await click(headers={"user-agent": f"rotated {uuid.uuid4()}"})
    assert not await click(editor) and not await click(owner)

    await flushed(db, pid, served)
    stats = await api.get(f"/api/promotions/{pid}/stats", headers=editor.headers)
    assert stats.status_code == 200, stats.text
    figures = stats.json()
    recount = await db.fetchrow(
        "select (select sum(impressions) from public.promotion_impressions where promotion_id = $1) as impressions, "
        "(select count(*) from public.promotion_clicks where promotion_id = $1) as clicks, "
        "(select spent_milli from public.promotions where id = $1) as spent_milli",
        uuid.UUID(pid),
    )
    assert recount is not None
    assert int(figures["impressions"]) == recount["impressions"] == served
    assert int(figures["clicks"]) == recount["clicks"] == 2
    assert int(figures["spent_minor"]) == recount["spent_milli"] // 1000 == 1000
    assert figures["click_through_rate"] == pytest.approx(2 / served)
    (day,) = figures["days"]
    assert day["date"] == datetime.now(UTC).date().isoformat() and int(day["clicks"]) == 2
    assert (await api.get(f"/api/promotions/{pid}/stats", headers=viewer.headers)).status_code == 404


async def test_cancelling_refunds_the_unspent_budget_through_localstripe(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, _, city, event = await promoted_setup(api, db)
    promotion = await active_promotion(api, stack, owner, admin, event["id"], budget_minor="1000", bid_minor="1500")
    await until_served(api, promotion["id"], city=city)
    for _ in range(4):
        assert promotion["id"] in sponsored_ids(await listing(api, city=city))
    served = 1  # one viewer, charged once within the hour
    await flushed(db, promotion["id"], served)
    cancelled = await api.post(f"/api/promotions/{promotion['id']}:cancel", json={}, headers=owner.headers)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()["promotion"]
    spent = math.ceil(served * 1500 / 1000)
    assert body["status"] == "PROMOTION_STATUS_CANCELLED" and int(body["refunded_minor"]) == 1000 - spent
    assert await refunded_at_stripe(stack, promotion["payment_intent_id"]) == [1000 - spent]
    again = await api.post(f"/api/promotions/{promotion['id']}:cancel", json={}, headers=owner.headers)
    assert again.status_code == 409
    assert await refunded_at_stripe(stack, promotion["payment_intent_id"]) == [1000 - spent]


async def test_fifty_concurrent_leases_of_the_last_impression_grant_it_once_where_a_naive_check_would_not(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    """The SQL guard itself, from 50 connections at once (several events processes would lease so): first
    a naive check-then-add with a 20 ms window grants the last impression many times, which shows the
    test catches the race; then localplus_private.lease_promotion grants it once."""
    owner, _, _, event = await promoted_setup(api, db)
    paid = await paid_promotion(api, stack, owner, event["id"], budget_minor="10", bid_minor="1000")
    pid = uuid.UUID(paid["id"])
    await db.execute(
        "update public.promotions set status = 'active', reserved_milli = 9000, spent_milli = 9000 where id = $1", pid
    )
    # The naive version on a copy of the ledger without the check constraint (which would stop it at commit).

    async def naive(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            left = await conn.fetchval(f"select budget - reserved from naive_ledger_{pid.hex} where id = $1", pid)
            await asyncio.sleep(0.02)
            if left < 1000:
                return 0
            await conn.execute(f"update naive_ledger_{pid.hex} set reserved = reserved + 1000 where id = $1", pid)
            return 1000

    async def real(conn: asyncpg.Connection) -> int:
        granted: int = await conn.fetchval("select localplus_private.lease_promotion($1, 1000)", pid)
        return granted

    pool = await asyncpg.create_pool(stack.database_url, min_size=50, max_size=50)
    try:
        await pool.execute(f"create table naive_ledger_{pid.hex} (id uuid primary key, reserved bigint, budget bigint)")
        await pool.execute(f"insert into naive_ledger_{pid.hex} values ($1, 9000, 10000)", pid)

        async def each(work: Any) -> int:
            async with pool.acquire() as conn:
                granted: int = await work(conn)
                return granted

        naive_grants = await asyncio.gather(*(each(naive) for _ in range(50)))
        assert sum(naive_grants) > 1000  # the race: the last impression granted many times
        real_grants = await asyncio.gather(*(each(real) for _ in range(50)))
        assert sorted(real_grants, reverse=True)[:2] == [1000, 0] and sum(real_grants) == 1000
    finally:
        await pool.execute(f"drop table if exists naive_ledger_{pid.hex}")
        await pool.close()
    row = await db.fetchrow("select reserved_milli, budget_minor from public.promotions where id = $1", pid)
    assert row is not None and row["reserved_milli"] == row["budget_minor"] * 1000


async def test_the_occurrence_list_answers_sponsored_results_by_the_same_rules(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, _, city, event = await promoted_setup(api, db)
    promotion = await active_promotion(api, stack, owner, admin, event["id"])
    now = datetime.now(UTC)
    window: dict[str, str | int] = {
        "city": city,
        "start": iso(now),
        "end": iso(now + timedelta(days=8)),
        "page_size": 1,
    }
    deadline = time.monotonic() + 15
    while True:
        response = await api.get("/api/occurrences", params=window)
        assert response.status_code == 200, response.text
        body = response.json()
        if body.get("sponsored") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    (item,) = body["sponsored"]
    assert item["promotion_id"] == promotion["id"] and item["event"]["id"] == event["id"]
    assert item["occurrence"]["starts_at"] == event["starts_at"] and item["position"] == 0
    assert [o["event"]["id"] for o in body["occurrences"]] != [event["id"]]
    # The promoted event on the page is never sponsored beside it; outside the window it is not either.
    second = (await api.get("/api/occurrences", params=window | {"page_token": body["next_page_token"]})).json()
    assert [o["event"]["id"] for o in second["occurrences"]] == [event["id"]] and not second.get("sponsored")
    early = window | {"end": iso(now + timedelta(days=6))}
    assert not (await api.get("/api/occurrences", params=early)).json().get("sponsored")


async def test_a_promotion_past_its_end_is_ended_and_refunds_what_is_unspent(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner, _, city, event = await promoted_setup(api, db)
    promotion = await active_promotion(api, stack, owner, admin, event["id"], budget_minor="1000", bid_minor="2500")
    await until_served(api, promotion["id"], city=city)
    await flushed(db, promotion["id"], 1)
    await db.execute("update public.promotions set ends_at = now() where id = $1", uuid.UUID(promotion["id"]))
    # The ticketing service's sweep (every ORDER_SWEEP_SECONDS, 30 s by default) ends it.
    ended = await wait_promotion(api, owner, promotion["id"], "PROMOTION_STATUS_ENDED", within_s=45)
    assert int(ended["refunded_minor"]) == 1000 - 3  # 2.5 spent, rounded up
    for _ in range(30):  # sent to Stripe right after the promotion is closed
        if await refunded_at_stripe(stack, promotion["payment_intent_id"]):
            break
        await asyncio.sleep(0.3)
    assert await refunded_at_stripe(stack, promotion["payment_intent_id"]) == [997]
