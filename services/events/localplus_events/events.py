"""Use cases on events themselves: create, read, update (AIP-134) and delete, each in one
request transaction."""

from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, OWNER, check_etag, require_rank, signed_in, visible_event
from localplus_common.db import Connection, Database, current_identity
from localplus_common.errors import aborted, permission_denied
from localplus_events import places
from localplus_events import repository as repo
from localplus_events.domain import EDITABLE_FIELDS, validate_event

# What a new event is unless the request says otherwise (CONTRACT §6).
NEW_EVENT_DEFAULTS = {"visibility": "public", "status": "draft"}


async def create_event(db: Database, values: dict[str, Any]) -> asyncpg.Record:
    """Create an event from column values; the caller becomes its creator (owner). At a venue, the
    venue fills what the values leave unset (places.at_venue)."""
    identity = signed_in()
    values = NEW_EVENT_DEFAULTS | values
    if values["status"] not in ("draft", "pending_review") and not identity.is_platform_admin:
        raise permission_denied("new events start as drafts (or pending review); admins publish them")
    business_id: UUID | None = values.get("business_id")
    venue_id: UUID | None = values.get("venue_id")
    if venue_id is None:
        validate_event(values)

    async def create(conn: Connection) -> asyncpg.Record:
        filled = values
        if venue_id is not None:
            filled = await places.at_venue(conn, venue_id, values)
            validate_event(filled)
        if (
            business_id is not None
            and not identity.is_platform_admin
            and not await repo.is_business_partner(conn, business_id, ("owner", "editor"))
        ):
            raise permission_denied("only owner or editor partners may create events for a business")
        return await repo.insert_event(conn, identity.user_id, filled)

    return await db.run(create)


async def get_event(db: Database, event_id: UUID) -> asyncpg.Record:
    # Anonymous readers cannot have changed it: they may read a replica.
    anonymous = not current_identity.get().is_signed_in
    return await db.run(lambda conn: visible_event(conn, event_id), event_id=event_id, replica=anonymous)


async def update_event(db: Database, event_id: UUID, changes: dict[str, Any], etag: str) -> asyncpg.Record:
    """Write `changes` (column values; an absent column stays as it is) if the caller may edit."""
    signed_in()

    async def update(conn: Connection) -> asyncpg.Record:
        current = await visible_event(conn, event_id)
        require_rank(current, EDITOR, "edit")
        check_etag(current, etag)
        validate_event({name: current[name] for name in EDITABLE_FIELDS} | changes)
        if not changes:
            return current
        updated = await repo.update_event(conn, event_id, current["version"], changes)
        if updated is None:
            raise aborted("the event changed meanwhile; read it again and retry", "ETAG_MISMATCH")
        return updated

    return await db.run(update, event_id=event_id)


async def delete_event(db: Database, event_id: UUID, etag: str) -> None:
    signed_in()

    async def delete(conn: Connection) -> None:
        current = await visible_event(conn, event_id)
        require_rank(current, OWNER, "delete")
        check_etag(current, etag)
        if not await repo.delete_event(conn, event_id, current["version"]):
            raise aborted("the event changed meanwhile; read it again and retry", "ETAG_MISMATCH")

    await db.run(delete, event_id=event_id)
