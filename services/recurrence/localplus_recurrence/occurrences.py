"""Use cases on occurrences: an event's list, one occurrence's exceptions and "this and following"
splits, and "what's on" across published public events. Each runs in one request transaction;
row-level security decides which events (and so which occurrences) the caller sees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, require_rank, signed_in, visible_event
from localplus_common.auth import SERVER
from localplus_common.calls import Forward
from localplus_common.cities import city_id
from localplus_common.db import Connection, Database, act_as, current_identity
from localplus_common.errors import aborted, already_exists, failed_precondition, invalid_argument, not_found
from localplus_common.paging import Keyset, Page, PageRequest, decode_keyset, page_of, time_value, uuid_value
from localplus_common.sponsored import Request, Sponsored, Sponsorship
from localplus_common.telemetry import WAITLIST_PROMOTIONS
from localplus_common.waitlist import promoted_here
from localplus_recurrence import materialise, rules
from localplus_recurrence.settings import RecurrenceSettings

# The list order, which page tokens hold the position in.
KEYSET: Keyset = {"starts_at": time_value, "id": uuid_value}
# "What's on": the widest window one request may ask for, and the default.
MAX_SEARCH_WINDOW = timedelta(days=31)
DEFAULT_SEARCH_WINDOW = timedelta(days=7)

# An occurrence as clients see it: its event's cancellation cancels it, and its capacity defaults to
# the event's. `o` is event_occurrences, `e` its event.
OCCURRENCE_COLUMNS = """
    o.id, o.event_id, o.original_starts_at, o.starts_at, o.ends_at, o.moved, o.note,
    case when e.status = 'cancelled' then 'cancelled' else o.status end as status,
    coalesce(o.capacity, e.capacity) as capacity
"""
# With the event, for listings and feeds.
LISTED_COLUMNS = (
    OCCURRENCE_COLUMNS
    + """,
    e.business_id, e.title, e.category, e.city, e.timezone, e.venue_name, e.address, e.latitude, e.longitude,
    e.recurrence_rrule is not null as recurring
"""
)


async def list_occurrences(
    db: Database, event_id: UUID, start: datetime | None, end: datetime | None, page: PageRequest
) -> Page[asyncpg.Record]:
    """The occurrences that start within [start, end), soonest first."""
    if start is not None and end is not None and end <= start:
        raise invalid_argument("end", "end must be after start")
    after = decode_keyset(page, KEYSET)

    async def list_them(conn: Connection) -> list[asyncpg.Record]:
        await visible_event(conn, event_id)
        return await conn.fetch(
            f"""
            select {OCCURRENCE_COLUMNS}
              from public.event_occurrences o join public.events e on e.id = o.event_id
             where o.event_id = $1
               and ($2::timestamptz is null or o.starts_at >= $2)
               and ($3::timestamptz is null or o.starts_at < $3)
               and ($4::timestamptz is null or (o.starts_at, o.id) > ($4, $5::uuid))
             order by o.starts_at, o.id
             limit $6
            """,
            event_id,
            start,
            end,
            *(after or (None, None)),
            page.size + 1,
        )

    anonymous = not current_identity.get().is_signed_in  # who cannot have changed them: a replica will do
    return page_of(await db.run(list_them, event_id=event_id, replica=anonymous), page, KEYSET)


@dataclass(frozen=True)
class OccurrenceChanges:
    """What a PATCH sets; None leaves a value as it is. `capacity` is a pair (set, value): clearing
    it falls back to the event's."""

    cancelled: bool | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    capacity: tuple[bool, int | None] = (False, None)
    note: str | None = None

    @property
    def moves(self) -> bool:
        return self.starts_at is not None or self.ends_at is not None


class EventsPort(Protocol):
    """What this service asks the events service for (over gRPC, as the caller)."""

    async def split_event(self, forward: Forward, split: Split) -> UUID: ...

    async def end_series(self, forward: Forward, event_id: UUID, recurrence: rules.Recurrence, etag: str) -> None: ...

    async def cancel_event(self, forward: Forward, event_id: UUID, etag: str) -> None: ...


@dataclass(frozen=True)
class Split:
    """A "this and following" edit as the events service carries it out."""

    event_id: UUID
    split_at: datetime
    before: rules.Recurrence
    starts_at: datetime
    ends_at: datetime
    after: rules.Recurrence
    capacity: int | None
    # The event's version the split was planned on: a change made since fails it (409) instead of
    # being overwritten by a rule derived from what it replaced.
    etag: str


