"""Use cases on events themselves: create, read, update (AIP-134), delete and split, each in one
request transaction. A write that sets or changes an event's schedule has the recurrence service
check the recurrence first and build the occurrences after the commit (`schedules`)."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, OWNER, event_to_change, require_rank, signed_in
from localplus_common.auth import SERVER
from localplus_common.calls import Forward
from localplus_common.db import Connection, Database, act_as, current_identity
from localplus_common.errors import failed_precondition, not_found, permission_denied
from localplus_common.telemetry import WAITLIST_PROMOTIONS
from localplus_common.waitlist import promoted_here
from localplus_events import places
from localplus_events import repository as repo
from localplus_events.domain import EDITABLE_COLUMNS, RECURRENCE_COLUMNS, SCHEDULE_COLUMNS, validate_event

# What a new event is unless the request says otherwise (CONTRACT §6).
NEW_EVENT_DEFAULTS = {"visibility": "public", "status": "draft"}


class SchedulesPort(Protocol):
    """The recurrence service (localplus_events.schedules)."""

    async def validate(self, forward: Forward, event: dict[str, Any]) -> dict[str, Any]: ...

    async def materialize(self, forward: Forward, event_id: UUID) -> None: ...


async def create_event(
    db: Database, schedules: SchedulesPort, forward: Forward, values: dict[str, Any]
) -> asyncpg.Record:
    """Create an event from column values; the caller becomes its creator (owner). At a venue, the
    venue fills what the values leave unset (places.at_venue)."""
    identity = signed_in()
    values = NEW_EVENT_DEFAULTS | values
    if values["status"] not in ("draft", "pending_review") and not identity.is_platform_admin:
        raise permission_denied("new events start as drafts (or pending review); admins publish them")
    venue_id: UUID | None = values.get("venue_id")
    if venue_id is not None:
        values = await db.run(lambda conn: places.at_venue(conn, venue_id, values))
    validate_event(values)
    if values.get("recurrence_rrule") is not None:
        values |= await schedules.validate(forward, values)
    business_id: UUID | None = values.get("business_id")

    async def create(conn: Connection) -> asyncpg.Record:
        if (
            business_id is not None
            and not identity.is_platform_admin
            and not await repo.is_business_partner(conn, business_id, ("owner", "editor"))
        ):
            raise permission_denied("only owner or editor partners may create events for a business")
        return await repo.insert_event(conn, identity.user_id, values)

    created = await db.run(create)
    await schedules.materialize(forward, created["id"])
    return created


async def get_event(db: Database, event_id: UUID) -> asyncpg.Record:
    """The event as the caller may see it, with `caller_rank` (access.visible_event, in one round trip);
    404 when invisible."""
    # Anonymous readers cannot have changed it: they may read a replica.
    anonymous = not current_identity.get().is_signed_in
    rows = await db.read(
        "select (r.event).*, r.caller_rank from localplus_private.read_event($1, $2, $3, $4, $5) r",
        event_id,
        event_id=event_id,
        replica=anonymous,
    )
    if not rows:
        raise not_found("event not found")
    return rows[0]


def _schedule_changed(current: asyncpg.Record, changes: dict[str, Any]) -> bool:
    return any(name in changes and changes[name] != current[name] for name in SCHEDULE_COLUMNS)


async def update_event(
    db: Database, schedules: SchedulesPort, forward: Forward, event_id: UUID, changes: dict[str, Any], etag: str
) -> asyncpg.Record:
    """Write `changes` (column values; an absent column stays as it is) if the caller may edit."""
    signed_in()

    async def update(conn: Connection) -> tuple[asyncpg.Record, bool, int]:
        current = await event_to_change(conn, event_id, EDITOR, "edit", etag)
        if changes.get("status") == "cancelled" and current["status"] != "cancelled":
            # The trigger refuses editors this as a transition it does not know; like :cancel, it is a 403.
            require_rank(current, OWNER, "cancel")
        merged = {name: current[name] for name in EDITABLE_COLUMNS} | changes
        validate_event(merged)
        if not changes:
            return current, False, 0
        rescheduled = _schedule_changed(current, changes)
        written = dict(changes)
        if rescheduled and merged["recurrence_rrule"] is not None:
            written |= await schedules.validate(forward, merged)
        updated = await repo.update_event(conn, event_id, written)
        promoted = 0
        if "capacity" in changes:  # a larger one lets the waitlist in (events_after_capacity_change)
            await act_as(conn, SERVER)
            promoted = await promoted_here(conn, event_id)
        return updated, rescheduled, promoted

    updated, rescheduled, promoted = await db.run(update, event_id=event_id)
    WAITLIST_PROMOTIONS.inc(promoted)
    if rescheduled:
        await schedules.materialize(forward, event_id)
    return updated


async def delete_event(db: Database, event_id: UUID, etag: str) -> None:
    signed_in()

    async def delete(conn: Connection) -> None:
        await event_to_change(conn, event_id, OWNER, "delete", etag)
        await repo.delete_event(conn, event_id)

    await db.run(delete, event_id=event_id)


@dataclass(frozen=True)
class Split:
    """A "this and following" edit: the event keeps its occurrences before `split_at` under the
    recurrence `before`; a copy of it takes the rest with its own first start, end and recurrence."""

    event_id: UUID
    split_at: datetime
    before: dict[str, Any]  # recurrence columns
    starts_at: datetime
    ends_at: datetime
    after: dict[str, Any]  # recurrence columns
    capacity: int | None
    etag: str


async def split_event(
    db: Database, schedules: SchedulesPort, forward: Forward, split: Split
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """End the event's series before the split and create its continuation (editor and up): as the
    caller for the event itself, as the server for the copy, which keeps the event's creator, status
    (its text was reviewed already) and permissions."""
    signed_in()

    async def run(conn: Connection) -> tuple[asyncpg.Record, asyncpg.Record]:
        current = await event_to_change(conn, split.event_id, EDITOR, "split", split.etag)
        if current["recurrence_rrule"] is None:
            raise failed_precondition("only a recurring event can be split", "NOT_RECURRING")
        if split.split_at <= datetime.now(UTC):
            raise failed_precondition("a series is split at a future occurrence", "OCCURRENCE_STARTED")
        if current["status"] == "cancelled":
            raise failed_precondition("a cancelled event can no longer be changed", "INVALID_STATE")
        copy = {name: current[name] for name in EDITABLE_COLUMNS if name not in RECURRENCE_COLUMNS}
        copy |= {"starts_at": split.starts_at, "ends_at": split.ends_at, "capacity": split.capacity}
        validate_event(copy)
        before = await schedules.validate(forward, {name: current[name] for name in SCHEDULE_COLUMNS} | split.before)
        after = await schedules.validate(forward, copy | split.after)
        updated = await repo.update_event(conn, split.event_id, before)
        await act_as(conn, SERVER, event_id=split.event_id)
        created = await repo.insert_event(conn, current["created_by"], copy | after)
        await repo.copy_permissions(conn, split.event_id, created["id"])
        return updated, created

    updated, created = await db.run(run, event_id=split.event_id)
    for event_id in (split.event_id, created["id"]):
        await schedules.materialize(forward, event_id)
    return updated, created
