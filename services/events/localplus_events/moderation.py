"""Use cases of the event lifecycle (submit, approve, reject, cancel), the admin queue and the log.

The database enforces who may make which transition (events_before_write) and records every
one in the append-only event_moderation_log; this module adds precise errors and the
compare-and-set that lets exactly one of two racing moderators win."""

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, OWNER, check_etag, signed_in, visible_event
from localplus_common.cities import city_id
from localplus_common.db import Connection, Database
from localplus_common.errors import ApiError, aborted, invalid_argument, not_found, permission_denied
from localplus_common.paging import Page, PageRequest, decode_keyset, int64_value, page_of, time_value, uuid_value
from localplus_common.telemetry import MODERATION_DECISIONS
from localplus_events.domain import category_filter, folded_category, status_name


@dataclass(frozen=True)
class Transition:
    verb: str
    to_status: str
    from_statuses: tuple[str, ...]
    # Extra starting points for platform admins, who may publish drafts directly.
    admin_from_statuses: tuple[str, ...] = ()
    min_rank: int = EDITOR
    admins_only: bool = False


SUBMIT = Transition("submit", "pending_review", ("draft", "rejected"))
APPROVE = Transition("approve", "published", ("pending_review",), ("draft",), admins_only=True)
REJECT = Transition("reject", "rejected", ("pending_review",), admins_only=True)
CANCEL = Transition("cancel", "cancelled", ("draft", "pending_review", "published", "rejected"), min_rank=OWNER)

QUEUE_KEYSET = {"submitted_at": time_value, "id": uuid_value}
LOG_KEYSET = {"id": int64_value}


@dataclass(frozen=True)
class QueueFilter:
    """Narrows the moderation queue; empty strings match everything."""

    city: str = ""
    category: str = ""
    source: str = ""


async def transition(db: Database, event_id: UUID, etag: str, change: Transition, reason: str = "") -> asyncpg.Record:
    identity = signed_in()
    if change is REJECT and not reason.strip():
        raise invalid_argument("reason", "a rejection needs a reason the partner can act on")

    async def run(conn: Connection) -> asyncpg.Record:
        current = await visible_event(conn, event_id)
        if change.admins_only and not identity.is_platform_admin:
            raise permission_denied(f"only platform admins may {change.verb} events")
        if current["caller_rank"] < change.min_rank:
            raise permission_denied(f"you may not {change.verb} this event")
        check_etag(current, etag)
        allowed = change.from_statuses + (change.admin_from_statuses if identity.is_platform_admin else ())
        if current["status"] not in allowed:
            raise _wrong_state(current["status"], change)
        # Compare-and-set on the version: of two moderators acting at once, the second finds the
        # version moved on, matches no row and gets 409 with the state the first one left.
        updated = await conn.fetchrow(
            "update public.events set status = $3, status_reason = $4 where id = $1 and version = $2 returning *",
            event_id,
            current["version"],
            change.to_status,
            reason.strip() or None,
        )
        if updated is None:
            now = await conn.fetchval("select status from public.events where id = $1", event_id)
            if now is None:
                raise not_found("event not found")
            raise _wrong_state(now, change, concurrent=True)
        return updated

    updated = await db.run(run, event_id=event_id)
    MODERATION_DECISIONS.labels(change.verb).inc()
    return updated


def _wrong_state(status: str, change: Transition, concurrent: bool = False) -> ApiError:
    prefix = "meanwhile the event became" if concurrent else "the event is"
    return aborted(f"{prefix} {status_name(status)}; it cannot {change.verb} now", "INVALID_STATE")


async def moderation_queue(db: Database, where: QueueFilter, page: PageRequest) -> Page[asyncpg.Record]:
    """Events waiting for review, oldest submission first (platform admins)."""
    identity = signed_in()
    if not identity.is_platform_admin:
        raise permission_denied("the moderation queue is for platform admins")
    after = decode_keyset(page, QUEUE_KEYSET)

    async def queue(conn: Connection) -> list[asyncpg.Record]:
        in_city = await city_id(conn, where.city) if where.city else None
        return await conn.fetch(
            f"""
            select * from public.events
             where status = 'pending_review'
               and ($2::uuid is null or city_id = $2) and ($3::text = '' or category_key = {folded_category("$3")})
               and ($4::text = '' or source = $4)
               and ($5::timestamptz is null or (submitted_at, id) > ($5, $6))
             order by submitted_at, id
             limit $1
            """,
            page.size + 1,
            in_city,
            category_filter(where.category),
            where.source,
            *(after or (None, None)),
        )

    return page_of(await db.run(queue), page, QUEUE_KEYSET)


async def moderation_log(db: Database, event_id: UUID, page: PageRequest) -> Page[asyncpg.Record]:
    """An event's status changes in order (owners and platform admins)."""
    identity = signed_in()
    after = decode_keyset(page, LOG_KEYSET)

    async def run(conn: Connection) -> list[asyncpg.Record]:
        if not identity.is_platform_admin:
            # Admins may read the history of deleted events too; owners need the event.
            event = await visible_event(conn, event_id)
            if event["caller_rank"] < OWNER:
                raise permission_denied("only owners and platform admins may read the moderation log")
        rows = await conn.fetch(
            "select * from public.event_moderation_log where event_id = $1 and id > $2 order by id limit $3",
            event_id,
            after[0] if after else 0,
            page.size + 1,
        )
        # No history and no event: an id that never was one (a deleted event keeps its history).
        if (
            not rows
            and after is None
            and identity.is_platform_admin
            and not await conn.fetchval("select exists (select 1 from public.events where id = $1)", event_id)
        ):
            raise not_found("event not found")
        return rows

    return page_of(await db.run(run, event_id=event_id), page, LOG_KEYSET)