async def update_occurrence(
    db: Database,
    events: EventsPort,
    settings: RecurrenceSettings,
    forward: Forward,
    event_id: UUID,
    occurrence_id: UUID,
    changes: OccurrenceChanges,
    this_and_following: bool,
) -> asyncpg.Record | dict[str, Any]:
    signed_in()
    if this_and_following:
        return await _update_following(db, events, settings, forward, event_id, occurrence_id, changes)

    async def update(conn: Connection) -> tuple[asyncpg.Record, int]:
        event, occurrence = await _editable(conn, event_id, occurrence_id, lock=True)
        if event["recurrence_rrule"] is None:
            raise failed_precondition("a one-off event's occurrence is the event: edit the event", "NOT_RECURRING")
        starts_at = changes.starts_at or occurrence["starts_at"]
        ends_at = changes.ends_at or (starts_at + (occurrence["ends_at"] - occurrence["starts_at"]))
        if ends_at <= starts_at:
            raise invalid_argument("occurrence.ends_at", "ends_at must be after starts_at")
        taking_place = not (occurrence["cancelled"] if changes.cancelled is None else changes.cancelled)
        if taking_place and (changes.moves or changes.cancelled is False):
            await _check_time_free(conn, event_id, occurrence_id, starts_at)
        set_capacity, capacity = changes.capacity
        await conn.execute(
            """
            update public.event_occurrences set
              cancelled = coalesce($2, cancelled),
              moved = moved or $3, starts_at = $4, ends_at = $5,
              capacity = case when $6 then $7 else capacity end,
              note = coalesce($8, note), updated_at = now()
             where id = $1
            """,
            occurrence_id,
            changes.cancelled,
            changes.moves,
            starts_at,
            ends_at,
            set_capacity,
            capacity,
            changes.note,
        )
        # The promotions, which only that trigger makes here (within this occurrence), counted as its editor.
        return await _read(conn, occurrence_id), await promoted_here(conn, event_id)

    updated, promoted = await db.run(update, event_id=event_id)
    WAITLIST_PROMOTIONS.inc(promoted)
    return updated


async def _check_time_free(conn: Connection, event_id: UUID, occurrence_id: UUID, starts_at: datetime) -> None:
    """One session of an event per start: RFC 5545's recurrence set holds each start once, so two
    scheduled occurrences at one instant are a clash (409), not two sessions. A called-off one's
    time is free."""
    if await conn.fetchval(
        "select exists (select 1 from public.event_occurrences"
        " where event_id = $1 and id <> $2 and starts_at = $3 and status = 'scheduled')",
        event_id,
        occurrence_id,
        starts_at,
    ):
        raise already_exists(
            f"another occurrence of this event starts at {starts_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}:"
            " choose another time, or cancel that occurrence first"
        )


