"""The event lifecycle (submit, approve, reject, cancel), the admin queue and the log.

The database enforces who may make which transition (events_before_write) and records every
one in the append-only event_moderation_log; this module adds precise errors and the
compare-and-set that lets exactly one of two racing moderators win."""

from dataclasses import dataclass

import asyncpg

from localplus.events.v1 import events_pb2
from localplus_common.access import EDITOR, OWNER, signed_in, visible_event
from localplus_common.db import Connection, Database
from localplus_common.errors import aborted, invalid_argument, not_found, permission_denied
from localplus_common.requests import decode_page_token, encode_page_token, page_size, parse_uuid, set_timestamp
from localplus_events import mapping
from localplus_events.access import check_etag, time_keyset, time_page_token


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


async def transition(db: Database, raw_id: str, etag: str, change: Transition, reason: str = "") -> asyncpg.Record:
    identity = signed_in()
    event_id = parse_uuid("id", raw_id)
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

    return await db.run(run, event_id=event_id)


def _wrong_state(status: str, change: Transition, concurrent: bool = False) -> Exception:
    prefix = "meanwhile the event became" if concurrent else "the event is"
    return aborted(f"{prefix} {mapping.event_status_name(status)}; it cannot {change.verb} now", "INVALID_STATE")


async def moderation_queue(db: Database, request: events_pb2.ListModerationEventsRequest) -> tuple[list, str]:
    identity = signed_in()
    if not identity.is_platform_admin:
        raise permission_denied("the moderation queue is for platform admins")
    limit = page_size(request.page_size)
    after = time_keyset(request.page_token, "submitted_at", "id")
    rows = await db.run(
        lambda conn: conn.fetch(
            """
            select * from public.events
             where status = 'pending_review'
               and ($2::text = '' or city = $2) and ($3::text = '' or category = $3)
               and ($4::text = '' or source = $4)
               and ($5::timestamptz is null or (submitted_at, id) > ($5, $6))
             order by submitted_at, id
             limit $1
            """,
            limit,
            request.city.lower(),
            request.category,
            request.source,
            *(after or (None, None)),
        )
    )
    return rows, time_page_token(rows, limit, "submitted_at", "id")


async def moderation_log(
    db: Database, request: events_pb2.ListModerationLogRequest
) -> events_pb2.ListModerationLogResponse:
    identity = signed_in()
    event_id = parse_uuid("event_id", request.event_id)
    limit = page_size(request.page_size)
    after_id = _log_position(request.page_token)

    async def run(conn: Connection) -> list[asyncpg.Record]:
        if not identity.is_platform_admin:
            # Admins may read the history of deleted events too; owners need the event.
            event = await visible_event(conn, event_id)
            if event["caller_rank"] < OWNER:
                raise permission_denied("only owners and platform admins may read the moderation log")
        return await conn.fetch(
            "select * from public.event_moderation_log where event_id = $1 and id > $2 order by id limit $3",
            event_id,
            after_id,
            limit,
        )

    rows = await db.run(run, event_id=event_id)
    entries = []
    for row in rows:
        entry = events_pb2.ModerationLogEntry(
            event_id=str(row["event_id"]),
            actor_id=str(row["actor_id"] or ""),
            to_status=mapping.event_status_name(row["to_status"]),
            reason=row["reason"] or "",
        )
        if row["from_status"]:
            entry.from_status = mapping.event_status_name(row["from_status"])  # type: ignore[assignment]
        set_timestamp(entry, "created_at", row["created_at"])
        entries.append(entry)
    next_token = encode_page_token({"id": rows[-1]["id"]}) if len(rows) == limit else ""
    return events_pb2.ListModerationLogResponse(entries=entries, next_page_token=next_token)


def _log_position(token: str) -> int:
    position = decode_page_token(token)
    if position is None:
        return 0
    entry_id = position.get("id")
    if not isinstance(entry_id, int) or not 0 <= entry_id < 2**63:
        raise invalid_argument("page_token", "page_token is not valid")
    return entry_id
