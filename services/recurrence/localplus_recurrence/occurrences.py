"""Occurrences of an event, listed a page at a time in one request transaction (row-level
security decides which events the caller sees)."""

from datetime import datetime
from uuid import UUID

import asyncpg

from localplus_common.access import visible_event
from localplus_common.db import Connection, Database, current_identity
from localplus_common.errors import invalid_argument
from localplus_common.paging import Keyset, Page, PageRequest, decode_keyset, page_of, time_value, uuid_value

# The list order, which page tokens hold the position in.
KEYSET: Keyset = {"starts_at": time_value, "id": uuid_value}


async def list_occurrences(
    db: Database, event_id: UUID, start: datetime | None, end: datetime | None, page: PageRequest
) -> Page[asyncpg.Record]:
    """The occurrences that start within [start, end), soonest first."""
    if start is not None and end is not None and end <= start:
        raise invalid_argument("end", "end must be after start")
    after = decode_keyset(page.token, KEYSET)

    async def list_them(conn: Connection) -> list[asyncpg.Record]:
        await visible_event(conn, event_id)
        # Phase 0: a one-off event is its own single occurrence, under the event's id. Phase 3 puts
        # a series' occurrences in `occurrences`; the paging below stays as it is.
        return await conn.fetch(
            """
            with occurrences as (
              select e.id, e.id as event_id, e.starts_at, e.ends_at, e.starts_at as original_starts_at,
                     case when e.status = 'cancelled' then 'cancelled' else 'scheduled' end as status,
                     e.capacity, '' as note
              from public.events e
              where e.id = $1
            )
            select * from occurrences
            where ($2::timestamptz is null or starts_at >= $2)
              and ($3::timestamptz is null or starts_at < $3)
              and ($4::timestamptz is null or (starts_at, id) > ($4, $5::uuid))
            order by starts_at, id
            limit $6
            """,
            event_id,
            start,
            end,
            *(after or (None, None)),
            page.size + 1,
        )

    anonymous = not current_identity.get().is_signed_in  # who cannot have changed them: a replica will do
    return page_of(await db.run(list_them, event_id=event_id, replica=anonymous), page.size, KEYSET)
