"""Figures for the partner dashboard, read from the trigger-kept event_counters."""

from typing import Any

import asyncpg

from localplus.events.v1 import events_pb2
from localplus_common.access import VIEWER, require_rank, signed_in, visible_event
from localplus_common.db import Connection, Database
from localplus_common.errors import not_found, permission_denied
from localplus_common.requests import parse_uuid
from localplus_events.mapping import event_status_name

COUNTS = ("going", "interested", "waitlisted", "cancelled", "attended", "guests", "saves")


async def event_stats(db: Database, raw_event_id: str) -> events_pb2.EventStats:
    signed_in()
    event_id = parse_uuid("event_id", raw_event_id)

    async def run(conn: Connection) -> tuple[asyncpg.Record, asyncpg.Record | None, list[asyncpg.Record]]:
        event = await visible_event(conn, event_id)
        require_rank(event, VIEWER, "see the figures of")
        counters = await conn.fetchrow("select * from public.event_counters where event_id = $1", event_id)
        per_day = await conn.fetch("select * from localplus_private.event_registrations_per_day($1)", event_id)
        return event, counters, per_day

    event, counters, per_day = await db.run(run, event_id=event_id)
    figures: dict[str, Any] = {name: (counters[name] if counters else 0) for name in COUNTS}
    stats = events_pb2.EventStats(
        event_id=str(event_id),
        registrations_per_day=[
            events_pb2.DailyCount(date=row["day"].isoformat(), registrations=row["registrations"]) for row in per_day
        ],
        **figures,
    )
    if event["capacity"] is not None:
        stats.capacity = event["capacity"]
        # Places taken: people going (or already there) plus the guests they bring.
        taken = figures["going"] + figures["attended"] + figures["guests"]
        stats.fill_rate = round(taken / event["capacity"], 4)
    return stats


async def business_stats(db: Database, raw_business_id: str) -> events_pb2.BusinessStats:
    identity = signed_in()
    business_id = parse_uuid("business_id", raw_business_id)

    async def run(conn: Connection) -> list[asyncpg.Record]:
        if not await conn.fetchval("select exists (select 1 from public.businesses where id = $1)", business_id):
            raise not_found("business not found")
        if not identity.is_platform_admin and not await conn.fetchval(
            "select localplus_private.is_business_partner($1, array['owner', 'editor', 'viewer'])", business_id
        ):
            raise permission_denied("only the business's partners may see its figures")
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
    totals = {name: sum(int(row[name]) for row in rows) for name in COUNTS}
    return events_pb2.BusinessStats(
        business_id=str(business_id),
        events=sum(int(row["events"]) for row in rows),
        events_by_status={event_status_name(row["status"]): int(row["events"]) for row in rows},
        **totals,
    )
