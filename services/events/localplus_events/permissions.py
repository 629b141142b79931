"""Use cases on explicit per-event roles: editors see who holds one, owners grant and revoke."""

from datetime import datetime
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, OWNER, require_rank, signed_in, visible_event
from localplus_common.db import Connection, Database
from localplus_common.errors import invalid_argument, not_found
from localplus_common.paging import Page, PageRequest, decode_keyset, page_of
from localplus_events import repository as repo


async def list_permissions(db: Database, event_id: UUID, page: PageRequest) -> Page[asyncpg.Record]:
    signed_in()
    after = decode_keyset(page, repo.BY_USER_KEYSET)

    async def list_them(conn: Connection) -> list[asyncpg.Record]:
        event = await visible_event(conn, event_id)
        require_rank(event, EDITOR, "see who has access to")
        return await repo.list_permissions(conn, event_id, page.size + 1, after)

    return page_of(await db.run(list_them, event_id=event_id), page, repo.BY_USER_KEYSET)


async def create_permission(
    db: Database, event_id: UUID, user_id: UUID, role: str, expires_at: datetime | None
) -> asyncpg.Record:
    """Grant `role` to `user_id` (replacing any role they held), until `expires_at` if given."""
    signed_in()

    async def grant(conn: Connection) -> asyncpg.Record:
        event = await visible_event(conn, event_id)
        require_rank(event, OWNER, "manage access to")
        if expires_at is not None and expires_at <= await conn.fetchval("select now()"):
            raise invalid_argument("permission.expires_at", "expires_at must be in the future")
        try:
            return await repo.grant_permission(conn, event_id, user_id, role, expires_at)
        except asyncpg.ForeignKeyViolationError as error:
            # The grantee is not a user; named as the request names it (the mapping would say `user_id`).
            if error.constraint_name != "event_permissions_user_id_fkey":
                raise
            raise invalid_argument("permission.user_id", "there is no user with that id") from None

    return await db.run(grant, event_id=event_id)


async def delete_permission(db: Database, event_id: UUID, user_id: UUID) -> None:
    signed_in()

    async def revoke(conn: Connection) -> None:
        event = await visible_event(conn, event_id)
        require_rank(event, OWNER, "manage access to")
        if not await repo.revoke_permission(conn, event_id, user_id):
            raise not_found("that user holds no role on this event")

    await db.run(revoke, event_id=event_id)
