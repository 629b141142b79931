"""The waitlist's promotions a transaction made, for the promotions counter (localplus_common.telemetry)."""

from uuid import UUID

from localplus_common.db import Connection


async def promoted_here(conn: Connection, event_id: UUID, besides: UUID | None = None) -> int:
    """How many of the event's registrations (`besides`'s own aside) this transaction moved to going:
    the waitlist's promotions, made in SQL by the triggers that call localplus_private.promote_waitlist,
    the only writer of such a change here. A row's xmin is the transaction that wrote it. Row-level
    security shows a participant only their own registration: run as the server or the event's editor."""
    promoted: int = await conn.fetchval(
        "select count(*) from public.event_participants where event_id = $1 and status = 'going' "
        "and user_id is distinct from $2 and xmin = pg_current_xact_id()::xid",
        event_id,
        besides,
    )
    return promoted
