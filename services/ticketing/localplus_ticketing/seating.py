"""Assigned seating: a venue's seating plans, an event's seats and their status, blocking seats, the
seat map, and the seats of orders and tickets.

Seats are their own inventory: what a seat is doing is a row of `seat_claims` (held, sold or blocked,
for a time range), and an exclusion constraint keeps two claims of one seat from overlapping, so the
database, not this code, is what never sells a seat twice (see the seating migration). The orders'
use cases call the functions at the end around paying an order."""

import html
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, require_rank, signed_in, visible_event
from localplus_common.auth import SERVER
from localplus_common.db import Connection, Database, act_as, current_identity
from localplus_common.errors import invalid_argument, not_found, permission_denied
from localplus_common.paging import Page, PageRequest, decode_keyset, page_of, time_value, uuid_value
from localplus_common.requests import text

MAX_PLAN_NAME = 200
MAX_ZONE_NAME = 100
MAX_ROW_NAME = 20
MAX_SEAT_NUMBER = 20
MAX_CATEGORY = 100
MAX_SEATS = 30_000  # every seat of one in a response fits the gateway's 8 MiB response cap
MAX_CAPACITY = 1_000_000
MAX_SEAT_IDS = 1_000

PLAN_COLUMNS = "id, venue_id, name, general_admission, created_at, updated_at"
OLDEST_KEYSET = {"created_at": time_value, "id": uuid_value}
# Every seat of an event, with its status for one occurrence key ($2) and the type selling it, if that
# type is one of $3 (those the caller may see: a hidden type's id is its editors' alone).
SEATS_SQL = """
select es.id, ps.zone, ps.row_name, ps.number, ps.category, ps.accessible, ps.x, ps.y,
       tt.id as ticket_type_id, coalesce(c.kind, 'available') as status
  from public.event_seats es
  join public.plan_seats ps on ps.id = es.plan_seat_id
  left join public.seat_claims c
    on c.seat_id = es.id and c.occurrence_key = $2 and localplus_private.seat_claim_live(c.during)
  left join (select distinct on (seat_category) seat_category, id from public.ticket_types
              where event_id = $1 and coalesce(occurrence_id, event_id) = $2 and id = any ($3)
              order by seat_category, id) tt on tt.seat_category = ps.category
 where es.event_id = $1 {only}
 order by ps.zone_rank, ps.row_rank, ps.seat_rank
"""


@dataclass(frozen=True)
class PlanInput:
    """A plan's fields as the request gives them; None where an update leaves one as it is."""

    name: str | None
    zones: list[dict[str, Any]] | None  # [{name, rows: [{name, seats: [{number, x, y, category, accessible}]}]}]
    general_admission: list[dict[str, Any]] | None  # [{name, category, capacity}]


@dataclass(frozen=True)
class PlanView:
    plan: asyncpg.Record
    seats: list[asyncpg.Record]


def seat_label(row: str, number: str) -> str:
    return f"{row}-{number}"


# Plans


async def list_plans(db: Database, venue_id: UUID, page: PageRequest) -> Page[asyncpg.Record]:
    """A venue's plans, oldest first."""
    after = decode_keyset(page, OLDEST_KEYSET)

    async def list_them(conn: Connection) -> list[asyncpg.Record]:
        await _venue(conn, venue_id)
        return await conn.fetch(
            f"select {PLAN_COLUMNS} from public.seating_plans where venue_id = $1"
            " and ($3::timestamptz is null or (created_at, id) > ($3, $4)) order by created_at, id limit $2",
            venue_id,
            page.size + 1,
            *(after or (None, None)),
        )

    rows = await db.run(list_them, replica=not current_identity.get().is_signed_in)
    return page_of(rows, page, OLDEST_KEYSET)


async def get_plan(db: Database, plan_id: UUID) -> PlanView:
    return await db.run(lambda conn: _plan(conn, plan_id), replica=not current_identity.get().is_signed_in)


async def create_plan(db: Database, venue_id: UUID, new: PlanInput) -> PlanView:
    identity = signed_in()
    name = _checked_name(new.name)
    zones = _checked_zones(new.zones or [])
    areas = _checked_areas(new.general_admission or [])

    async def create(conn: Connection) -> PlanView:
        await _may_manage(conn, venue_id)
        await act_as(conn, SERVER)
        plan_id = await conn.fetchval(
            "select localplus_private.create_seating_plan($1, $2, $3::jsonb, $4::jsonb, $5)",
            venue_id,
            name,
            json.dumps(zones),
            json.dumps(areas),
            identity.user_id,
        )
        return await _plan(conn, plan_id)

    return await db.run(create)


