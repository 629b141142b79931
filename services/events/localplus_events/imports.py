"""Scraped events: POST /api/imports (service_role) and the admins' queue of likely duplicates.

Each item is handled in a transaction of its own, so a bad or failing item is reported and the rest
of the batch goes on. An item is known by its source and external id; what it said is hashed, so the
same item sent again is a no-op. A new item becomes an event waiting for review (`source` = the
scraper's name) unless it looks like an event we already have (dedup.py): then it is kept as a likely
duplicate, for an admin to merge, keep separately, or reject."""

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.access import signed_in
from localplus_common.auth import SERVER
from localplus_common.db import Connection, Database
from localplus_common.errors import ApiError, failed_precondition, invalid_argument, not_found, permission_denied
from localplus_common.money import check_price_minor, currency_code
from localplus_common.paging import Page, PageRequest, decode_keyset, page_of, time_value, uuid_value
from localplus_events import dedup
from localplus_events.domain import validate_event

MAX_ITEMS = 500
DEFAULT_LENGTH = timedelta(hours=2)
DEFAULT_TIMEZONE = "Asia/Bangkok"
# Candidates: events within this of the item's start whose lowered title is at least this alike.
CANDIDATE_WINDOW = timedelta(hours=36)
CANDIDATE_SIMILARITY = 0.2
QUEUE_KEYSET = {"created_at": time_value, "id": uuid_value}


@dataclass(frozen=True)
class Item:
    """A scraped item, checked; `raw` and the extras are kept with it, not on the event."""

    source: str
    external_id: str
    title: str
    description: str
    starts_at: datetime
    ends_at: datetime | None
    timezone: str
    venue_name: str
    latitude: float | None
    longitude: float | None
    url: str = ""
    price_minor: int | None = None
    currency: str = ""
    image_url: str = ""
    raw: dict[str, Any] | None = None

    def stored(self) -> dict[str, Any]:
        values = asdict(self)
        values["starts_at"] = self.starts_at.isoformat()
        values["ends_at"] = self.ends_at.isoformat() if self.ends_at else None
        return values

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.stored(), sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Unreadable:
    """An item that could not even be read, kept with the caller's external_id to answer under."""

    external_id: str
    error: ApiError


@dataclass(frozen=True)
class ItemResult:
    external_id: str
    result: str  # created, updated, unchanged, duplicate, rejected
    event_id: UUID | None = None
    duplicate_of: UUID | None = None
    score: float = 0.0
    error: str = ""


async def import_items(db: Database, items: list[Item | Unreadable]) -> list[ItemResult]:
    """Import each item on its own; an item that could not even be read arrives as its error."""
    identity = signed_in()
    if identity.role != "service_role":
        raise permission_denied("imports are for the scrapers' backend (service_role)")
    if len(items) > MAX_ITEMS:
        raise invalid_argument("items", f"at most {MAX_ITEMS} items per request")
    results = []
    for item in items:
        if isinstance(item, Unreadable):
            results.append(ItemResult(item.external_id, "rejected", error=item.error.message))
            continue
        try:
            results.append(await _import_one(db, item))
        except ApiError as error:
            results.append(ItemResult(item.external_id, "rejected", error=error.message))
        except asyncpg.PostgresError as error:
            results.append(ItemResult(item.external_id, "rejected", error=_database_refusal(error)))
    return results


async def _import_one(db: Database, item: Item) -> ItemResult:
    item = _checked(item)
    try:
        return await db.run(lambda conn: _import(conn, item), SERVER)
    except asyncpg.UniqueViolationError:
        # The same item arrived in another batch at the same moment and was recorded first.
        return await db.run(lambda conn: _import(conn, item), SERVER)


async def _import(conn: Connection, item: Item) -> ItemResult:
    known = await conn.fetchrow(
        "select * from public.scraper_imports where source = $1 and external_id = $2 for update",
        item.source,
        item.external_id,
    )
    if known is not None and known["content_hash"] == item.content_hash:
        return _result_of(known, "unchanged")
    if known is None:
        return await _new(conn, item)
    await conn.execute(
        "update public.scraper_imports set item = $2::jsonb, content_hash = $3, updated_at = now() where id = $1",
        known["id"],
        json.dumps(item.stored()),
        item.content_hash,
    )
    if known["status"] in ("created", "kept") and known["event_id"] is not None:
        updated = await _update_event(conn, known["event_id"], item)
        return _result_of(known, "updated" if updated else "unchanged")
    if known["status"] in ("duplicate", "merged"):
        return _result_of(known, "duplicate")
    return _result_of(known, "unchanged")  # rejected by an admin: nothing is made of it


