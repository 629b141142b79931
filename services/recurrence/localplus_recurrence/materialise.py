"""Occurrences built from an event's schedule, in the recurrence service's own transaction.

The events service writes an event's schedule (times, zone, recurrence) and then asks this service,
over gRPC, to build its occurrences; the horizon job (`repair`) builds those of any event whose
occurrences are missing or stale (that call failed, the event was written through Supabase's REST,
or the horizon moved on), so occurrences follow the schedule even when a call between the services
is lost. `event_series` records what each event's occurrences were built from.

A build touches only occurrences whose original start is from now on: the past stays as it
happened. It keeps the rows (ids and exceptions) of instances the schedule still yields, adds the
new ones up to the horizon (at most `max_per_series`), and deletes the rest, unless a registration
or a ticket type names one: that one stays, out of the series, as cancelled.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, require_rank, visible_event
from localplus_common.auth import SERVER
from localplus_common.db import Connection, Database, act_as
from localplus_common.requests import LATEST_TIMESTAMP
from localplus_recurrence.rules import Recurrence, Schedule, Unexpandable, expandable
from localplus_recurrence.settings import RecurrenceSettings

log = logging.getLogger(__name__)
# Series built per transaction of the horizon job.
REPAIR_BATCH = 200


@dataclass(frozen=True)
class Built:
    occurrences: int  # from now on
    materialized_through: datetime


def schedule_of(event: asyncpg.Record) -> Schedule:
    recurrence = None
    if event["recurrence_rrule"] is not None:
        recurrence = Recurrence(
            event["recurrence_rrule"], tuple(event["recurrence_exdates"]), tuple(event["recurrence_rdates"])
        )
    return Schedule(event["starts_at"], event["ends_at"], event["timezone"], recurrence)


async def build(
    conn: Connection, event_id: UUID, settings: RecurrenceSettings, now: datetime | None = None
) -> Built | None:
    """(Re)build one event's occurrences as the server; None if the event is gone. Every build
    (a schedule's write, the horizon job, a split) locks the event's row first, and so does a PATCH
    of one occurrence before reading it: they queue up, each reads what the last left, and none
    deletes an occurrence that a PATCH is editing. `for no key update` leaves foreign keys to the
    event (registrations, saves) free."""
    now = now or datetime.now(UTC)
    event = await conn.fetchrow(
        "select id, version, starts_at, ends_at, timezone, recurrence_rrule, recurrence_exdates, recurrence_rdates"
        " from public.events where id = $1 for no key update",
        event_id,
    )
    if event is None:
        return None
    schedule = schedule_of(event)
    state = await conn.fetchrow("select * from public.event_series where event_id = $1", event_id)
    horizon_end = min(now + settings.horizon, LATEST_TIMESTAMP)
    if (
        state is not None
        and state["fingerprint"] == schedule.fingerprint
        and (state["complete"] or state["materialized_through"] >= horizon_end - timedelta(days=1))
    ):
        # Nothing the occurrences depend on changed (another field of the event did).
        await conn.execute(
            "update public.event_series set event_version = $2 where event_id = $1", event_id, event["version"]
        )
        return Built(await _count_from(conn, event_id, now), state["materialized_through"])
    series = expandable(schedule)
    if schedule.recurrence is None:
        await _sync_one_off(conn, event_id, schedule)
        through, complete = LATEST_TIMESTAMP, True
    else:
        instants = series.instants(now, horizon_end, settings.max_per_series)
        full = len(instants) >= settings.max_per_series
        through = instants[-1] + timedelta(microseconds=1) if full else horizon_end
        complete = not full and not series.instants(horizon_end, LATEST_TIMESTAMP, 1)
        await _sync_series(conn, event_id, instants, schedule.duration, now, through)
    await conn.execute(
        """
        insert into public.event_series (event_id, event_version, fingerprint, materialized_through, complete)
        values ($1, $2, $3, $4, $5)
        on conflict (event_id) do update set event_version = excluded.event_version,
          fingerprint = excluded.fingerprint, materialized_through = excluded.materialized_through,
          complete = excluded.complete, built_at = now()
        """,
        event_id,
        event["version"],
        schedule.fingerprint,
        through,
        complete,
    )
    return Built(await _count_from(conn, event_id, now), through)


async def _count_from(conn: Connection, event_id: UUID, now: datetime) -> int:
    count: int = await conn.fetchval(
        "select count(*) from public.event_occurrences where event_id = $1 and original_starts_at >= $2",
        event_id,
        now,
    )
    return count


# Occurrences nothing refers to, which a build may delete.
UNREFERENCED = """
    not exists (select 1 from public.event_participants p where p.occurrence_id = o.id)
    and not exists (select 1 from public.ticket_types t where t.occurrence_id = o.id)
"""


async def _sync_series(
    conn: Connection, event_id: UUID, instants: list[datetime], duration: timedelta, now: datetime, through: datetime
) -> None:
    """Make the event's occurrences in [now, through) exactly `instants`, keeping exceptions."""
    await conn.execute(
        f"""
        delete from public.event_occurrences o
         where o.event_id = $1 and o.original_starts_at >= $2 and not (o.original_starts_at = any ($3::timestamptz[]))
           and {UNREFERENCED}
        """,
        event_id,
        now,
        instants,
    )
    await conn.execute(
        "update public.event_occurrences o set in_series = false, updated_at = now()"
        " where o.event_id = $1 and o.original_starts_at >= $2 and o.in_series"
        "   and not (o.original_starts_at = any ($3::timestamptz[]))",
        event_id,
        now,
        instants,
    )
    await conn.execute(
        """
        insert into public.event_occurrences as o (event_id, original_starts_at, starts_at, ends_at)
        select $1, original, original, original + $3::interval from unnest($2::timestamptz[]) as original
        on conflict (event_id, original_starts_at) do update
          set in_series = true,
              starts_at = case when o.moved then o.starts_at else excluded.starts_at end,
              ends_at = case when o.moved then o.ends_at else excluded.ends_at end,
              updated_at = now()
          where not o.in_series or (not o.moved and (o.starts_at, o.ends_at) <> (excluded.starts_at, excluded.ends_at))
        """,
        event_id,
        instants,
        duration,
    )


async def _sync_one_off(conn: Connection, event_id: UUID, schedule: Schedule) -> None:
    """A one-off event's single occurrence carries the event's id and moves with the event (what
    registers for it stays with it); occurrences of a former recurrence go as usual."""
    await conn.execute(
        f"delete from public.event_occurrences o where o.event_id = $1 and o.id <> $1 and {UNREFERENCED}", event_id
    )
    await conn.execute(
        "update public.event_occurrences set in_series = false where event_id = $1 and id <> $1 and in_series",
        event_id,
    )
    await conn.execute(
        """
        insert into public.event_occurrences as o (id, event_id, original_starts_at, starts_at, ends_at)
        values ($1, $1, $2, $2, $3)
        on conflict (id) do update
          set original_starts_at = excluded.original_starts_at, starts_at = excluded.starts_at,
              ends_at = excluded.ends_at, moved = false, in_series = true, updated_at = now()
          where (o.original_starts_at, o.starts_at, o.ends_at, o.moved, o.in_series)
                <> (excluded.original_starts_at, excluded.starts_at, excluded.ends_at, false, true)
        """,
        event_id,
        schedule.starts_at,
        schedule.ends_at,
    )


async def materialize(db: Database, settings: RecurrenceSettings, event_id: UUID) -> Built:
    """What the events service asks for after writing a schedule: the caller must be an editor of
    the event; the build itself is the server's, in the same transaction."""

    async def run(conn: Connection) -> Built:
        require_rank(await visible_event(conn, event_id), EDITOR, "rebuild the occurrences of")
        await act_as(conn, SERVER)
        built = await build(conn, event_id, settings)
        assert built is not None
        return built

    return await db.run(run, event_id=event_id)


STALE = """
select e.id, e.version from public.events e left join public.event_series s on s.event_id = e.id
 where s.event_id is null or s.event_version <> e.version
    -- A series held back by max_per_series moves on at most hourly.
    or (not s.complete and s.materialized_through < $1 and s.built_at < now() - interval '1 hour')
 limit $2
"""


async def _stale(conn: Connection, *, threshold: datetime, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(STALE, threshold, limit)


async def _build_one(conn: Connection, *, event_id: UUID, settings: RecurrenceSettings) -> Built | None:
    return await build(conn, event_id, settings)


async def repair(db: Database, settings: RecurrenceSettings, unexpandable: dict[UUID, int]) -> int:
    """The horizon job: build every event whose occurrences are missing, stale or running short of
    the horizon, a batch per transaction; a series that fails is logged and tried again next time.

    A schedule the service cannot expand (rules.expandable; written through Supabase's REST: the SQL
    checks hold a rule's shape only) is no fault of the job: it is warned about once, naming what is
    wrong, and recorded in `unexpandable` (event id -> version; the job keeps it between passes), and
    skipped until the event changes. Any other failure is one of the job's, logged and retried."""
    repaired = 0
    failed: set[UUID] = set()
    while True:
        threshold = datetime.now(UTC) + settings.horizon - timedelta(days=1)
        limit = REPAIR_BATCH + len(failed) + len(unexpandable)
        stale = await db.run(functools.partial(_stale, threshold=threshold, limit=limit), SERVER)
        todo = [
            (row["id"], row["version"])
            for row in stale
            if row["id"] not in failed and unexpandable.get(row["id"]) != row["version"]
        ]
        if not todo:
            return repaired
        for event_id, version in todo:
            try:
                await db.run(functools.partial(_build_one, event_id=event_id, settings=settings), SERVER)
                repaired += 1
                unexpandable.pop(event_id, None)
            except Unexpandable as error:
                log.warning(
                    "event %s has a rule the service cannot expand; no occurrences built: %s", event_id, error.message
                )
                unexpandable[event_id] = version
            except Exception:
                log.exception("building the occurrences of event %s failed", event_id)
                failed.add(event_id)
