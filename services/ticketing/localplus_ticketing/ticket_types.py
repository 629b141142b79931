"""Ticket types of an event: list them a page at a time, create, change and delete them. Each use
case runs in one request transaction, so row-level security decides what the caller sees and may
change; `sold` is the server's (the orders' functions count it in the type's buckets) and `available`
is computed: inventory minus sold minus what unexpired reservations hold minus blocked seats."""

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, require_rank, signed_in, visible_event
from localplus_common.db import Connection, Database, current_identity
from localplus_common.errors import ApiError, invalid_argument, not_found
from localplus_common.money import check_price_minor, currency_code
from localplus_common.paging import (
    Keyset,
    Page,
    PageRequest,
    decode_keyset,
    int32_value,
    page_of,
    time_value,
    uuid_value,
)

# The list order, which page tokens hold the position in.
KEYSET: Keyset = {"sort_order": int32_value, "created_at": time_value, "id": uuid_value}
# Every ticket type as clients see it, selected from TYPES.
AVAILABLE = "greatest(0, t.inventory - c.sold - c.held - c.blocked)"
COLUMNS = f"t.*, c.sold, {AVAILABLE} as available"
TYPES = (
    "public.ticket_types t cross join lateral (select localplus_private.tickets_sold(t.id) as sold,"
    " localplus_private.tickets_held(t.id) as held, localplus_private.seats_blocked(t.id) as blocked) c"
)
# What an editor may change, in the order of the proto's fields.
EDITABLE_FIELDS = (
    "occurrence_id", "name", "description", "price_minor", "currency", "inventory", "min_per_order",
    "max_per_order", "sales_starts_at", "sales_ends_at", "hidden", "sort_order", "seat_category",
)  # fmt: skip
# What tickets were sold as: fixed once a ticket of the type was ordered (seat claims are keyed by the
# occurrence, so a sold seat would be on sale again under another).
SOLD_AS = ("occurrence_id", "currency", "seat_category")

# The limits of public.ticket_types' CHECKs, checked here first to name the field at fault.
MAX_NAME = 100
MAX_DESCRIPTION = 2000
MAX_INVENTORY = 1_000_000
MAX_PER_ORDER = 100
DEFAULT_MAX_PER_ORDER = 10


@dataclass(frozen=True)
class NewTicketType:
    """A ticket type to create; None where the client left a field to its default."""

    name: str
    description: str
    price_minor: int
    currency: str
    inventory: int
    min_per_order: int | None
    max_per_order: int | None
    sales_starts_at: datetime | None
    sales_ends_at: datetime | None
    hidden: bool
    sort_order: int
    occurrence_id: UUID | None
    # The seating plan category it sells; its inventory is then the plan's (seating migration).
    seat_category: str | None = None


async def list_ticket_types(db: Database, event_id: UUID, page: PageRequest) -> Page[asyncpg.Record]:
    after = decode_keyset(page, KEYSET)

    async def list_them(conn: Connection) -> list[asyncpg.Record]:
        await visible_event(conn, event_id)
        return await conn.fetch(
            f"""
            select {COLUMNS} from {TYPES}
            where event_id = $1
              and ($2::integer is null or (sort_order, created_at, id) > ($2, $3::timestamptz, $4::uuid))
            order by sort_order, created_at, id
            limit $5
            """,
            event_id,
            *(after or (None, None, None)),
            page.size + 1,
        )

    anonymous = not current_identity.get().is_signed_in  # who cannot have changed them: a replica will do
    return page_of(await db.run(list_them, event_id=event_id, replica=anonymous), page, KEYSET)


async def create_ticket_type(db: Database, event_id: UUID, new: NewTicketType) -> asyncpg.Record:
    signed_in()
    new = _checked(new)

    async def create(conn: Connection) -> asyncpg.Record:
        require_rank(await visible_event(conn, event_id), EDITOR, "add ticket types to")
        created = await conn.fetchval(
            """
            insert into public.ticket_types (event_id, occurrence_id, name, description, price_minor,
              currency, inventory, min_per_order, max_per_order, sales_starts_at, sales_ends_at,
              hidden, sort_order, seat_category)
            values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            returning id
            """,
            event_id,
            new.occurrence_id,
            new.name,
            new.description,
            new.price_minor,
            new.currency,
            new.inventory,
            new.min_per_order,
            new.max_per_order,
            new.sales_starts_at,
            new.sales_ends_at,
            new.hidden,
            new.sort_order,
            new.seat_category,
        )
        return await _read(conn, created)

    return await db.run(create, event_id=event_id)