async def _new(conn: Connection, item: Item) -> ItemResult:
    match = await _best_match(conn, item)
    if match is not None:
        event_id, score = match
        record = await conn.fetchrow(
            """
            insert into public.scraper_imports (source, external_id, content_hash, item, duplicate_of, score, status)
            values ($1, $2, $3, $4::jsonb, $5, $6, 'duplicate')
            returning *
            """,
            item.source,
            item.external_id,
            item.content_hash,
            json.dumps(item.stored()),
            event_id,
            score,
        )
        assert record is not None
        return _result_of(record, "duplicate")
    event_id = await _create_event(conn, item)
    record = await conn.fetchrow(
        "insert into public.scraper_imports (source, external_id, content_hash, item, event_id, status) "
        "values ($1, $2, $3, $4::jsonb, $5, 'created') returning *",
        item.source,
        item.external_id,
        item.content_hash,
        json.dumps(item.stored()),
        event_id,
    )
    assert record is not None
    return _result_of(record, "created")


async def _best_match(conn: Connection, item: Item) -> tuple[UUID, float] | None:
    """The existing event the item most likely is, with its score; None below the duplicate bar."""
    await conn.execute("select set_config('pg_trgm.similarity_threshold', $1, true)", str(CANDIDATE_SIMILARITY))
    candidates = await conn.fetch(
        """
        select id, title, venue_name, starts_at, latitude, longitude from public.events
         where lower(title) % lower($1) and starts_at between $2::timestamptz - $3::interval and $2 + $3
           and status not in ('rejected', 'cancelled')
         order by similarity(lower(title), lower($1)) desc
         limit 20
        """,
        item.title,
        item.starts_at,
        CANDIDATE_WINDOW,
    )
    seen = dedup.Sighting(item.title, item.venue_name, item.starts_at, item.latitude, item.longitude)
    best: tuple[UUID, float] | None = None
    for row in candidates:
        other = dedup.Sighting(row["title"], row["venue_name"], row["starts_at"], row["latitude"], row["longitude"])
        if dedup.is_duplicate(seen, other):
            score = dedup.score(seen, other)
            if best is None or score > best[1]:
                best = (row["id"], score)
    return best


async def _create_event(conn: Connection, item: Item) -> UUID:
    event_id: UUID = await conn.fetchval(
        """
        insert into public.events (title, description, starts_at, ends_at, timezone, venue_name, latitude, longitude,
                                   status, source)
        values ($1, $2, $3, $4, $5, $6, $7, $8, 'pending_review', $9)
        returning id
        """,
        *_event_values(item),
        item.source,
    )
    return event_id


async def _update_event(conn: Connection, event_id: UUID, item: Item) -> bool:
    """Bring the event the item made up to date; one that went live goes back to review. Events that
    were rejected or cancelled meanwhile are left alone."""
    status = await conn.execute(
        """
        update public.events
           set title = $2, description = $3, starts_at = $4, ends_at = $5, timezone = $6, venue_name = $7,
               latitude = $8, longitude = $9,
               status = case when status = 'published' then 'pending_review' else status end
         where id = $1 and status in ('draft', 'pending_review', 'published')
        """,
        event_id,
        *_event_values(item),
    )
    return status == "UPDATE 1"


def _event_values(item: Item) -> tuple[Any, ...]:
    ends_at = item.ends_at or item.starts_at + DEFAULT_LENGTH
    return (
        item.title.strip(),
        item.description,
        item.starts_at,
        ends_at,
        item.timezone or DEFAULT_TIMEZONE,
        item.venue_name,
        item.latitude,
        item.longitude,
    )


