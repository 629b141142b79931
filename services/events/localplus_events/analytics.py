"""Analytics for partners and platform admins (issue 13): page views, and the daily figures and funnel
read from the rollups that triggers keep as things happen (sql/migrations/20261216000000_analytics.sql).

Views are batched: a view is one row per viewer, event and day (its key drops repeats), and the fold
job (`fold`, the events service's background loop) adds the new rows to the rollups in bulk, so a
popular event's views do not queue on one rollup row. A viewer is the signed-in user
or a hash of the client's address and User-Agent (`localplus_common.viewers`). The event's own
editors (and owners, platform admins, service_role) are never counted.

Reads run as the caller: row-level security on the rollups is what keeps partners to their own
events and businesses, here and through Supabase's REST; the checks before it only turn its silent
filtering into 404 and 403."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, VIEWER, require_business_partner, require_rank, signed_in, visible_event
from localplus_common.auth import SERVER
from localplus_common.cities import city_id
from localplus_common.db import Connection, Database, act_as
from localplus_common.errors import invalid_argument, permission_denied
from localplus_common.requests import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from localplus_events.domain import category_filter, folded_category

log = logging.getLogger(__name__)

DEFAULT_DAYS = 30
MAX_DAYS = 367
# Views folded per statement: many views of one event become one rollup update.
FOLD_BATCH = 10000
DEFAULT_FOLD_SECONDS = 10.0

SUMS = """
select day, currency, sum(views)::integer as views, sum(saves)::integer as saves,
       sum(registrations)::integer as registrations, sum(orders)::integer as orders,
       sum(tickets)::integer as tickets, sum(revenue_minor)::bigint as revenue_minor,
       sum(refunds_minor)::bigint as refunds_minor, sum(check_ins)::integer as check_ins
"""


@dataclass(frozen=True)
class DayFigures:
    date: date
    views: int = 0
    saves: int = 0
    registrations: int = 0
    orders: int = 0
    tickets: int = 0
    revenue_minor: int = 0
    refunds_minor: int = 0
    check_ins: int = 0


COLUMNS = [f.name for f in fields(DayFigures)]
COUNTS = ("views", "saves", "registrations", "orders", "tickets", "check_ins")
MONEY = ("revenue_minor", "refunds_minor")


@dataclass(frozen=True)
class Analytics:
    start: date
    end: date
    currency: str
    days: list[DayFigures]

    def funnel(self) -> dict[str, int]:
        return {
            step: sum(getattr(day, step) for day in self.days) for step in ("views", "saves", "registrations", "orders")
        }

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*COLUMNS, "currency"])
        for day in self.days:
            writer.writerow([day.date.isoformat(), *(getattr(day, name) for name in COLUMNS[1:]), self.currency])
        return out.getvalue()


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date


def date_range(start: str, end: str, today: date | None = None) -> DateRange:
    """The days asked for: `end` defaults to tomorrow in UTC (no time zone is a day further ahead),
    `start` to 29 days before `end`."""
    last = _day("end", end) if end else (today or datetime.now(UTC).date()) + timedelta(days=1)
    first = _day("start", start) if start else last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise invalid_argument("end", "end must not be before start")
    if (last - first).days >= MAX_DAYS:
        raise invalid_argument("end", f"at most {MAX_DAYS} days at a time")
    return DateRange(first, last)


def _day(field: str, value: str) -> date:
    """A day within the API's range of times (a default start counted back from a day in year 1 fell
    off the calendar: a 500)."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise invalid_argument(field, "must be a date, YYYY-MM-DD") from None
    if not EARLIEST_TIMESTAMP.date() <= day < LATEST_TIMESTAMP.date():
        raise invalid_argument(
            field, f"must be from {EARLIEST_TIMESTAMP:%Y-%m-%d} up to {LATEST_TIMESTAMP:%Y-%m-%d} (UTC)"
        )
    return day


