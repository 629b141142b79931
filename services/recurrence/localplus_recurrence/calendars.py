"""Calendar feeds: an event, and the upcoming published public events of a business or a city, as
iCalendar (RFC 5545) and as JSON, for calendar apps, the WordPress plugin and hotel-TV screens.

A series is one VEVENT with its RRULE, EXDATEs and RDATEs in the event's time zone (with a
VTIMEZONE), and every occurrence an editor changed is a VEVENT of its own with RECURRENCE-ID (its
original start) and, when called off, STATUS:CANCELLED. Every feed has an ETag, a digest of what it
is made of, computed by one small query first: a screen that polls with If-None-Match gets a 304
without the feed being built.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import icalendar

from localplus_common.access import require_business, visible_event
from localplus_common.cities import require_path_city
from localplus_common.db import Connection, Database
from localplus_common.errors import invalid_argument
from localplus_recurrence.materialise import schedule_of
from localplus_recurrence.occurrences import LISTED_COLUMNS
from localplus_recurrence.rules import Unexpandable, expandable, with_utc_until

log = logging.getLogger(__name__)

PRODID = "-//LocalPlus//Event Engine//EN"
# What one feed holds at most: events (iCalendar) and occurrences (JSON, within the next days).
MAX_EVENTS = 500
MAX_OCCURRENCES = 500
JSON_WINDOW = timedelta(days=90)
# Events in a feed: published, public, with an occurrence still to come. `e` is the event.
LISTED = """
    e.status = 'published' and e.visibility = 'public'
    and exists (select 1 from public.event_occurrences u where u.event_id = e.id and u.ends_at > now())
"""


@dataclass(frozen=True)
class Feed:
    """Whose feed: one event, a business's or a city's."""

    event_id: UUID | None = None
    business_id: UUID | None = None
    city: str | None = None

    def where(self) -> tuple[str, object]:
        """The events of the feed as a condition on `e` with its one parameter ($1)."""
        if self.event_id is not None:
            return "e.id = $1", self.event_id
        if self.business_id is not None:
            return f"e.business_id = $1 and {LISTED}", self.business_id
        return f"e.city_id = (select c.id from public.cities c where c.slug = $1) and {LISTED}", self.city

    def events(self, columns: str) -> tuple[str, object]:
        """The feed's events, the same in its ETag, its iCalendar and its JSON: the first MAX_EVENTS to
        start (past them, the next things on rather than whichever ids sort first), as a query of
        `columns` of `e`, with its one parameter ($1)."""
        where, value = self.where()
        query = f"select {columns} from public.events e where {where} order by e.starts_at, e.id limit {MAX_EVENTS}"
        return query, value


@dataclass(frozen=True)
class Document:
    """A feed as HTTP serves it: iCalendar text, or the occurrences of a JSON feed (rows with their
    events); neither when the client's copy is current (304)."""

    etag: str
    last_modified: datetime | None
    not_modified: bool
    ics: bytes = b""
    occurrences: Sequence[asyncpg.Record] = ()


def city_slug(slug: str) -> str:
    slug = slug.strip().lower()
    if not slug or len(slug) > 64:
        raise invalid_argument("slug", "slug must be a city slug, e.g. bangkok")
    return slug


