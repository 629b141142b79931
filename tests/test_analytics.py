"""Analytics (issue 13): the daily rollups equal a recount from the raw rows after a mixed workload
through the gateway (registrations and cancellations, saves and unsaves, free and paid orders,
refunds, check-ins, views from many signed-in and anonymous people at once); views count once per
viewer, event and day and never for the event's editors; partners see only their own events and
businesses, in the API and in SQL as Supabase's REST would run it; the CSV twins say what the JSON
says."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from localplus_common.db import Database
from localplus_dev.stack import Stack
from localplus_events import analytics
from tests.sql_callers import as_caller, new_event, new_user
from tests.stripe_support import awaiting_payment
from tests.support import User, add_city, create_event, create_user, service_role_token
from tests.ticketing_support import checkout, event_with_tickets, pay_at_stripe, reserve, wait_for_status

FIGURES = ("views", "saves", "registrations", "orders", "tickets", "revenue_minor", "refunds_minor", "check_ins")
MONEY = ("revenue_minor", "refunds_minor")

# The figures of events by day, from the raw rows, each day in `$2` (a time zone); money in `$3`.
RECOUNT = """
with facts (event_id, at, views, saves, registrations, orders, tickets, revenue_minor, refunds_minor, check_ins) as (
  select event_id, created_at, 0, 0, 1, 0, 0, 0, 0, 0 from public.event_participants
   where status in ('going', 'waitlisted', 'attended')
  union all
  select event_id, created_at, 0, 1, 0, 0, 0, 0, 0, 0 from public.event_saves
  union all
  select o.event_id, o.paid_at, 0, 0, 0, 1,
         (select sum(i.quantity) from public.order_items i where i.order_id = o.id),
         case when o.currency = $3 then o.total_minor else 0 end, 0, 0
    from public.orders o where o.paid_at is not null
  union all
  select o.event_id, r.created_at, 0, 0, 0, 0, 0, 0, case when o.currency = $3 then r.amount_minor else 0 end, 0
    from public.refunds r join public.orders o on o.id = r.order_id
   where r.payment_intent_id is null and o.paid_at is not null
  union all
  select event_id, checked_in_at, 0, 0, 0, 0, 0, 0, 0, 1 from public.tickets where checked_in_at is not null
)
select (at at time zone $2)::date as day, sum(views)::integer as views, sum(saves)::integer as saves,
       sum(registrations)::integer as registrations, sum(orders)::integer as orders,
       sum(tickets)::integer as tickets, sum(revenue_minor)::bigint as revenue_minor,
       sum(refunds_minor)::bigint as refunds_minor, sum(check_ins)::integer as check_ins
  from facts where event_id = any($1::uuid[]) group by 1
"""
# Views are their own raw rows: one per viewer, event and day (the event's time zone).
RECOUNT_VIEWS = (
    "select day, count(*)::integer as views from public.event_views where event_id = any($1::uuid[]) group by 1"
)


async def fold(db: asyncpg.Pool) -> None:
    """What the events service's fold job does every ANALYTICS_FOLD_SECONDS, now."""
    await analytics.fold(Database(db))


async def recount(db: asyncpg.Pool, event_ids: list[str], timezone: str, currency: str) -> dict[str, dict[str, int]]:
    days: dict[str, dict[str, int]] = {}
    for row in await db.fetch(RECOUNT, event_ids, timezone, currency):
        days[row["day"].isoformat()] = {name: int(row[name]) for name in FIGURES}
    for row in await db.fetch(RECOUNT_VIEWS, event_ids):
        day = days.setdefault(row["day"].isoformat(), dict.fromkeys(FIGURES, 0))
        day["views"] += row["views"]
    return {day: figures for day, figures in days.items() if any(figures.values())}


