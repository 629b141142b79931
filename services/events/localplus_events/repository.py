"""SQL for events, participants and permissions, and every call of a database function that
decides who may do what. Every query runs inside the request transaction opened by
`Database.run`, so row-level security applies to all of them."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from localplus_common.db import Connection
from localplus_common.paging import time_value, uuid_value

# Column names in the dynamic statements below come only from domain.EDITABLE_FIELDS, never from
# clients; values are always parameters.


async def insert_event(conn: Connection, created_by: UUID | None, values: dict[str, Any]) -> asyncpg.Record:
    columns = ["created_by", *values]
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    row = await conn.fetchrow(
        f"insert into public.events ({', '.join(columns)}) values ({placeholders}) returning *",
        created_by,
        *values.values(),
    )
    assert row is not None
    return row


async def update_event(conn: Connection, event_id: UUID, values: dict[str, Any]) -> asyncpg.Record:
    """Apply `values` to the event the caller holds locked (access.event_to_change)."""
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=2))
    row = await conn.fetchrow(
        f"update public.events set {assignments} where id = $1 returning *", event_id, *values.values()
    )
    assert row is not None, "the event is locked by this transaction"
    return row


async def delete_event(conn: Connection, event_id: UUID) -> None:
    """Delete the event the caller holds locked (access.event_to_change)."""
    await conn.execute("delete from public.events where id = $1", event_id)


async def copy_permissions(conn: Connection, from_event: UUID, to_event: UUID) -> None:
    """Give an event the permissions another one has that are still in force, each still granted by
    whoever granted it (the server's own write, which the permissions trigger lets keep granted_by; an
    expired one would be refused, as any grant that has already expired)."""
    await conn.execute(
        "insert into public.event_permissions (event_id, user_id, role, granted_by, expires_at)"
        " select $2, user_id, role, granted_by, expires_at from public.event_permissions"
        " where event_id = $1 and (expires_at is null or expires_at > now())",
        from_event,
        to_event,
    )


async def is_business_partner(conn: Connection, business_id: UUID, roles: Sequence[str]) -> bool:
    """Whether the caller is a partner of the business in one of `roles`."""
    return bool(
        await conn.fetchval("select localplus_private.is_business_partner($1, $2::text[])", business_id, list(roles))
    )


async def accepts_registrations(conn: Connection, event_id: UUID) -> bool:
    """Whether the event's registration window is open now."""
    return bool(await conn.fetchval("select localplus_private.event_accepts_registrations($1)", event_id))


async def registrations_per_day(conn: Connection, event_id: UUID) -> list[asyncpg.Record]:
    """(day, registrations) rows, days in the event's time zone."""
    return await conn.fetch("select * from localplus_private.event_registrations_per_day($1)", event_id)


async def register(
    conn: Connection, event_id: UUID, user_id: UUID, status: str, guest_count: int, occurrence_id: UUID | None
) -> asyncpg.Record | None:
    """Insert a registration (for the whole event or one occurrence), or revive a cancelled one; None
    if one is already active.

    The capacity trigger may turn "going" into "waitlisted" when the event (or occurrence) is full.
    """
    return await conn.fetchrow(
        """
        insert into public.event_participants as p (event_id, user_id, status, guest_count, occurrence_id)
        values ($1, $2, $3, $4, $5)
        on conflict (event_id, user_id) do update
          set status = excluded.status, guest_count = excluded.guest_count, occurrence_id = excluded.occurrence_id
          where p.status = 'cancelled'
        returning *
        """,
        event_id,
        user_id,
        status,
        guest_count,
        occurrence_id,
    )


async def get_participant(conn: Connection, event_id: UUID, user_id: UUID) -> asyncpg.Record | None:
    # Row-level security hides other people's registrations from all but editors.
    return await conn.fetchrow(
        "select * from public.event_participants where event_id = $1 and user_id = $2", event_id, user_id
    )


async def update_participant(
    conn: Connection, event_id: UUID, user_id: UUID, status: str, guest_count: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "update public.event_participants set status = $3, guest_count = $4 "
        "where event_id = $1 and user_id = $2 returning *",
        event_id,
        user_id,
        status,
        guest_count,
    )


async def list_participants(
    conn: Connection, event_id: UUID, limit: int, after: list[Any] | None
) -> list[asyncpg.Record]:
    # Row-level security narrows this to the caller's own row unless they are an editor.
    return await _page_by_event(conn, "event_participants", event_id, limit, after)


async def list_permissions(
    conn: Connection, event_id: UUID, limit: int, after: list[Any] | None
) -> list[asyncpg.Record]:
    return await _page_by_event(conn, "event_permissions", event_id, limit, after)


# The order of an event's participants and permissions: oldest first.
BY_USER_KEYSET = {"created_at": time_value, "user_id": uuid_value}


async def _page_by_event(
    conn: Connection,
    table: Literal["event_participants", "event_permissions"],
    event_id: UUID,
    limit: int,
    after: list[Any] | None,
) -> list[asyncpg.Record]:
    """One page of an event's rows keyed by user, oldest first."""
    return await conn.fetch(
        f"select * from public.{table} where event_id = $1 "
        "and ($3::timestamptz is null or (created_at, user_id) > ($3, $4)) "
        "order by created_at, user_id limit $2",
        event_id,
        limit,
        *(after or (None, None)),
    )


async def grant_permission(
    conn: Connection, event_id: UUID, user_id: UUID, role: str, expires_at: datetime | None
) -> asyncpg.Record:
    """Grant or replace a role; the database records the caller as `granted_by`."""
    row = await conn.fetchrow(
        """
        insert into public.event_permissions (event_id, user_id, role, expires_at)
        values ($1, $2, $3, $4)
        on conflict (event_id, user_id) do update set role = excluded.role, expires_at = excluded.expires_at
        returning *
        """,
        event_id,
        user_id,
        role,
        expires_at,
    )
    assert row is not None
    return row


async def revoke_permission(conn: Connection, event_id: UUID, user_id: UUID) -> bool:
    deleted = await conn.fetchval(
        "with gone as (delete from public.event_permissions where event_id = $1 and user_id = $2 "
        "returning 1) select count(*) from gone",
        event_id,
        user_id,
    )
    return bool(deleted)
