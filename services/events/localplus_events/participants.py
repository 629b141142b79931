"""Use cases on registrations: people register themselves (or editors register them), change
their status or guest count, and cancel; editors manage everyone's."""

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, require_rank, signed_in, visible_event
from localplus_common.auth import SERVER, Identity
from localplus_common.db import Connection, Database, act_as
from localplus_common.errors import already_exists, failed_precondition, invalid_argument, not_found, permission_denied
from localplus_common.paging import Page, PageRequest, decode_keyset, page_of
from localplus_common.telemetry import REGISTRATIONS, WAITLIST_PROMOTIONS
from localplus_common.waitlist import promoted_here
from localplus_events import repository as repo
from localplus_events.domain import SELF_SERVICE_STATUSES

# Only a change to a going or waitlisted registration can let the waitlist in
# (localplus_private.event_participants_after_write).
PROMOTING_STATUSES = ("going", "waitlisted")


@dataclass(frozen=True)
class ParticipantChanges:
    """What a request sets on a registration; None leaves a value as it is (or at its default)."""

    status: str | None = None
    guest_count: int | None = None
    # When registering: the occurrence the registration is for (None: the whole event). In an
    # update: the one the body names (None: none named), which must be the registration's own.
    occurrence_id: UUID | None = None


async def list_participants(db: Database, event_id: UUID, page: PageRequest) -> Page[asyncpg.Record]:
    """Editors see every registration, anyone else only their own (row-level security)."""
    signed_in()
    after = decode_keyset(page, repo.BY_USER_KEYSET)

    async def list_them(conn: Connection) -> list[asyncpg.Record]:
        await visible_event(conn, event_id)
        return await repo.list_participants(conn, event_id, page.size + 1, after)

    return page_of(await db.run(list_them, event_id=event_id), page, repo.BY_USER_KEYSET)


async def get_participant(db: Database, event_id: UUID, user_id: UUID | None) -> asyncpg.Record:
    """One registration (the caller's own when `user_id` is None); someone else's is 404 to all but editors."""
    identity = signed_in()
    target = _target_user(identity, user_id)

    async def get(conn: Connection) -> asyncpg.Record:
        await visible_event(conn, event_id)
        row = await repo.get_participant(conn, event_id, target)
        if row is None:
            raise not_found("no registration for this event")
        return row

    return await db.run(get, event_id=event_id)


async def create_participant(
    db: Database, event_id: UUID, user_id: UUID | None, wanted: ParticipantChanges
) -> asyncpg.Record:
    """Register the caller (or, for editors, `user_id`): going unless the request says otherwise."""
    identity = signed_in()
    target = _target_user(identity, user_id)
    status = wanted.status or "going"
    guest_count = wanted.guest_count or 0

    async def register(conn: Connection) -> asyncpg.Record:
        event = await visible_event(conn, event_id)
        if target != identity.user_id:
            require_rank(event, EDITOR, "register other people for")
        elif status not in SELF_SERVICE_STATUSES or status == "cancelled":
            raise invalid_argument("status", "register as PARTICIPANT_STATUS_GOING or _INTERESTED")
        if event["caller_rank"] < EDITOR:
            await _check_registration_open(conn, event)
        elif target == identity.user_id:
            # Editors manage other people's registrations anywhere, but their own is one's own like
            # anyone's: published events only (CONTRACT §3).
            _check_published(event)
        if wanted.occurrence_id is not None and not await conn.fetchval(
            "select exists (select 1 from public.event_occurrences where id = $1 and event_id = $2)",
            wanted.occurrence_id,
            event_id,
        ):
            raise not_found("no such occurrence of this event")
        row = await repo.register(conn, event_id, target, status, guest_count, wanted.occurrence_id)
        if row is None:
            raise already_exists("already registered; update the registration instead")
        return row

    row = await db.run(register, event_id=event_id)
    REGISTRATIONS.labels(row["status"]).inc()
    return row