def figures_of(body: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The days with anything, from an analytics body (int64 figures arrive as strings)."""
    days = {day["date"]: {name: int(day.get(name, 0)) for name in FIGURES} for day in body["days"]}
    return {day: figures for day, figures in days.items() if any(figures.values())}


async def view(
    api: httpx.AsyncClient, event_id: str, who: User | None, agent: str = "test-browser", forwarded_for: str = ""
) -> bool:
    headers = {"user-agent": agent} | (who.headers if who else {})
    if forwarded_for:
        headers["x-forwarded-for"] = forwarded_for
    response = await api.post(f"/api/events/{event_id}:view", json={}, headers=headers)
    assert response.status_code == 200, response.text
    counted: bool = response.json().get("counted", False)
    return counted


async def new_business(db: asyncpg.Pool, partners: dict[str, User]) -> str:
    business_id = uuid.uuid4()
    await db.execute("insert into public.businesses (id, name) values ($1, $2)", business_id, f"Biz {business_id}")
    for role, person in partners.items():
        await db.execute(
            "insert into public.partners (business_id, user_id, role) values ($1, $2, $3)", business_id, person.id, role
        )
    return str(business_id)


async def register(api: httpx.AsyncClient, event_id: str, person: User) -> None:
    response = await api.post(f"/api/events/{event_id}/participants", json={}, headers=person.headers)
    assert response.status_code == 200, response.text


async def save(api: httpx.AsyncClient, event_id: str, person: User) -> None:
    response = await api.put(f"/api/me/saved-events/{event_id}", headers=person.headers)
    assert response.status_code == 200, response.text


async def free_order(api: httpx.AsyncClient, buyer: User, ticket_type_id: str, quantity: int) -> dict[str, Any]:
    reserved = await reserve(api, buyer, ticket_type_id, quantity)
    assert reserved.status_code == 200, reserved.text
    paid = await checkout(api, buyer, reserved.json()["id"], mode="CHECKOUT_MODE_PAYMENT_INTENT")
    assert paid.status_code == 200, paid.text
    order: dict[str, Any] = paid.json()["order"]
    assert order["status"] == "ORDER_STATUS_PAID", order
    return order


async def ticket_type(api: httpx.AsyncClient, owner: User, event_id: str, price_minor: int) -> dict[str, Any]:
    body = {"name": "Entry", "currency": "THB", "inventory": 100, "price_minor": price_minor, "max_per_order": 5}
    created = await api.post(f"/api/events/{event_id}/ticket-types", json=body, headers=owner.headers)
    assert created.status_code == 200, created.text
    result: dict[str, Any] = created.json()
    return result


async def tickets_of(db: asyncpg.Pool, order_id: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch("select id, code from public.tickets where order_id = $1 order by id", uuid.UUID(order_id))
    )


async def test_analytics_equal_a_recount_after_a_mixed_workload(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, admin: User
) -> None:
    owner = await create_user(db)
    business = await new_business(db, {"owner": owner})
    city = await add_city(db, f"analytics-{uuid.uuid4().hex[:8]}")
    category = f"cat-{uuid.uuid4().hex[:8]}"
    place = {"business_id": business, "city": city, "category": category}
    paid_event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", **place)
    paid_type = await ticket_type(api, owner, paid_event["id"], 30_000)
    free_event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", capacity=8, **place)
    free_type = await ticket_type(api, owner, free_event["id"], 0)
    events = [paid_event["id"], free_event["id"]]
    people = [await create_user(db) for _ in range(24)]

    # Views: everyone views both events, some twice at once; anonymous people by browser; the owner never counts.
    async def views_of(event_id: str) -> None:
        signed = [view(api, event_id, person) for person in people]
        repeats = [view(api, event_id, person) for person in people[:8]]
        anonymous = [view(api, event_id, None, f"browser-{n % 6}") for n in range(18)]
        await asyncio.gather(*signed, *repeats, *anonymous, view(api, event_id, owner))

    await asyncio.gather(*(views_of(event_id) for event_id in events))
    # Registrations (the free event fills up: the rest wait), cancellations, saves and unsaves.
    await asyncio.gather(*(register(api, event_id, person) for event_id in events for person in people[:14]))
    for person in people[:5]:
        cancelled = await api.delete(f"/api/events/{free_event['id']}/participants", headers=person.headers)
        assert cancelled.status_code == 200, cancelled.text
    await register(api, free_event["id"], people[0])  # back again
    await asyncio.gather(*(save(api, event_id, person) for event_id in events for person in people[10:20]))
    for person in people[10:13]:
        unsaved = await api.delete(f"/api/me/saved-events/{paid_event['id']}", headers=person.headers)
        assert unsaved.status_code == 200, unsaved.text
    # Free orders, checked in at the door; one refunded.
    free_orders = await asyncio.gather(
        *(free_order(api, person, free_type["id"], 1 + n % 3) for n, person in enumerate(people[:6]))
    )
    for order in free_orders[:3]:
        for ticket in await tickets_of(db, order["id"]):
            scanned = await api.post(
                "/api/check-ins", json={"event_id": free_event["id"], "code": ticket["code"]}, headers=owner.headers
            )
            assert scanned.status_code == 200, scanned.text
    refunded = await api.post(f"/api/orders/{free_orders[5]['id']}:refund", json={}, headers=owner.headers)
    assert refunded.status_code == 200, refunded.text
    # Paid orders at Stripe: one refunded whole, one in part; an abandoned one counts nowhere.
    paid = []
    for n, person in enumerate(people[14:17]):
        order = await awaiting_payment(api, person, paid_type["id"], quantity=n + 1)
        await pay_at_stripe(stack, order["payment_intent_id"])
        paid.append(await wait_for_status(api, person, order["id"], "ORDER_STATUS_PAID"))
    abandoned = await reserve(api, people[20], paid_type["id"], 2)
    assert abandoned.status_code == 200, abandoned.text
    whole = await api.post(f"/api/orders/{paid[0]['id']}:refund", json={}, headers=owner.headers)
    assert whole.status_code == 200, whole.text
    one_ticket = str((await tickets_of(db, paid[2]["id"]))[0]["id"])
    part = await api.post(
        f"/api/orders/{paid[2]['id']}:refund", json={"ticket_ids": [one_ticket]}, headers=owner.headers
    )
    assert part.status_code == 200, part.text
    await fold(db)

    # Each event, the business and the platform's city and category: as the raw rows say.
    for event_id in events:
        got = await api.get(f"/api/events/{event_id}/analytics", headers=owner.headers)
        assert got.status_code == 200, got.text
        assert figures_of(got.json()) == await recount(db, [event_id], "Asia/Bangkok", "THB")
    business_body = (await api.get(f"/api/businesses/{business}/analytics", headers=owner.headers)).json()
    assert figures_of(business_body) == await recount(db, events, "Asia/Bangkok", "THB")
    assert business_body["currency"] == "THB"
    platform = await api.get("/api/analytics", params={"city": city, "category": category}, headers=admin.headers)
    assert platform.status_code == 200, platform.text
    assert figures_of(platform.json()) == await recount(db, events, "Asia/Bangkok", "THB")

    # And as the test itself counted: 24 people and 6 browsers viewed each event, once a day.
    funnel = platform.json()["funnel"]
    assert funnel["views"] == 2 * (24 + 6)
    assert funnel["registrations"] == 2 * 14 - 5 + 1
    assert funnel["saves"] == 2 * 10 - 3
    assert funnel["orders"] == 6 + 3
    totals = {name: sum(day[name] for day in figures_of(platform.json()).values()) for name in FIGURES}
    assert totals["tickets"] == sum(1 + n % 3 for n in range(6)) + 1 + 2 + 3
    assert totals["revenue_minor"] == 30_000 * 6
    assert totals["refunds_minor"] == 30_000 * 1 + 30_000
    assert totals["check_ins"] == sum(1 + n % 3 for n in range(3))
    # Folding again adds nothing.
    await fold(db)
    again = await api.get("/api/analytics", params={"city": city, "category": category}, headers=admin.headers)
    assert again.json()["funnel"] == funnel


async def test_platform_analytics_take_a_category_whatever_its_case_and_spaces(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    """`GET /api/analytics?category=Music` counted no event of category `music`: the category is
    compared without regard to case or spaces around it, as search and the moderation queue do."""
    owner = await create_user(db)
    city = await add_city(db, f"analytics-{uuid.uuid4().hex[:8]}")
    category = f"cat-{uuid.uuid4().hex[:8]}"
    spellings = [category, f" {category.upper()} "]
    for spelled in spellings:
        event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", city=city, category=spelled)
        await register(api, event["id"], await create_user(db))
    for asked in [*spellings, category.title(), f"{category}\t"]:
        got = await api.get("/api/analytics", params={"city": city, "category": asked}, headers=admin.headers)
        assert got.status_code == 200, got.text
        assert got.json()["funnel"].get("registrations") == 2, (asked, got.json()["funnel"])


async def test_a_view_counts_once_per_viewer_and_day_and_never_for_editors(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner, editor, staff, visitor = [await create_user(db) for _ in range(4)]
    business = await new_business(db, {"owner": owner, "viewer": staff})
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", business_id=business)
    granted = await api.post(
        f"/api/events/{event['id']}/permissions",
        json={"user_id": str(editor.id), "role": "EVENT_ROLE_EDITOR"},
        headers=owner.headers,
    )
    assert granted.status_code == 200, granted.text

    assert await view(api, event["id"], visitor) is True
    assert await view(api, event["id"], visitor) is False  # the same day
    assert await view(api, event["id"], visitor, "another-browser") is False  # a signed-in viewer is their user
    assert await view(api, event["id"], None, "firefox") is True
    assert await view(api, event["id"], None, "firefox") is False  # same address, same browser
    # The address is the one the gateway saw: an x-forwarded-for the client made up changes nothing.
    assert await view(api, event["id"], None, "firefox", forwarded_for="203.0.113.9") is False
    assert await view(api, event["id"], None, "safari") is True
    assert await view(api, event["id"], owner) is False
    assert await view(api, event["id"], editor) is False
    assert await view(api, event["id"], staff) is True  # a partner who may only look is a viewer like others
    # Twenty at once by one person: one view.
    at_once = await asyncio.gather(*(view(api, event["id"], None, "chrome") for _ in range(20)))
    assert at_once.count(True) == 1

    await fold(db)
    body = (await api.get(f"/api/events/{event['id']}/analytics", headers=owner.headers)).json()
    assert body["funnel"]["views"] == 5
    # Nobody may count views of what they cannot see; a bad id is a 400.
    draft = await create_event(api, owner)
    hidden = await api.post(f"/api/events/{draft['id']}:view", json={}, headers={"user-agent": "x"})
    assert hidden.status_code == 404, hidden.text
    assert (await api.post("/api/events/nope:view", json={})).status_code == 400
    bad_token = await api.post(f"/api/events/{event['id']}:view", json={}, headers={"authorization": "Bearer nope"})
    assert bad_token.status_code == 401


async def test_partners_see_only_their_own_analytics_through_the_api(
    api: httpx.AsyncClient, db: asyncpg.Pool, admin: User
) -> None:
    owner, other_owner, staff, stranger = [await create_user(db) for _ in range(4)]
    business = await new_business(db, {"owner": owner, "viewer": staff})
    other_business = await new_business(db, {"owner": other_owner})
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", business_id=business)
    other_event = await create_event(api, other_owner, status="EVENT_STATUS_PUBLISHED", business_id=other_business)
    draft = await create_event(api, other_owner, business_id=other_business)

    def status(path: str, who: User | None, **params: str) -> Any:
        return api.get(path, params=params, headers=who.headers if who else {})

    assert (await status(f"/api/events/{event['id']}/analytics", staff)).status_code == 200
    assert (await status(f"/api/businesses/{business}/analytics", staff)).status_code == 200
    assert (await status(f"/api/businesses/{business}/analytics.csv", staff)).status_code == 200
    assert (await status(f"/api/events/{other_event['id']}/analytics", owner)).status_code == 403
    # A viewer by permission sees the event's; a participant does not.
    granted = await api.post(
        f"/api/events/{other_event['id']}/permissions",
        json={"user_id": str(stranger.id), "role": "EVENT_ROLE_VIEWER"},
        headers=other_owner.headers,
    )
    assert granted.status_code == 200, granted.text
    assert (await status(f"/api/events/{other_event['id']}/analytics", stranger)).status_code == 200
    await register(api, other_event["id"], owner)
    assert (await status(f"/api/events/{other_event['id']}/analytics", owner)).status_code == 403
    assert (await status(f"/api/events/{draft['id']}/analytics", owner)).status_code == 404
    assert (await status(f"/api/businesses/{other_business}/analytics", owner)).status_code == 403
    assert (await status(f"/api/businesses/{other_business}/analytics.csv", stranger)).status_code == 403
    assert (await status(f"/api/businesses/{uuid.uuid4()}/analytics", owner)).status_code == 404
    assert (await status(f"/api/businesses/{business}/analytics", None)).status_code == 401
    assert (await status("/api/analytics", owner)).status_code == 403
    assert (await status("/api/analytics.csv", owner)).status_code == 403
    assert (await status("/api/analytics", None)).status_code == 401
    assert (await status("/api/analytics", admin)).status_code == 200
    assert (await status(f"/api/businesses/{other_business}/analytics", admin)).status_code == 200
    assert (await status("/api/analytics", admin, city="atlantis")).status_code == 400
    backend = {"authorization": f"Bearer {service_role_token()}"}
    assert (await api.get("/api/analytics", headers=backend)).status_code == 200
    # Ranges: dates only, in order, at most a year and a day or so.
    path = f"/api/events/{event['id']}/analytics"
    assert (await status(path, owner, start="2026-13-01")).status_code == 400
    assert (await status(path, owner, start="2026-03-02", end="2026-03-01")).status_code == 400
    assert (await status(path, owner, start="2025-01-01", end="2026-03-01")).status_code == 400
    # Days outside the API's range of times (1900 to 2200), also as the end a default start is counted
    # back from (a 500 for a day in year 1), on every analytics route and its CSV twin.
    for route in (path, f"{path}.csv", f"/api/businesses/{business}/analytics", "/api/analytics"):
        who = admin if route == "/api/analytics" else owner
        for dates in ({"end": "0001-01-01"}, {"start": "1899-12-31", "end": "1900-01-05"}, {"start": "2200-01-01"}):
            refused = await status(route, who, **dates)
            assert refused.status_code == 400, (route, dates, refused.text)
    year = await status(path, owner, start="2025-03-01", end="2026-03-01")
    assert year.status_code == 200 and len(year.json()["days"]) == 366


@pytest.fixture
async def sql_db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def test_partners_see_only_their_own_rollups_in_sql(sql_db: asyncpg.Pool) -> None:
    """As Supabase's REST runs SQL, with its default grants of everything (so only the policies hold)."""
    partner, other, admin = await new_user(sql_db), await new_user(sql_db), await new_user(sql_db)
    businesses = [uuid.uuid4(), uuid.uuid4()]
    for business, person in zip(businesses, (partner, other), strict=True):
        await sql_db.execute("insert into public.businesses (id, name) values ($1, 'b')", business)
        await sql_db.execute(
            "insert into public.partners (business_id, user_id, role) values ($1, $2, 'viewer')", business, person
        )
    events = [
        await new_event(sql_db, person, business_id=b) for b, person in zip(businesses, (partner, other), strict=True)
    ]
    # A save of each event writes all three rollups (the day of each is today).
    for event_id in events:
        await sql_db.execute("insert into public.event_saves (user_id, event_id) values ($1, $2)", admin, event_id)
    tables = ("analytics_event_days", "analytics_business_days", "analytics_city_days", "event_views")

    async with as_caller(sql_db, partner, grant_all_on=tables) as conn:
        seen = await conn.fetch("select event_id from public.analytics_event_days where event_id = any($1)", events)
        assert {row["event_id"] for row in seen} == {events[0]}
        seen = await conn.fetch(
            "select business_id from public.analytics_business_days where business_id = any($1)", businesses
        )
        assert {row["business_id"] for row in seen} == {businesses[0]}
        assert await conn.fetchval("select count(*) from public.analytics_city_days") == 0
        assert await conn.fetchval("select count(*) from public.event_views") == 0
        updated = await conn.execute("update public.analytics_business_days set saves = saves + 100")
        assert updated == "UPDATE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "insert into public.analytics_event_days (event_id, day, views) values ($1, current_date, 1000)",
                events[0],
            )
    async with as_caller(sql_db, partner, grant_all_on=tables) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "insert into public.event_views (event_id, day, viewer) values ($1, current_date, 'x')", events[0]
            )
    # An event's viewer by permission sees that event's rows, and no business's.
    viewer = await new_user(sql_db)
    await sql_db.execute(
        "insert into public.event_permissions (event_id, user_id, role) values ($1, $2, 'viewer')", events[1], viewer
    )
    async with as_caller(sql_db, viewer) as conn:
        seen = await conn.fetch("select event_id from public.analytics_event_days where event_id = any($1)", events)
        assert {row["event_id"] for row in seen} == {events[1]}
        assert (
            await conn.fetchval(
                "select count(*) from public.analytics_business_days where business_id = any($1)", businesses
            )
            == 0
        )
    async with as_caller(sql_db, admin, admin=True) as conn:
        seen = await conn.fetch(
            "select business_id from public.analytics_business_days where business_id = any($1)", businesses
        )
        assert {row["business_id"] for row in seen} == set(businesses)
        assert await conn.fetchval("select count(*) from public.analytics_city_days") > 0
    # Without Supabase's grants: anonymous callers may not read any of it, nobody may write it.
    for who in (None, partner):
        for table in tables:
            async with as_caller(sql_db, who) as conn:
                if who is None or table == "event_views":
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.fetchval(f"select count(*) from public.{table}")
                else:
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(f"delete from public.{table}")
    async with as_caller(sql_db, partner) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("select localplus_private.fold_views(10)")


