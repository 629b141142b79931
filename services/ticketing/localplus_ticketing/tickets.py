"""Issued tickets, as their holders (and the event's editors) read them, and their QR codes."""

import html
import io
import re
from uuid import UUID

import asyncpg
import segno

from localplus_common.access import signed_in
from localplus_common.db import Connection, Database
from localplus_common.errors import not_found
from localplus_common.paging import Page, PageRequest, decode_keyset, page_of, time_value, uuid_value

MY_TICKETS_KEYSET = {"created_at": time_value, "id": uuid_value}
# QR image formats: segno's `kind` -> content type.
QR_CONTENT_TYPES = {"svg": "image/svg+xml", "png": "image/png"}
# Error correction M (15% of the symbol may be lost: a scratched screen), 8 pixels a module, and the
# four-module quiet zone the QR standard asks for.
QR_ERROR, QR_SCALE, QR_BORDER = "m", 8, 4


async def list_my_tickets(db: Database, page: PageRequest) -> Page[asyncpg.Record]:
    """The caller's tickets, in the order they were issued."""
    identity = signed_in()
    after = decode_keyset(page, MY_TICKETS_KEYSET)
    rows = await db.run(
        lambda conn: conn.fetch(
            """
            select * from public.tickets
             where holder_id = $1 and ($3::timestamptz is null or (created_at, id) > ($3, $4))
             order by created_at, id
             limit $2
            """,
            identity.user_id,
            page.size + 1,
            *(after or (None, None)),
        )
    )
    return page_of(rows, page, MY_TICKETS_KEYSET)


async def get_ticket(db: Database, ticket_id: UUID) -> asyncpg.Record:
    """A ticket its holder, or an editor of its event, may read (row-level security); 404 otherwise."""
    signed_in()

    async def get(conn: Connection) -> asyncpg.Record:
        row = await conn.fetchrow("select * from public.tickets where id = $1", ticket_id)
        if row is None:
            raise not_found("ticket not found")
        return row

    return await db.run(get)


async def ticket_qr_code(db: Database, ticket_id: UUID, kind: str) -> tuple[str, bytes]:
    """The ticket's code as a QR image (`kind` svg or png): its content type and bytes."""
    ticket = await get_ticket(db, ticket_id)
    image = io.BytesIO()
    segno.make_qr(ticket["code"], error=QR_ERROR).save(image, kind=kind, scale=QR_SCALE, border=QR_BORDER)
    if kind == "svg" and ticket["seat_number"] is not None:
        label = f"{ticket['seat_zone']} · Row {ticket['seat_row']} · Seat {ticket['seat_number']}"
        return QR_CONTENT_TYPES[kind], _labelled(image.getvalue(), label)
    return QR_CONTENT_TYPES[kind], image.getvalue()


SVG_SIZE = re.compile(rb'<svg([^>]*?) width="(\d+)" height="(\d+)"')
LABEL_HEIGHT = 28


def _labelled(svg: bytes, label: str) -> bytes:
    """A seated ticket's QR image with its seat written under the code, readable at the door."""
    found = SVG_SIZE.search(svg)
    assert found is not None, "segno writes the SVG's size"
    width, height = int(found[2]), int(found[3])
    taller = found[0].replace(b'height="%d"' % height, b'height="%d"' % (height + LABEL_HEIGHT))
    text = (
        f'<text x="{width / 2:.0f}" y="{height + LABEL_HEIGHT / 2:.0f}" text-anchor="middle" '
        f'font-family="sans-serif" font-size="16">{html.escape(label)}</text></svg>'
    )
    return svg.replace(found[0], taller, 1).replace(b"</svg>", text.encode(), 1)