async def update_plan(db: Database, plan_id: UUID, changes: PlanInput) -> PlanView:
    """Change the plan's name, seats or areas (the venue's managers); held or sold seats stay put."""
    signed_in()
    name = None if changes.name is None else _checked_name(changes.name)
    zones = None if changes.zones is None else json.dumps(_checked_zones(changes.zones))
    areas = None if changes.general_admission is None else json.dumps(_checked_areas(changes.general_admission))

    async def update(conn: Connection) -> PlanView:
        venue_id = await conn.fetchval("select venue_id from public.seating_plans where id = $1", plan_id)
        if venue_id is None:
            raise not_found("seating plan not found")
        await _may_manage(conn, venue_id)
        await act_as(conn, SERVER)
        await conn.execute(
            "select localplus_private.update_seating_plan($1, $2, $3::jsonb, $4::jsonb)", plan_id, name, zones, areas
        )
        return await _plan(conn, plan_id)

    return await db.run(update)


async def _plan(conn: Connection, plan_id: UUID) -> PlanView:
    plan = await conn.fetchrow(f"select {PLAN_COLUMNS} from public.seating_plans where id = $1", plan_id)
    if plan is None:
        raise not_found("seating plan not found")
    seats = await conn.fetch(
        "select * from public.plan_seats where plan_id = $1 order by zone_rank, row_rank, seat_rank", plan_id
    )
    return PlanView(plan, list(seats))


async def _venue(conn: Connection, venue_id: UUID) -> asyncpg.Record:
    venue = await conn.fetchrow("select id, business_id from public.venues where id = $1", venue_id)
    if venue is None:
        raise not_found("venue not found")
    return venue


async def _may_manage(conn: Connection, venue_id: UUID) -> None:
    """Platform admins, and owner or editor partners of the venue's business, manage its plans."""
    venue = await _venue(conn, venue_id)
    if current_identity.get().is_platform_admin:
        return
    if venue["business_id"] is None or not await conn.fetchval(
        "select localplus_private.is_business_partner($1, array['owner', 'editor'])", venue["business_id"]
    ):
        raise permission_denied("only platform admins and owner or editor partners of its business manage its plans")


def _checked_name(name: str | None) -> str:
    name = text("seating_plan.name", name or "").strip()
    if not 1 <= len(name) <= MAX_PLAN_NAME:
        raise invalid_argument("seating_plan.name", f"name is required, at most {MAX_PLAN_NAME} characters")
    return name


def _checked_text(field: str, value: str, longest: int) -> str:
    text(field, value)
    if not 1 <= len(value) <= longest or not value.strip():
        raise invalid_argument(field, f"{field} is required, at most {longest} characters")
    return value