def parse_csv(text: str) -> dict[str, Any]:
    rows = list(csv.DictReader(io.StringIO(text)))
    currency = {row.pop("currency") for row in rows}
    return {"days": [{k: (v if k == "date" else int(v)) for k, v in row.items()} for row in rows], "currency": currency}


async def test_the_csv_twins_say_what_the_json_says(api: httpx.AsyncClient, db: asyncpg.Pool, admin: User) -> None:
    owner = await create_user(db)
    business = await new_business(db, {"owner": owner})
    event, ticket_type = await event_with_tickets(api, owner, price_minor=0)
    await db.execute(
        "update public.events set business_id = $2 where id = $1", uuid.UUID(event["id"]), uuid.UUID(business)
    )
    people = [await create_user(db) for _ in range(3)]
    for person in people:
        await register(api, event["id"], person)
        await view(api, event["id"], person)
    await free_order(api, people[0], ticket_type["id"], 2)
    await fold(db)
    today = datetime.now(ZoneInfo("Asia/Bangkok")).date()
    params = {"start": (today - timedelta(days=6)).isoformat(), "end": (today + timedelta(days=1)).isoformat()}
    for path, who in (
        (f"/api/events/{event['id']}/analytics", owner),
        (f"/api/businesses/{business}/analytics", owner),
        ("/api/analytics", admin),
    ):
        body = (await api.get(path, params=params, headers=who.headers)).json()
        table = await api.get(f"{path}.csv", params=params, headers=who.headers)
        assert table.status_code == 200, table.text
        assert table.headers["content-type"].startswith("text/csv")
        assert table.text.splitlines()[0] == ",".join(["date", *FIGURES, "currency"])
        parsed = parse_csv(table.text)
        assert [
            {name: int(day.get(name, 0)) for name in FIGURES} | {"date": day["date"]} for day in body["days"]
        ] == parsed["days"]
        assert parsed["currency"] == {body.get("currency", "")}
        assert body["start"] == params["start"] and body["end"] == params["end"]


