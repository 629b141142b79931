"""Events-service checks beyond the shared ones in localplus_common.access: etags, keyset page
tokens and whether registration is open."""

from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.db import Connection
from localplus_common.errors import aborted, failed_precondition
from localplus_common.requests import decode_page_token, encode_page_token, token_datetime, token_uuid


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
    if not await conn.fetchval("select localplus_private.event_accepts_registrations($1)", event["id"]):
        raise failed_precondition("registration is not open for this event", "REGISTRATION_CLOSED")