async def update_ticket_type(db: Database, ticket_type_id: UUID, changes: dict[str, Any]) -> asyncpg.Record:
    """Change the named fields (editor and up). Inventory cannot go below what is sold and held, and
    the occurrence, currency and seat category stay once tickets were ordered."""
    signed_in()
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise _invalid(sorted(unknown)[0], "that field cannot be changed")
    if "currency" in changes:
        changes = {**changes, "currency": currency_code("ticket_type.currency", changes["currency"])}

    async def update(conn: Connection) -> asyncpg.Record:
        current = await _editable(conn, ticket_type_id)
        merged = {name: current[name] for name in EDITABLE_FIELDS} | changes
        _checked(NewTicketType(**merged))
        if not changes:
            return await _read(conn, ticket_type_id)
        # Locked first: reservations lock the row too, so what is held cannot change under the check.
        await conn.execute("select 1 from public.ticket_types where id = $1 for update", ticket_type_id)
        taken = await conn.fetchval(
            "select localplus_private.tickets_sold($1) + localplus_private.tickets_held($1)", ticket_type_id
        )
        if merged["inventory"] < taken:
            raise _invalid("inventory", f"inventory cannot be below the {taken} tickets sold and held")
        # What was sold stays what it was sold as (the table's trigger holds the same for SQL writers).
        kept = [name for name in SOLD_AS if merged[name] != current[name]]
        if kept and await conn.fetchval(
            "select exists (select 1 from public.order_items where ticket_type_id = $1)", ticket_type_id
        ):
            raise _invalid(kept[0], f"the {kept[0]} cannot change once tickets were ordered")
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=2))
        await conn.execute(
            f"update public.ticket_types set {assignments} where id = $1", ticket_type_id, *changes.values()
        )
        return await _read(conn, ticket_type_id)

    return await db.run(update)


async def delete_ticket_type(db: Database, ticket_type_id: UUID) -> None:
    """Delete a ticket type nobody ordered (editor and up); the database refuses once one was ordered."""
    signed_in()

    async def delete(conn: Connection) -> None:
        await _editable(conn, ticket_type_id)
        await conn.execute("delete from public.ticket_types where id = $1", ticket_type_id)

    await db.run(delete)


async def _editable(conn: Connection, ticket_type_id: UUID) -> asyncpg.Record:
    """The ticket type, if the caller sees it (404) and edits its event (403)."""
    row = await conn.fetchrow("select * from public.ticket_types where id = $1", ticket_type_id)
    if row is None:
        raise not_found("ticket type not found")
    require_rank(await visible_event(conn, row["event_id"]), EDITOR, "change the ticket types of")
    return row


async def _read(conn: Connection, ticket_type_id: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(f"select {COLUMNS} from {TYPES} where t.id = $1", ticket_type_id)
    assert row is not None
    return row


def _checked(new: NewTicketType) -> NewTicketType:
    """`new` with its defaults filled in, or a 400 naming the first field out of bounds."""
    if not new.name.strip():
        raise _invalid("name", "name is required")
    _check_text("name", new.name, MAX_NAME)
    _check_text("description", new.description, MAX_DESCRIPTION)
    check_price_minor("ticket_type.price_minor", new.price_minor)
    currency = currency_code("ticket_type.currency", new.currency)
    _check_range("inventory", new.inventory, 0, MAX_INVENTORY)
    min_per_order = 1 if new.min_per_order is None else new.min_per_order
    _check_range("min_per_order", min_per_order, 1, MAX_PER_ORDER)
    max_per_order = max(DEFAULT_MAX_PER_ORDER, min_per_order) if new.max_per_order is None else new.max_per_order
    if not min_per_order <= max_per_order <= MAX_PER_ORDER:
        raise _invalid(
            "max_per_order", f"max_per_order must be between min_per_order ({min_per_order}) and {MAX_PER_ORDER}"
        )
    if new.seat_category is not None:
        _check_text("seat_category", new.seat_category, MAX_NAME)
    starts, ends = new.sales_starts_at, new.sales_ends_at
    if starts is not None and ends is not None and ends <= starts:
        raise _invalid("sales_ends_at", "sales_ends_at must be after sales_starts_at")
    return dataclasses.replace(new, currency=currency, min_per_order=min_per_order, max_per_order=max_per_order)


def _invalid(field: str, message: str) -> ApiError:
    return invalid_argument(f"ticket_type.{field}", message)


def _check_text(field: str, value: str, longest: int) -> None:
    if len(value) > longest:
        raise _invalid(field, f"{field} must be at most {longest:,} characters")
    if "\x00" in value:
        raise _invalid(field, f"{field} must not contain NUL characters")


def _check_range(field: str, value: int, lowest: int, highest: int) -> None:
    if not lowest <= value <= highest:
        raise _invalid(field, f"{field} must be between {lowest:,} and {highest:,}")