async def test_the_fold_job_compacts_past_days_shards_and_keeps_the_sums(sql_db: asyncpg.Pool) -> None:
    owner = await new_user(sql_db)
    event_id = await new_event(sql_db, owner)
    rows = [(3, "THB", 1, 100), (5, "THB", 2, 250), (0, "THB", 4, 1000), (6, "", 7, 0)]
    for shard, currency, orders, revenue in rows:
        for days_ago in (0, 5):
            await sql_db.execute(
                "insert into public.analytics_event_days (event_id, day, currency, shard, orders, revenue_minor) "
                "values ($1, current_date - $2::integer, $3, $4, $5, $6)",
                event_id,
                days_ago,
                currency,
                shard,
                orders,
                revenue,
            )
    await sql_db.execute("select localplus_private.compact_analytics()")
    left = await sql_db.fetch(
        "select current_date - day as days_ago, currency, shard, orders, revenue_minor "
        "from public.analytics_event_days where event_id = $1 order by 1, 2, 3",
        event_id,
    )
    today = [(r["currency"], r["shard"], r["orders"]) for r in left if r["days_ago"] == 0]
    assert today == [("", 6, 7), ("THB", 0, 4), ("THB", 3, 1), ("THB", 5, 2)]  # today's stay sharded
    past = [(r["currency"], r["shard"], r["orders"], r["revenue_minor"]) for r in left if r["days_ago"] == 5]
    assert past == [("", 0, 7, 0), ("THB", 0, 7, 1350)]