async def record_view(db: Database, event_id: UUID, viewer: str) -> bool:
    """Whether this view counted: not for an editor of the event, once per viewer and day."""

    async def run(conn: Connection) -> bool:
        event = await visible_event(conn, event_id)
        if event["caller_rank"] >= EDITOR:
            return False
        await act_as(conn, SERVER)
        inserted = await conn.fetchval(
            "insert into public.event_views (event_id, day, viewer) values ($1, (now() at time zone $2)::date, $3) "
            "on conflict do nothing returning true",
            event_id,
            event["timezone"],
            viewer,
        )
        return bool(inserted)

    return await db.run(run, event_id=event_id)


async def event_analytics(db: Database, event_id: UUID, days: DateRange) -> Analytics:
    signed_in()

    async def run(conn: Connection) -> list[asyncpg.Record]:
        event = await visible_event(conn, event_id)
        require_rank(event, VIEWER, "see the analytics of")
        return await conn.fetch(
            f"{SUMS} from public.analytics_event_days where event_id = $1 and day between $2 and $3 group by 1, 2",
            event_id,
            days.start,
            days.end,
        )

    return _analytics(days, await db.run(run, event_id=event_id))


async def business_analytics(db: Database, business_id: UUID, days: DateRange) -> Analytics:
    identity = signed_in()

    async def run(conn: Connection) -> list[asyncpg.Record]:
        await require_business_partner(conn, identity, business_id, "analytics")
        return await conn.fetch(
            f"{SUMS} from public.analytics_business_days where business_id = $1 and day between $2 and $3 "
            "group by 1, 2",
            business_id,
            days.start,
            days.end,
        )

    return _analytics(days, await db.run(run))


async def platform_analytics(db: Database, city: str, category: str, days: DateRange) -> Analytics:
    identity = signed_in()
    if not identity.is_platform_admin:
        raise permission_denied("only platform admins may see the platform's analytics")

    async def run(conn: Connection) -> list[asyncpg.Record]:
        city_key = await city_id(conn, city) if city else None
        return await conn.fetch(
            f"{SUMS} from public.analytics_city_days where day between $1 and $2"
            " and ($3::uuid is null or city_id = $3)"
            f" and ($4 = '' or {folded_category('category')} = {folded_category('$4')}) group by 1, 2",
            days.start,
            days.end,
            city_key,
            category_filter(category),
        )

    return _analytics(days, await db.run(run))


def _analytics(days: DateRange, rows: list[asyncpg.Record]) -> Analytics:
    """Every day of the range, counts over every currency, money in the one with the most revenue."""
    revenue: dict[str, int] = {}
    for row in rows:
        if row["currency"]:
            revenue[row["currency"]] = revenue.get(row["currency"], 0) + row["revenue_minor"]
    currency = min(revenue, key=lambda c: (-revenue[c], c)) if revenue else ""
    totals: dict[date, dict[str, int]] = {}
    for row in rows:
        day = totals.setdefault(row["day"], dict.fromkeys(COLUMNS[1:], 0))
        for name in COUNTS:
            day[name] += row[name]
        if row["currency"] == currency:
            for name in MONEY:
                day[name] += row[name]
    dense = [
        DayFigures(day, **totals.get(day, {}))
        for day in (days.start + timedelta(days=n) for n in range((days.end - days.start).days + 1))
    ]
    return Analytics(days.start, days.end, currency, dense)


def fold_every(env: Mapping[str, str] = os.environ) -> timedelta:
    """How often the fold job runs (ANALYTICS_FOLD_SECONDS): how far behind views may be."""
    return timedelta(seconds=float(env.get("ANALYTICS_FOLD_SECONDS") or DEFAULT_FOLD_SECONDS))


async def fold(db: Database) -> int:
    """Add the views not yet counted to the rollups and compact the shards of past days; the views folded."""

    async def run(conn: Connection) -> int:
        folded = 0
        while True:
            batch: int = await conn.fetchval("select localplus_private.fold_views($1)", FOLD_BATCH)
            folded += batch
            if batch < FOLD_BATCH:
                break
        await conn.execute("select localplus_private.compact_analytics()")
        return folded

    return await db.run(run, SERVER)