def _checked_zones(zones: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The zones as the database function takes them, or a 400 naming the first bad field."""
    seats = 0
    zone_names: set[str] = set()
    for z, zone in enumerate(zones):
        where = f"seating_plan.zones[{z}]"
        name = _checked_text(f"{where}.name", zone["name"], MAX_ZONE_NAME)
        if name in zone_names:
            raise invalid_argument(f"{where}.name", f"zone {name!r} is named twice")
        zone_names.add(name)
        row_names: set[str] = set()
        for r, row in enumerate(zone["rows"]):
            at = f"{where}.rows[{r}]"
            row_name = _checked_text(f"{at}.name", row["name"], MAX_ROW_NAME)
            if row_name in row_names:
                raise invalid_argument(f"{at}.name", f"row {row_name!r} is named twice in zone {name!r}")
            row_names.add(row_name)
            numbers: set[str] = set()
            for s, seat in enumerate(row["seats"]):
                field = f"{at}.seats[{s}]"
                number = _checked_text(f"{field}.number", seat["number"], MAX_SEAT_NUMBER)
                if number in numbers:
                    raise invalid_argument(f"{field}.number", f"seat {row_name}-{number} is named twice")
                numbers.add(number)
                _checked_text(f"{field}.category", seat["category"], MAX_CATEGORY)
                for axis in ("x", "y"):
                    if not math.isfinite(seat[axis]) or abs(seat[axis]) > 1e9:
                        raise invalid_argument(f"{field}.{axis}", f"{axis} must be a finite number")
            seats += len(row["seats"])
    if seats > MAX_SEATS:
        raise invalid_argument("seating_plan.zones", f"a plan has at most {MAX_SEATS:,} seats")
    return zones


def _checked_areas(areas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for a, area in enumerate(areas):
        where = f"seating_plan.general_admission[{a}]"
        _checked_text(f"{where}.name", area["name"], MAX_ZONE_NAME)
        _checked_text(f"{where}.category", area["category"], MAX_CATEGORY)
        if not 1 <= area["capacity"] <= MAX_CAPACITY:
            raise invalid_argument(f"{where}.capacity", f"capacity must be between 1 and {MAX_CAPACITY:,}")
    return areas


# An event's seats


async def list_seats(db: Database, event_id: UUID, occurrence_id: UUID | None) -> list[asyncpg.Record]:
    """Every seat of the event with its status for the occurrence; never who holds or bought one."""

    async def list_them(conn: Connection) -> list[asyncpg.Record]:
        key = await _seated_event(conn, event_id, occurrence_id)
        types = await _visible_types(conn, event_id)
        await act_as(conn, SERVER)
        return await conn.fetch(SEATS_SQL.format(only=""), event_id, key, types)

    return await db.run(list_them, event_id=event_id)


async def block_seats(
    db: Database, event_id: UUID, seat_ids: list[UUID], occurrence_id: UUID | None, *, block: bool
) -> list[asyncpg.Record]:
    """Block seats (off sale: house seats, companions of wheelchair places) or unblock them (editors)."""
    signed_in()
    if not 1 <= len(seat_ids) <= MAX_SEAT_IDS:
        raise invalid_argument("seat_ids", f"name 1 to {MAX_SEAT_IDS:,} seats")

    async def change(conn: Connection) -> list[asyncpg.Record]:
        key = await _seated_event(conn, event_id, occurrence_id, rank=EDITOR)
        types = await _visible_types(conn, event_id)
        await act_as(conn, SERVER)
        await conn.execute("select localplus_private.block_seats($1, $2, $3, $4)", event_id, key, seat_ids, block)
        return await conn.fetch(SEATS_SQL.format(only="and es.id = any ($4)"), event_id, key, types, seat_ids)

    return await db.run(change, event_id=event_id)


async def _visible_types(conn: Connection, event_id: UUID) -> list[UUID]:
    """The event's seated ticket types the caller may see (read as the caller: row-level security
    shows hidden ones to the event's editors only), before the seats are read as the server."""
    types: list[UUID] = await conn.fetchval(
        "select coalesce(array_agg(id), '{}') from public.ticket_types"
        " where event_id = $1 and seat_category is not null",
        event_id,
    )
    return types


async def _seated_event(conn: Connection, event_id: UUID, occurrence_id: UUID | None, rank: int = 0) -> UUID:
    """The occurrence key of a seated event the caller may see (and act on with `rank`)."""
    event = await visible_event(conn, event_id)
    if rank:
        require_rank(event, rank, "block or unblock the seats of")
    if event["seating_plan_id"] is None:
        raise not_found("the event has no seating plan")
    if occurrence_id is None:
        return event_id
    await require_occurrence_of(conn, event_id, occurrence_id, "occurrence_id")
    return occurrence_id


async def require_occurrence_of(conn: Connection, event_id: UUID, occurrence_id: UUID, field: str) -> None:
    """400 on `field` unless `occurrence_id` is one of the event's occurrences or the event's own id,
    which stands for the whole event (its series-wide ticket types)."""
    if occurrence_id != event_id and not await conn.fetchval(
        "select exists (select 1 from public.event_occurrences where id = $1 and event_id = $2)",
        occurrence_id,
        event_id,
    ):
        raise invalid_argument(field, "not an occurrence of this event")


# The seat map

# Category colours (Okabe-Ito, told apart with colour blindness), then status styles.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
STATUS_STYLE = (
    ".held{fill-opacity:.35;stroke:#333;stroke-dasharray:2 1}"
    ".sold{fill:#c8c8c8;stroke:#8a8a8a}"
    ".blocked{fill:#ffffff;stroke:#555;stroke-width:1.5}"
    ".acc{stroke:#000;stroke-width:2}"
    "text{font:12px sans-serif;fill:#222}"
)
CELL = 24.0  # pixels between neighbouring seats


async def seat_map(db: Database, event_id: UUID, occurrence_id: UUID | None) -> bytes:
    return render_seat_map(await list_seats(db, event_id, occurrence_id))


def render_seat_map(seats: list[asyncpg.Record]) -> bytes:
    """The seats as SVG: one circle per seat (`data-seat` its id, `data-label` its name) coloured by
    category; held ones faint, sold ones grey, blocked ones hollow; row names on the left (at each
    row's first seat), a legend below."""
    categories = list(dict.fromkeys(seat["category"] for seat in seats))
    colours = {category: PALETTE[i % len(PALETTE)] for i, category in enumerate(categories)}
    xs, ys = [seat["x"] for seat in seats] or [0.0], [seat["y"] for seat in seats] or [0.0]
    x0, y0 = min(xs), min(ys)
    unit = _seat_spacing(seats)
    scale = CELL / unit
    radius = CELL * 0.4
    left = 2 * CELL  # room for the row names
    width = (max(xs) - x0) * scale + left + CELL
    height = (max(ys) - y0) * scale + 2 * CELL
    legend_rows = len(categories) + 4
    total_height = height + legend_rows * 18 + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(width, 240):.0f}" height="{total_height:.0f}" '
        f'viewBox="0 0 {max(width, 240):.0f} {total_height:.0f}">',
        "<style>"
        + "".join(f".k{i}{{fill:{colours[c]}}}" for i, c in enumerate(categories))
        + STATUS_STYLE
        + "</style>",
        '<rect width="100%" height="100%" fill="#fff"/>',
    ]
    index = {category: i for i, category in enumerate(categories)}
    named: set[tuple[str, str]] = set()
    for seat in seats:
        x = (seat["x"] - x0) * scale + left
        y = (seat["y"] - y0) * scale + CELL
        if (seat["zone"], seat["row_name"]) not in named:
            named.add((seat["zone"], seat["row_name"]))
            row_name = html.escape(seat["row_name"])
            parts.append(f'<text x="{x - CELL * 0.8:.1f}" y="{y + 4:.1f}" text-anchor="end">{row_name}</text>')
        classes = f"k{index[seat['category']]}" + ("" if seat["status"] == "available" else f" {seat['status']}")
        if seat["accessible"]:
            classes += " acc"
        label = html.escape(f"{seat['zone']} {seat_label(seat['row_name'], seat['number'])}", quote=True)
        parts.append(
            f'<circle class="{classes}" cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" data-seat="{seat["id"]}" '
            f'data-label="{label}"/>'
        )
    y = height + 14
    for category in categories:
        parts.append(f'<circle class="k{index[category]}" cx="{CELL}" cy="{y - 4:.0f}" r="6"/>')
        parts.append(f'<text x="{CELL + 12}" y="{y:.0f}">{html.escape(category)}</text>')
        y += 18
    for status, name in (("held", "held"), ("sold", "sold"), ("blocked", "blocked")):
        parts.append(f'<circle class="k0 {status}" cx="{CELL}" cy="{y - 4:.0f}" r="6"/>')
        parts.append(f'<text x="{CELL + 12}" y="{y:.0f}">{name}</text>')
        y += 18
    parts.append("</svg>")
    return "".join(parts).encode()