def _matches(etag: str, if_none_match: str) -> bool:
    """If-None-Match compares weakly (RFC 9110 §13.1.2): `W/"x"` matches `"x"`, and `*` any feed."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


async def _version(conn: Connection, feed: Feed, kind: str) -> tuple[str, datetime | None]:
    """The feed's ETag and Last-Modified: a digest of its events' versions and its occurrences'
    changes (an occurrence is deleted only when its event's schedule, and so its version, changed)."""
    events, value = feed.events("e.id, e.version, e.updated_at")
    row = await conn.fetchrow(
        f"""
        select md5(coalesce(string_agg(e.id::text || ':' || e.version, ',' order by e.id), '')) as events,
               max(e.updated_at) as events_changed,
               (select max(o.updated_at) from public.event_occurrences o
                 where o.event_id = any (array_agg(e.id))) as occurrences_changed,
               (select count(*) from public.event_occurrences o where o.event_id = any (array_agg(e.id))) as count
          from ({events}) e
        """,
        value,
    )
    assert row is not None
    changed = [t for t in (row["events_changed"], row["occurrences_changed"]) if t is not None]
    digest = hashlib.sha256(
        f"{kind}|{row['events']}|{row['occurrences_changed']}|{row['count']}|{datetime.now(UTC):%Y%m%d}".encode()
    ).hexdigest()[:32]
    return f'"{digest}"', max(changed) if changed else None


async def document(db: Database, feed: Feed, kind: str, if_none_match: str | None) -> Document:
    """The feed as iCalendar (`kind` "ics") or JSON ("json"), or just its ETag when it matches."""

    async def build(conn: Connection) -> Document:
        if feed.event_id is not None:
            await visible_event(conn, feed.event_id)
        # The resource the path names: an unknown one is a 404, not an empty feed.
        if feed.business_id is not None:
            await require_business(conn, feed.business_id)
        if feed.city is not None:
            await require_path_city(conn, feed.city)
        etag, last_modified = await _version(conn, feed, kind)
        if if_none_match is not None and _matches(etag, if_none_match):
            return Document(etag, last_modified, True)
        if kind == "ics":
            return Document(etag, last_modified, False, ics=await _ics(conn, feed))
        return Document(etag, last_modified, False, occurrences=await _occurrences(conn, feed))

    return await db.run(build, event_id=feed.event_id)


async def _ics(conn: Connection, feed: Feed) -> bytes:
    events = await conn.fetch(*feed.events("e.*"))
    exceptions = await conn.fetch(
        """
        select * from public.event_occurrences
         where event_id = any ($1::uuid[]) and in_series and (moved or cancelled or capacity is not null or note <> '')
         order by event_id, original_starts_at
        """,
        [e["id"] for e in events],
    )
    by_event: dict[UUID, list[asyncpg.Record]] = {}
    for occurrence in exceptions:
        by_event.setdefault(occurrence["event_id"], []).append(occurrence)
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    for event in filter(_expandable, events):
        for component in _vevents(event, by_event.get(event["id"], [])):
            calendar.add_component(component)
    calendar.add_missing_timezones()
    ics: bytes = calendar.to_ical()
    return ics


def _expandable(event: asyncpg.Record) -> bool:
    """Whether the service can expand the event's schedule (rules.expandable): such a series has no
    occurrences, and is left out of the feeds rather than failing them for every other event in them."""
    try:
        expandable(schedule_of(event))
    except Unexpandable as error:
        log.warning(
            "event %s has a rule the service cannot expand; left out of the feed: %s", event["id"], error.message
        )
        return False
    return True


def _vevents(event: asyncpg.Record, exceptions: Sequence[asyncpg.Record]) -> list[icalendar.Event]:
    zone = ZoneInfo(event["timezone"])
    uid = f"{event['id']}@localplus"
    master = _vevent(event, uid, event["starts_at"], event["ends_at"], zone, event["status"] == "cancelled")
    if event["recurrence_rrule"] is not None:
        master.add("rrule", icalendar.vRecur.from_ical(with_utc_until(event["recurrence_rrule"], zone)))
        if event["recurrence_exdates"]:
            master.add("exdate", [d.astimezone(zone) for d in sorted(event["recurrence_exdates"])])
        if event["recurrence_rdates"]:
            master.add("rdate", [d.astimezone(zone) for d in sorted(event["recurrence_rdates"])])
    components = [master]
    for occurrence in exceptions:
        override = _vevent(
            event,
            uid,
            occurrence["starts_at"],
            occurrence["ends_at"],
            zone,
            occurrence["cancelled"] or event["status"] == "cancelled",
            occurrence["note"],
        )
        override.add("recurrence-id", occurrence["original_starts_at"].astimezone(zone))
        components.append(override)
    return components


def _vevent(
    event: asyncpg.Record,
    uid: str,
    starts_at: datetime,
    ends_at: datetime,
    zone: ZoneInfo,
    cancelled: bool,
    note: str = "",
) -> icalendar.Event:
    vevent = icalendar.Event()
    vevent.add("uid", uid)
    vevent.add("dtstamp", event["updated_at"].astimezone(UTC))
    vevent.add("last-modified", event["updated_at"].astimezone(UTC))
    vevent.add("sequence", event["version"])
    vevent.add("summary", event["title"])
    description = "\n\n".join(part for part in (note, event["description"]) if part)
    if description:
        vevent.add("description", description)
    location = ", ".join(part for part in (event["venue_name"], event["address"]) if part)
    if location:
        vevent.add("location", location)
    if event["latitude"] is not None:
        vevent.add("geo", (event["latitude"], event["longitude"]))
    if event["category"]:
        vevent.add("categories", [event["category"]])
    vevent.add("dtstart", starts_at.astimezone(zone))
    vevent.add("dtend", ends_at.astimezone(zone))
    vevent.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    return vevent


async def _occurrences(conn: Connection, feed: Feed) -> list[asyncpg.Record]:
    events, value = feed.events("e.id")
    return await conn.fetch(
        f"""
        select {LISTED_COLUMNS}
          from public.event_occurrences o join public.events e on e.id = o.event_id
         where e.id in ({events})
           and o.ends_at > now() and o.starts_at < now() + $2::interval and o.in_series
         order by o.starts_at, o.id
         limit {MAX_OCCURRENCES}
        """,
        value,
        JSON_WINDOW,
    )
