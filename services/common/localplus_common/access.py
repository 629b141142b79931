"""Who may do what to an event, checked inside the request transaction (every service).

Row-level security is the source of truth; these checks turn its silent filtering into the
statuses CONTRACT §3 promises: 404 for what the caller cannot see, 403 for what they may see
but not change, 401 when they must sign in first; and 409 when the caller's copy is stale."""

from uuid import UUID

import asyncpg

from localplus_common.auth import Identity
from localplus_common.db import Connection, current_identity
from localplus_common.errors import aborted, not_found, permission_denied, unauthenticated

# The caller's rank on an event, as localplus_private.event_role_rank() computes it in SQL.
VIEWER, EDITOR, OWNER = 2, 3, 4


def signed_in() -> Identity:
    identity = current_identity.get()
    if not identity.is_signed_in:
        raise unauthenticated()
    return identity


async def visible_event(conn: Connection, event_id: UUID) -> asyncpg.Record:
    """The event as the caller may see it, with `caller_rank`; 404 when invisible."""
    event = await conn.fetchrow(
        "select e.*, localplus_private.event_role_rank(e.id) as caller_rank from public.events e where e.id = $1",
        event_id,
    )
    if event is None:
        raise not_found("event not found")
    return event


async def require_business(conn: Connection, business_id: UUID) -> None:
    """404 for a business that does not exist. Asked of a definer function: `businesses` has row-level
    security that is not the engine's (on Supabase it may hide rows from the caller)."""
    if not await conn.fetchval("select localplus_private.business_exists($1)", business_id):
        raise not_found("business not found")


async def require_business_partner(conn: Connection, identity: Identity, business_id: UUID, what: str) -> None:
    """A business's figures are its partners' (any role) and platform admins': 404 when it does not
    exist, 403 for anyone else."""
    await require_business(conn, business_id)
    if not identity.is_platform_admin and not await conn.fetchval(
        "select localplus_private.is_business_partner($1, array['owner', 'editor', 'viewer'])", business_id
    ):
        raise permission_denied(f"only the business's partners may see its {what}")


async def event_to_change(conn: Connection, event_id: UUID, rank: int, action: str, etag: str) -> asyncpg.Record:
    """The event the caller is about to write, locked until the transaction ends: 404 when invisible,
    403 below `rank`, then read again under the row's lock, so that a write waits for a concurrent one
    and applies to what it left (without an etag the caller asked for no version check, AIP-134), and
    409 when `etag` is stale. Locked only after the rank check: row-level security admits a `for update`
    read only to who may update the row, so a viewer's would be a 404 instead of a 403."""
    require_rank(await visible_event(conn, event_id), rank, action)
    event = await conn.fetchrow(
        "select e.*, localplus_private.event_role_rank(e.id) as caller_rank from public.events e "
        "where e.id = $1 for no key update of e",
        event_id,
    )
    if event is None:  # deleted meanwhile
        raise not_found("event not found")
    check_etag(event, etag)
    return event


def require_rank(event: asyncpg.Record, rank: int, action: str) -> None:
    if event["caller_rank"] < rank:
        raise permission_denied(f"you may not {action} this event")


def check_etag(row: asyncpg.Record, etag: str) -> None:
    """An etag is the row's `version`; a client that sends one acts only on that version (AIP-154)."""
    if etag and etag != str(row["version"]):
        raise aborted(f"etag {etag[:32]!r} is stale; it is now at {row['version']}", "ETAG_MISMATCH")
