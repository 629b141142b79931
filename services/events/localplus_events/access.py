"""Who may do what to an event, checked inside the request transaction.

Row-level security is the source of truth; these checks turn its silent filtering into the
statuses CONTRACT §3 promises: 404 for what the caller cannot see, 403 for what they may see
but not change, 401 when they must sign in first."""

from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.auth import Identity
from localplus_common.db import Connection, current_identity
from localplus_common.errors import aborted, failed_precondition, not_found, permission_denied, unauthenticated
from localplus_common.requests import decode_page_token, encode_page_token, token_datetime, token_uuid

EVENT_NOT_FOUND = "event not found"


def signed_in() -> Identity:
    identity = current_identity.get()
    if not identity.is_signed_in:
        raise unauthenticated()
    return identity


async def visible_event(conn: Connection, event_id: UUID) -> asyncpg.Record:
    """The event as the caller may see it, with `caller_rank`; 404 when invisible."""
    event = await conn.fetchrow(
        "select e.*, public.event_role_rank(e.id) as caller_rank from public.events e where e.id = $1",
        event_id,
    )
    if event is None:
        raise not_found(EVENT_NOT_FOUND)
    return event


def require_rank(event: asyncpg.Record, rank: int, action: str) -> None:
    if event["caller_rank"] < rank:
        raise permission_denied(f"you may not {action} this event")


def check_etag(event: asyncpg.Record, etag: str) -> None:
    if etag and etag != str(event["version"]):
        raise aborted(f"etag {etag[:32]!r} is stale; the event is now at {event['version']}", "ETAG_MISMATCH")


def time_keyset(token: str, time_key: str, id_key: str) -> tuple[Any, UUID] | None:
    """The (timestamp, id) position a page token stands for; None on the first page."""
    position = decode_page_token(token)
    if position is None:
        return None
    return token_datetime(position, time_key), token_uuid(position, id_key)


def time_page_token(rows: list[asyncpg.Record], limit: int, time_key: str, id_key: str) -> str:
    if len(rows) < limit:
        return ""
    last = rows[-1]
    return encode_page_token({time_key: last[time_key].isoformat(), id_key: str(last[id_key])})


async def check_registration_open(conn: Connection, event: asyncpg.Record) -> None:
    if event["status"] != "published":
        raise failed_precondition("registration opens once the event is published", "REGISTRATION_CLOSED")
    if not await conn.fetchval("select public.event_accepts_registrations($1)", event["id"]):
        raise failed_precondition("registration is not open for this event", "REGISTRATION_CLOSED")