async def update_participant(
    db: Database, event_id: UUID, user_id: UUID | None, changes: ParticipantChanges
) -> asyncpg.Record:
    identity = signed_in()
    target = _target_user(identity, user_id)

    async def update(conn: Connection) -> tuple[asyncpg.Record, int]:
        event = await visible_event(conn, event_id)
        is_editor = event["caller_rank"] >= EDITOR
        # Looked up before the rank check: a registration the caller cannot see is 404, as for GET.
        current = await repo.get_participant(conn, event_id, target)
        if current is None:
            raise not_found("no registration for this event")
        if target != identity.user_id and not is_editor:
            raise permission_denied("only editors may change other people's registrations")
        _check_same_occurrence(event, current, changes.occurrence_id)
        status = changes.status if changes.status is not None else current["status"]
        guest_count = changes.guest_count if changes.guest_count is not None else current["guest_count"]
        if not is_editor:
            if status != current["status"] and status not in SELF_SERVICE_STATUSES:
                raise permission_denied("only editors may set that status")
            if status != "cancelled":
                await _check_registration_open(conn, event)
        elif target == identity.user_id and status != "cancelled":
            _check_published(event)
        row = await repo.update_participant(conn, event_id, target, status, guest_count)
        if row is None:
            raise permission_denied("you may not change this registration")
        return row, await _promoted(conn, event_id, target, current["status"])

    row, promoted = await db.run(update, event_id=event_id)
    WAITLIST_PROMOTIONS.inc(promoted)
    return row


async def delete_participant(db: Database, event_id: UUID, user_id: UUID | None) -> None:
    """Cancel a registration; the row stays (status cancelled) for stats and history."""
    identity = signed_in()
    target = _target_user(identity, user_id)

    async def cancel(conn: Connection) -> int:
        event = await visible_event(conn, event_id)
        # Looked up before the rank check: a registration the caller cannot see is 404, as for GET.
        current = await repo.get_participant(conn, event_id, target)
        if current is None:
            raise not_found("no registration for this event")
        if target != identity.user_id:
            require_rank(event, EDITOR, "cancel other people's registrations for")
        if current["status"] == "cancelled":
            raise not_found("no active registration for this event")
        await repo.update_participant(conn, event_id, target, "cancelled", current["guest_count"])
        return await _promoted(conn, event_id, target, current["status"])

    WAITLIST_PROMOTIONS.inc(await db.run(cancel, event_id=event_id))


async def _promoted(conn: Connection, event_id: UUID, target: UUID, was: str) -> int:
    """The promotions a change to `target`'s registration (which was `was`) made, counted by the caller
    once its transaction commits. The rest of the transaction runs as the server."""
    if was not in PROMOTING_STATUSES:
        return 0
    await act_as(conn, SERVER)
    return await promoted_here(conn, event_id, besides=target)


def _target_user(identity: Identity, requested: UUID | None) -> UUID:
    """The registration a request is about: the caller's own unless an id is given."""
    if requested is not None:
        return requested
    if identity.user_id is None:
        raise invalid_argument("user_id", "user_id is required for service callers")
    return identity.user_id


def _check_same_occurrence(event: asyncpg.Record, current: asyncpg.Record, named: UUID | None) -> None:
    """An update keeps the registration's occurrence (CONTRACT §6: PUT takes status and guest count):
    moving it would move its place between two pools and waitlists. Naming the one it has is fine, and
    so is a one-off event's own id, which registering stores as the event (no occurrence)."""
    kept = current["occurrence_id"] or (event["id"] if event["recurrence_rrule"] is None else None)
    if named is not None and named != kept:
        raise invalid_argument(
            "occurrence_id",
            "a registration keeps the occurrence it was made for: to go to another one, cancel it (DELETE)"
            " and register again (POST) naming that occurrence",
        )


def _check_published(event: asyncpg.Record) -> None:
    if event["status"] != "published":
        raise failed_precondition("registration opens once the event is published", "REGISTRATION_CLOSED")


async def _check_registration_open(conn: Connection, event: asyncpg.Record) -> None:
    _check_published(event)
    if not await repo.accepts_registrations(conn, event["id"]):
        raise failed_precondition("registration is not open for this event", "REGISTRATION_CLOSED")
