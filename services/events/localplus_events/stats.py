"""Use cases behind the partner dashboard: figures read from the trigger-kept event_counters, whose
figures no API role may read (only their popularity): each use case reads them as the server once it
has checked the caller may see them."""

from dataclasses import dataclass
from datetime import date
from uuid import UUID

import asyncpg

from localplus_common.access import VIEWER, require_business_partner, require_rank, signed_in, visible_event
from localplus_common.auth import SERVER
from localplus_common.db import Connection, Database, act_as
from localplus_events import repository as repo

COUNTS = ("going", "interested", "waitlisted", "cancelled", "attended", "guests", "saves")


@dataclass(frozen=True)
class EventStats:
    event_id: UUID
    # One value per name in COUNTS.
    counts: dict[str, int]
    capacity: int | None
    # Places taken (going and attended people plus their guests) over capacity; None without one.
    fill_rate: float | None
    registrations_per_day: list[tuple[date, int]]
    # Tickets checked in at the door (the ticketing service keeps the counter).
    checked_in: int


@dataclass(frozen=True)
class BusinessStats:
    business_id: UUID
    events: int
    # Keyed by event status as stored (`published`, ...).
    events_by_status: dict[str, int]
    # COUNTS summed over the business's events.
    counts: dict[str, int]


async def event_stats(db: Database, event_id: UUID) -> EventStats:
    signed_in()

    async def run(conn: Connection) -> tuple[asyncpg.Record, asyncpg.Record | None, list[asyncpg.Record]]:
        event = await visible_event(conn, event_id)
        require_rank(event, VIEWER, "see the figures of")
        per_day = await repo.registrations_per_day(conn, event_id)
        await act_as(conn, SERVER)
        counters = await conn.fetchrow("select * from public.event_counters where event_id = $1", event_id)
        return event, counters, per_day

    event, counters, per_day = await db.run(run, event_id=event_id)
    counts = {name: (counters[name] if counters else 0) for name in COUNTS}
    capacity = event["capacity"]
    taken = counts["going"] + counts["attended"] + counts["guests"]
    return EventStats(
        event_id=event_id,
        counts=counts,
        capacity=capacity,
        fill_rate=round(taken / capacity, 4) if capacity is not None else None,
        registrations_per_day=[(row["day"], row["registrations"]) for row in per_day],
        checked_in=counters["checked_in"] if counters else 0,
    )


async def business_stats(db: Database, business_id: UUID) -> BusinessStats:
    identity = signed_in()

    async def run(conn: Connection) -> list[asyncpg.Record]:
        await require_business_partner(conn, identity, business_id, "figures")
        await act_as(conn, SERVER)  # every partner sees all of the business's events
        return await conn.fetch(
            f"""
            select e.status, count(*) as events, {", ".join(f"coalesce(sum(c.{n}), 0) as {n}" for n in COUNTS)}
              from public.events e left join public.event_counters c on c.event_id = e.id
             where e.business_id = $1
             group by e.status
            """,
            business_id,
        )

    rows = await db.run(run)
    return BusinessStats(
        business_id=business_id,
        events=sum(int(row["events"]) for row in rows),
        events_by_status={row["status"]: int(row["events"]) for row in rows},
        counts={name: sum(int(row[name]) for row in rows) for name in COUNTS},
    )