def _checked(item: Item) -> Item:
    """`item` with its currency code upper-cased, after the checks an event gets (title, times, time
    zone, coordinates), for the event the item makes, and a ticket type's for its price."""
    if not item.external_id or len(item.external_id) > 200:
        raise invalid_argument("external_id", "external_id is required, at most 200 characters")
    ends_at = item.ends_at or item.starts_at + DEFAULT_LENGTH
    validate_event(
        {
            "title": item.title,
            "starts_at": item.starts_at,
            "ends_at": ends_at,
            "timezone": item.timezone or DEFAULT_TIMEZONE,
            "latitude": item.latitude,
            "longitude": item.longitude,
        }
    )
    if len(item.title) > 200 or len(item.description) > 20_000 or len(item.venue_name) > 200:
        raise invalid_argument("title", "title and venue_name take at most 200 characters, description 20,000")
    # The price is only kept with the item, but a moderator or a later ticket type reads it as money.
    if item.price_minor is not None:
        check_price_minor("price_minor", item.price_minor)
    return replace(item, currency=currency_code("currency", item.currency)) if item.currency else item


def _database_refusal(error: asyncpg.PostgresError) -> str:
    """What to tell a scraper about a row the database refused (a CHECK, mostly)."""
    constraint = getattr(error, "constraint_name", None) or ""
    return f"the database refused the item ({constraint or error.sqlstate})"


def _result_of(record: asyncpg.Record, result: str) -> ItemResult:
    return ItemResult(
        record["external_id"],
        result,
        event_id=record["event_id"],
        duplicate_of=record["duplicate_of"] if result == "duplicate" else None,
        score=record["score"] or 0.0,
    )


# The admins' queue


@dataclass(frozen=True)
class QueuedImport:
    record: asyncpg.Record
    candidate: asyncpg.Record | None


async def list_moderation_imports(db: Database, source: str, page: PageRequest) -> Page[QueuedImport]:
    _admin()
    after = decode_keyset(page, QUEUE_KEYSET)

    async def list_them(conn: Connection) -> Page[QueuedImport]:
        rows = await conn.fetch(
            """
            select * from public.scraper_imports
             where status = 'duplicate' and ($2::text = '' or source = $2)
               and ($3::timestamptz is null or (created_at, id) > ($3, $4))
             order by created_at, id
             limit $1
            """,
            page.size + 1,
            source,
            *(after or (None, None)),
        )
        listed = page_of(rows, page, QUEUE_KEYSET)
        candidates = {
            row["id"]: row
            for row in await conn.fetch(
                "select * from public.events where id = any($1)", [row["duplicate_of"] for row in listed.items]
            )
        }
        queued = [QueuedImport(row, candidates.get(row["duplicate_of"])) for row in listed.items]
        return Page(queued, listed.next_page_token)

    return await db.run(list_them)


async def resolve_import(db: Database, import_id: UUID, decision: str) -> QueuedImport:
    """merge: the item is `duplicate_of`; keep: it becomes an event of its own; reject: it is dropped."""
    identity = _admin()

    async def resolve(conn: Connection) -> QueuedImport:
        record = await conn.fetchrow("select * from public.scraper_imports where id = $1 for update", import_id)
        if record is None:
            raise not_found("import not found")
        if record["status"] != "duplicate":
            raise failed_precondition(f"this import was {record['status']} already", "INVALID_STATE")
        event_id = None
        if decision == "keep":
            event_id = await _create_event(conn, _item_of(record["item"]))
        status = {"merge": "merged", "keep": "kept", "reject": "rejected"}[decision]
        updated = await conn.fetchrow(
            "update public.scraper_imports set status = $2, event_id = coalesce($3, case when $2 = 'merged' "
            "then duplicate_of end), decided_by = $4, updated_at = now() where id = $1 returning *",
            import_id,
            status,
            event_id,
            identity.user_id,
        )
        assert updated is not None
        candidate = await conn.fetchrow("select * from public.events where id = $1", updated["duplicate_of"])
        return QueuedImport(updated, candidate)

    # As the server: the admin's access was checked; kept items become events nobody created.
    return await db.run(resolve, SERVER)


def _admin() -> Any:
    identity = signed_in()
    if not identity.is_platform_admin:
        raise permission_denied("the import queue is for platform admins")
    return identity


def _item_of(stored: str | dict[str, Any]) -> Item:
    values = json.loads(stored) if isinstance(stored, str) else dict(stored)
    values["starts_at"] = datetime.fromisoformat(values["starts_at"])
    values["ends_at"] = datetime.fromisoformat(values["ends_at"]) if values["ends_at"] else None
    return Item(**values)