def _seat_spacing(seats: list[asyncpg.Record]) -> float:
    """The smallest distance between neighbours in a row: what one seat's cell is drawn as."""
    spacing = math.inf
    for before, after in itertools.pairwise(seats):
        if (before["zone"], before["row_name"]) == (after["zone"], after["row_name"]):
            gap = math.hypot(after["x"] - before["x"], after["y"] - before["y"])
            if gap > 0:
                spacing = min(spacing, gap)
    return spacing if math.isfinite(spacing) else 1.0


# Orders' and tickets' seats (called by the orders' use cases)


async def order_seats(conn: Connection, order_ids: list[UUID]) -> dict[UUID, list[asyncpg.Record]]:
    """The seats of orders the caller may see (row-level security on seat_claims follows orders)."""
    rows = await conn.fetch(
        """
        select c.order_id, c.seat_id, c.ticket_type_id, ps.zone, ps.row_name, ps.number, ps.category
          from public.seat_claims c
          join public.event_seats es on es.id = c.seat_id
          join public.plan_seats ps on ps.id = es.plan_seat_id
         where c.order_id = any ($1)
         order by c.order_id, ps.zone_rank, ps.row_rank, ps.seat_rank
        """,
        order_ids,
    )
    by_order: dict[UUID, list[asyncpg.Record]] = {}
    for row in rows:
        by_order.setdefault(row["order_id"], []).append(row)
    return by_order


async def sell_seats(conn: Connection, order_id: UUID) -> bool:
    """Before paying an order (as the server): its held seats become sold. False when one was taken by
    someone else after the hold expired."""
    sold: bool = await conn.fetchval("select localplus_private.sell_seats($1)", order_id)
    return sold


async def seat_tickets(conn: Connection, order_id: UUID) -> None:
    """After paying an order: each ticket names its seat."""
    await conn.execute("select localplus_private.seat_tickets($1)", order_id)