async def test_two_writers_of_one_event_and_day_do_not_queue_on_one_rollup_row(
    sql_db: asyncpg.Pool, database_url: str
) -> None:
    """Two transactions adding to one event's figures of one day at once, from backends of different
    shards: the second commits while the first still holds its rollup rows. From backends of one shard
    (the shape of a single row per event and day) the second waits, which is what the test would see
    for a hot row. (Saves and registrations also bump the event's counters row, which queues them
    anyway; paid orders and check-ins are what the shards keep apart here.)"""
    event_id = await new_event(sql_db, await new_user(sql_db))
    # Nine backends: two of them share a shard (eight shards), and some two differ.
    connections = [await asyncpg.connect(database_url) for _ in range(9)]
    try:
        shards: dict[int, list[asyncpg.Connection]] = {}
        for conn in connections:
            shards.setdefault(await conn.fetchval("select pg_backend_pid() % 8"), []).append(conn)
        same = next(group for group in shards.values() if len(group) >= 2)
        assert len(shards) >= 2
        apart = [group[0] for group in shards.values()][:2]
        add = "select localplus_private.analytics_add($1, now(), 'THB', 0, 0, 0, 1, 2, 100, 0, 0)"
        async with apart[0].transaction():
            await apart[0].execute(add, event_id)
            await asyncio.wait_for(apart[1].execute(add, event_id), timeout=10)
        total = "select sum(orders) from public.analytics_event_days where event_id = $1"
        assert await sql_db.fetchval(total, event_id) == 2
        async with same[0].transaction():
            await same[0].execute(add, event_id)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(same[1].execute(add, event_id), timeout=1)
    finally:
        for conn in connections:
            await conn.close()