async def _editable(
    conn: Connection, event_id: UUID, occurrence_id: UUID, *, lock: bool = False
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The event and occurrence a caller may change. `lock`: for a write, as the server from then on,
    with the event's row locked before the occurrence is read, in a registration's order (more places
    let the occurrence's waitlist in, event_occurrences_after_capacity_change, which locks the event
    row), and behind any build of the series (materialise.build): the occurrence is as the last
    build left it, or gone."""
    event = await visible_event(conn, event_id)
    if lock:
        await act_as(conn, SERVER, event_id=event_id)
        await conn.execute("select 1 from public.events where id = $1 for update", event_id)
    occurrence = await conn.fetchrow(
        "select * from public.event_occurrences where id = $1 and event_id = $2", occurrence_id, event_id
    )
    if occurrence is None:
        raise not_found("occurrence not found")
    require_rank(event, EDITOR, "change the occurrences of")
    if event["status"] == "cancelled":
        raise failed_precondition("a cancelled event can no longer be changed", "INVALID_STATE")
    if not occurrence["in_series"]:
        raise failed_precondition("this occurrence is no longer part of the series", "NOT_IN_SERIES")
    return event, occurrence


async def _read(conn: Connection, occurrence_id: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"select {OCCURRENCE_COLUMNS} from public.event_occurrences o join public.events e on e.id = o.event_id"
        " where o.id = $1",
        occurrence_id,
    )
    assert row is not None
    return row


EXCEPTION_COLUMNS = "original_starts_at, moved, starts_at, ends_at, cancelled, capacity, note"


async def _update_following(
    db: Database,
    events: EventsPort,
    settings: RecurrenceSettings,
    forward: Forward,
    event_id: UUID,
    occurrence_id: UUID,
    changes: OccurrenceChanges,
) -> asyncpg.Record | dict[str, Any]:
    """Split the series at this occurrence: the events service ends the event before it and copies
    it into a new event from it on (with the new times or capacity); here, in one transaction, both
    series are rebuilt and the exceptions of the later occurrences move to the new one."""

    async def plan(conn: Connection) -> tuple[asyncpg.Record, asyncpg.Record, list[asyncpg.Record] | None]:
        """The event, the occurrence and the exceptions from it on; None for those when it is the
        series' first occurrence, and so "this and following" is the whole event."""
        # Who may not edit learns that first (404/403), whatever the body asks, as with scope THIS.
        event, occurrence = await _editable(conn, event_id, occurrence_id)
        if changes.note is not None:
            raise invalid_argument("occurrence.note", "a note is for one occurrence: use scope UPDATE_SCOPE_THIS")
        if changes.cancelled is False:
            raise invalid_argument("occurrence.status", "restore occurrences one at a time (scope UPDATE_SCOPE_THIS)")
        if event["recurrence_rrule"] is None:
            raise failed_precondition("a one-off event has nothing following", "NOT_RECURRING")
        if occurrence["original_starts_at"] <= datetime.now(UTC):
            raise failed_precondition("only future occurrences split a series", "OCCURRENCE_STARTED")
        series = rules.compile_schedule(materialise.schedule_of(event))
        if not series.instants(event["starts_at"], occurrence["original_starts_at"], 1):
            if changes.cancelled:
                return event, occurrence, None
            raise failed_precondition(
                "this is the series' first occurrence, so this and following is every occurrence: change the"
                f" event itself (PATCH /api/events/{event_id}) instead",
                "WHOLE_SERIES",
            )
        if not changes.cancelled and not series.rule_yields(occurrence["original_starts_at"]):
            # A series of the rule must start on one of its instances; ending the series here needs none.
            raise failed_precondition(
                "this occurrence is an added date (RDATE), and a series of the rule cannot start from it:"
                " split at one of the rule's occurrences, or change this one alone (scope UPDATE_SCOPE_THIS)",
                "ADDED_DATE",
            )
        referenced = await conn.fetchval(
            f"""
            select count(*) from public.event_occurrences o
             where o.event_id = $1 and o.original_starts_at >= $2 and not ({materialise.UNREFERENCED})
            """,
            event_id,
            occurrence["original_starts_at"],
        )
        if referenced:
            raise aborted(
                "registrations or ticket types name occurrences from this one on; moving them along with a split"
                " is not supported yet",
                "OCCURRENCES_IN_USE",
            )
        following = await conn.fetch(
            f"select {EXCEPTION_COLUMNS} from public.event_occurrences"
            " where event_id = $1 and original_starts_at >= $2 and in_series"
            "   and (moved or cancelled or capacity is not null or note <> '')",
            event_id,
            occurrence["original_starts_at"],
        )
        return event, occurrence, following

    event, occurrence, following = await db.run(plan, event_id=event_id)
    # The occurrence as it was, called off: gone with the later ones, or cancelled with its event.
    called_off = {
        **dict(occurrence),
        "status": "cancelled",
        "capacity": occurrence["capacity"] if occurrence["capacity"] is not None else event["capacity"],
    }
    if following is None:
        # Calling off the whole series is cancelling the event: the owner's decision (CancelEvent's rank).
        await events.cancel_event(forward, event_id, str(event["version"]))
        return called_off
    schedule = materialise.schedule_of(event)
    series = rules.compile_schedule(schedule)
    assert schedule.recurrence is not None
    split_at: datetime = occurrence["original_starts_at"]
    before_rule, after_rule = rules.split_rules(series, split_at)
    recurrence = schedule.recurrence
    before = rules.Recurrence(
        before_rule,
        tuple(d for d in recurrence.exdates if d < split_at),
        tuple(d for d in recurrence.rdates if d < split_at),
    )
    if changes.cancelled:
        await events.end_series(forward, event_id, before, str(event["version"]))
        return called_off

    starts_at = changes.starts_at or split_at
    ends_at = changes.ends_at or starts_at + schedule.duration
    if ends_at <= starts_at:
        raise invalid_argument("occurrence.ends_at", "ends_at must be after starts_at")
    # How the new series' wall-clock times differ from the old one's (e.g. 19:00 -> 20:00 local).
    zone = series.zone
    shift = rules.to_wall(starts_at, zone) - rules.to_wall(split_at, zone)

    def moved(instant: datetime) -> datetime:
        return rules.shift(instant, shift, zone)

    after = rules.Recurrence(
        after_rule,
        tuple(moved(d) for d in recurrence.exdates if d >= split_at),
        tuple(moved(d) for d in recurrence.rdates if d >= split_at),
    )
    set_capacity, capacity = changes.capacity
    split = Split(
        event_id,
        split_at,
        before,
        starts_at,
        ends_at,
        after,
        capacity if set_capacity else event["capacity"],
        str(event["version"]),
    )
    new_event_id = await events.split_event(forward, split)

    def keeps_move(exception: asyncpg.Record) -> bool:
        # The occurrence split at takes the split's new times, if it gives any; the others keep theirs.
        return bool(exception["moved"]) and (exception["original_starts_at"] != split_at or not changes.moves)

    async def rebuild(conn: Connection) -> asyncpg.Record:
        await act_as(conn, SERVER)
        await materialise.build(conn, event_id, settings)
        await materialise.build(conn, new_event_id, settings)
        for exception in following:
            await conn.execute(
                """
                update public.event_occurrences set moved = $3,
                  starts_at = case when $3 then $4 else starts_at end, ends_at = case when $3 then $5 else ends_at end,
                  cancelled = $6, capacity = $7, note = $8
                 where event_id = $1 and original_starts_at = $2
                """,
                new_event_id,
                moved(exception["original_starts_at"]),
                keeps_move(exception),
                exception["starts_at"],
                exception["ends_at"],
                exception["cancelled"],
                exception["capacity"],
                exception["note"],
            )
        first = await conn.fetchval(
            "select id from public.event_occurrences where event_id = $1 and original_starts_at = $2",
            new_event_id,
            starts_at,
        )
        return await _read(conn, first)

    return await db.run(rebuild)


# "What's on": $1 city (null: all), [$2, $3) the window, ($4, $5) the keyset, $6 the limit.
SEARCH = f"""
    select {LISTED_COLUMNS}
      from public.events e join public.event_occurrences o on o.event_id = e.id
     where e.status = 'published' and e.visibility = 'public' and ($1::uuid is null or e.city_id = $1)
       and o.starts_at >= $2 and o.starts_at < $3 and o.status = 'scheduled'
       and ($4::timestamptz is null or (o.starts_at, o.id) > ($4, $5::uuid))
     order by o.starts_at, o.id
     limit $6
"""


# The first scheduled occurrence in the window of each promoted event (none of the page's), same filters.
SPONSORED_SEARCH = f"""
    select distinct on (e.id) {LISTED_COLUMNS}
      from public.events e join public.event_occurrences o on o.event_id = e.id
     where e.id = any($1::uuid[]) and not e.id = any($2::uuid[])
       and e.status = 'published' and e.visibility = 'public' and ($3::uuid is null or e.city_id = $3)
       and o.starts_at >= $4 and o.starts_at < $5 and o.status = 'scheduled' and o.ends_at > now()
     order by e.id, o.starts_at, o.id
"""


@dataclass(frozen=True)
class OccurrenceSearch:
    city: str
    start: datetime | None
    end: datetime | None
    page: PageRequest


async def search(
    db: Database, query: OccurrenceSearch, sponsorship: Sponsorship | None, viewer: str
) -> tuple[Page[asyncpg.Record], list[Sponsored]]:
    """Scheduled occurrences of published public events in [start, end), soonest first. The plan:
    the city's listed events (events_listed_city_id_idx), then each one's occurrences in the window
    (event_occurrences_event_starts_idx), merged in time order. Beside the page, the sponsored results
    (localplus_common.sponsored) for `viewer` (viewers.viewer_key(..., by_browser=False)): promoted
    events with a scheduled occurrence in the same window and city, none on the page, found in the same
    transaction; the page is what it is without them."""
    start = query.start or datetime.now(UTC)
    end = query.end or start + DEFAULT_SEARCH_WINDOW
    if end <= start:
        raise invalid_argument("end", "end must be after start")
    if end - start > MAX_SEARCH_WINDOW:
        raise invalid_argument("end", f"end may be at most {MAX_SEARCH_WINDOW.days} days after start")
    after = decode_keyset(query.page, KEYSET)
    target = Request(city=query.city.strip())
    promoted = sponsorship.candidates(target) if sponsorship is not None else []

    async def find(conn: Connection) -> tuple[list[asyncpg.Record], list[asyncpg.Record], set[UUID]]:
        in_city = await city_id(conn, query.city) if query.city else None
        rows = await conn.fetch(SEARCH, in_city, start, end, *(after or (None, None)), query.page.size + 1)
        if not promoted or sponsorship is None:
            return rows, [], set()
        on_page = list({row["event_id"] for row in rows[: query.page.size]})
        matched = await conn.fetch(SPONSORED_SEARCH, promoted, on_page, in_city, start, end)
        return rows, matched, await sponsorship.own_businesses(conn, matched)

    rows, matched, own = await db.run(find)
    page = page_of(rows, query.page, KEYSET)
    if sponsorship is None or not matched:
        return page, []
    return page, await sponsorship.choose(target, len(page.items), matched, own, viewer)
