"""E-tickets and the door, through the JSON gateway: a ticket's QR code as SVG and PNG, scans at the
door (the first admits, later ones say when that was; forged, other events' and refunded tickets are
refused), concurrent scans of one ticket admitting it once, offline scanners uploading scans in any
order (the earliest wins, re-uploads change nothing), the check-in list a scanner works from offline,
and attendance in the event's stats."""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import asyncpg
import grpc
import httpx
import segno
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from localplus.ticketing.v1 import ticketing_pb2, ticketing_pb2_grpc
from localplus_dev.stack import Stack
from localplus_ticketing.check_ins import ADMIT
from localplus_ticketing.tickets import QR_BORDER, QR_ERROR, QR_SCALE
from tests.support import User, create_event, create_user, iso, lock_waiters
from tests.ticketing_support import checkout, event_with_tickets, my_tickets, reserve

Json = dict[str, Any]
ADMITTED = "CHECK_IN_RESULT_ADMITTED"
ALREADY = "CHECK_IN_RESULT_ALREADY_CHECKED_IN"
INVALID = "CHECK_IN_RESULT_INVALID"


async def free_tickets(api: httpx.AsyncClient, owner: User, buyer: User, quantity: int = 1) -> tuple[Json, list[Json]]:
    """A published event of `owner`'s with a free ticket type, and `quantity` tickets `buyer` got for it."""
    event, ticket_type = await event_with_tickets(api, owner, price_minor=0, inventory=50, max_per_order=20)
    order = (await reserve(api, buyer, ticket_type["id"], quantity=quantity)).json()
    paid = await checkout(api, buyer, order["id"])
    assert paid.json()["order"]["status"] == "ORDER_STATUS_PAID", paid.text
    return event, [t for t in await my_tickets(api, buyer) if t["order_id"] == order["id"]]


async def scan(api: httpx.AsyncClient, who: User | None, event_id: str, code: str) -> httpx.Response:
    headers = who.headers if who else {}
    return await api.post("/api/check-ins", json={"event_id": event_id, "code": code}, headers=headers)


async def upload(api: httpx.AsyncClient, who: User, event_id: str, scans: list[Json]) -> httpx.Response:
    body = {"event_id": event_id, "check_ins": scans}
    return await api.post("/api/check-ins:batchCreate", json=body, headers=who.headers)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def scans_of(db: asyncpg.Pool, event_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "select ticket_id, result, scanned_at, device_id, offline from public.check_ins "
        "where event_id = $1 order by id",
        uuid.UUID(event_id),
    )


# QR codes


def qr_matrix(code: str) -> list[list[bool]]:
    """The QR symbol of `code` as dark (True) and light modules, quiet zone included."""
    symbol = segno.make_qr(code, error=QR_ERROR)
    return [[bool(module) for module in row] for row in symbol.matrix_iter(scale=1, border=QR_BORDER)]


def png_modules(png: bytes) -> list[list[bool]]:
    """The modules a 1-bit greyscale PNG (segno's) shows, one pixel sampled from each module."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = {}, 8
    idat = b""
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        chunks[kind] = data
        idat += data if kind == b"IDAT" else b""
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (1, 0) and width == height and width % QR_SCALE == 0
    raw = zlib.decompress(idat)
    stride = 1 + (width + 7) // 8
    rows: list[bytes] = []
    for y in range(height):
        line = raw[y * stride : (y + 1) * stride]
        # segno writes filter types None (the bytes are the pixels) and Up (added to the row above).
        assert line[0] in (0, 2), line[0]
        pixels = line[1:] if line[0] == 0 else bytes((a + b) % 256 for a, b in zip(line[1:], rows[-1], strict=True))
        rows.append(pixels)
    # A set bit is white in greyscale.
    return [
        [not rows[y][x // 8] >> (7 - x % 8) & 1 for x in range(QR_SCALE // 2, width, QR_SCALE)]
        for y in range(QR_SCALE // 2, height, QR_SCALE)
    ]


def svg_modules(svg: bytes) -> list[list[bool]]:
    """The modules segno's SVG path draws: runs of `h` (dark) between relative moves, in module units."""
    root = ElementTree.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    size = int(root.attrib["width"]) // QR_SCALE
    assert int(root.attrib["height"]) == size * QR_SCALE
    paths = root.findall("{http://www.w3.org/2000/svg}path")
    assert len(paths) == 1 and paths[0].attrib["transform"] == f"scale({QR_SCALE})"
    modules = [[False] * size for _ in range(size)]
    x = y = 0.0
    tokens = paths[0].attrib["d"].replace("M", " M ").replace("m", " m ").replace("h", " h ").split()
    index = 0
    while index < len(tokens):
        op = tokens[index]
        if op == "h":
            run = int(tokens[index + 1])
            for column in range(int(x), int(x) + run):
                modules[int(y)][column] = True
            x += run
            index += 2
        else:
            dx, dy = float(tokens[index + 1]), float(tokens[index + 2])
            x, y = (dx, dy) if op == "M" else (x + dx, y + dy)
            index += 3
    return modules


async def test_a_ticket_qr_code_as_svg_and_png(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, user: User, other_user: User
) -> None:
    owner, buyer = user, await create_user(db)
    _, (ticket,) = await free_tickets(api, owner, buyer)
    expected = qr_matrix(ticket["code"])

    svg = await api.get(f"/api/tickets/{ticket['id']}/qr.svg", headers=buyer.headers)
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg_modules(svg.content) == expected

    png = await api.get(f"/api/tickets/{ticket['id']}/qr.png", headers=buyer.headers)
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"
    assert png_modules(png.content) == expected

    # The event's owner may see it too (the door); nobody else, and nobody anonymously.
    assert (await api.get(f"/api/tickets/{ticket['id']}/qr.png", headers=owner.headers)).status_code == 200
    assert (await api.get(f"/api/tickets/{ticket['id']}/qr.svg", headers=other_user.headers)).status_code == 404
    assert (await api.get(f"/api/tickets/{ticket['id']}/qr.svg")).status_code == 401
    assert (await api.get(f"/api/tickets/{uuid.uuid4()}/qr.png", headers=buyer.headers)).status_code == 404
    assert (await api.get("/api/tickets/nope/qr.png", headers=buyer.headers)).status_code == 400

    # Native gRPC callers have no path to choose with: SVG.
    async with grpc.aio.insecure_channel(stack.gateway_url.removeprefix("http://")) as channel:
        body = await ticketing_pb2_grpc.TicketingServiceStub(channel).GetTicketQrCode(
            ticketing_pb2.GetTicketQrCodeRequest(id=ticket["id"]), metadata=buyer.metadata
        )
    assert body.content_type == "image/svg+xml" and body.data == svg.content


# Scans at the door


async def test_the_first_scan_admits_and_a_second_says_when(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    owner, buyer = user, await create_user(db)
    event, (ticket,) = await free_tickets(api, owner, buyer)

    first = await scan(api, owner, event["id"], ticket["code"])
    assert first.status_code == 200, first.text
    admitted = first.json()
    assert admitted["result"] == ADMITTED and "first_checked_in_at" not in admitted
    assert admitted["ticket"]["id"] == ticket["id"] and admitted["ticket"]["status"] == "TICKET_STATUS_CHECKED_IN"
    checked_in_at = admitted["ticket"]["checked_in_at"]

    second = (await scan(api, owner, event["id"], ticket["code"])).json()
    assert second["result"] == ALREADY
    assert second["first_checked_in_at"] == checked_in_at == second["ticket"]["checked_in_at"]
    held = (await api.get(f"/api/tickets/{ticket['id']}", headers=buyer.headers)).json()
    assert held["status"] == "TICKET_STATUS_CHECKED_IN" and held["checked_in_at"] == checked_in_at

    recorded = await scans_of(db, event["id"])
    assert [(r["ticket_id"], r["result"], r["offline"]) for r in recorded] == [
        (uuid.UUID(ticket["id"]), "admitted", False),
        (uuid.UUID(ticket["id"]), "already_checked_in", False),
    ]


async def test_who_may_scan(api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User) -> None:
    owner, stranger = user, other_user
    buyer, editor, viewer = [await create_user(db) for _ in range(3)]
    event, (ticket, other) = await free_tickets(api, owner, buyer, quantity=2)
    for person, role in ((editor, "EVENT_ROLE_EDITOR"), (viewer, "EVENT_ROLE_VIEWER")):
        granted = await api.post(
            f"/api/events/{event['id']}/permissions",
            json={"user_id": str(person.id), "role": role},
            headers=owner.headers,
        )
        assert granted.status_code == 200, granted.text
    offline = [{"code": ticket["code"], "scanned_at": iso(datetime.now(UTC))}]
    check_in_list = f"/api/events/{event['id']}/check-in-list"

    # The buyer, a viewer and a stranger see the (public) event but may not work its door.
    for person in (buyer, viewer, stranger):
        assert (await scan(api, person, event["id"], ticket["code"])).status_code == 403
        assert (await upload(api, person, event["id"], offline)).status_code == 403
        assert (await api.get(check_in_list, headers=person.headers)).status_code == 403
    assert (await scan(api, None, event["id"], ticket["code"])).status_code == 401
    assert (await api.get(check_in_list)).status_code == 401
    # An event the caller cannot see, or none at all: 404.
    draft = await create_event(api, owner)
    assert (await scan(api, stranger, draft["id"], ticket["code"])).status_code == 404
    assert (await api.get(f"/api/events/{draft['id']}/check-in-list", headers=stranger.headers)).status_code == 404
    assert (await scan(api, owner, str(uuid.uuid4()), ticket["code"])).status_code == 404
    assert (await scan(api, owner, "nope", ticket["code"])).status_code == 400
    assert (await scan(api, owner, event["id"], "")).status_code == 400
    # Refusals change nothing and record nothing; an editor admits.
    assert await scans_of(db, event["id"]) == []
    assert (await scan(api, editor, event["id"], other["code"])).json()["result"] == ADMITTED


async def test_forged_garbled_and_other_events_codes_are_invalid(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    owner, buyer = user, await create_user(db)
    event, (ticket,) = await free_tickets(api, owner, buyer)
    elsewhere, (theirs,) = await free_tickets(api, owner, buyer)
    prefix, payload, signature = ticket["code"].split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    # The other event's signed payload under this ticket's signature, and the reverse.
    _, other_payload, other_signature = theirs["code"].split(".")
    codes = {
        "forged signature": f"{prefix}.{payload}.{flipped}",
        "swapped payload": f"{prefix}.{other_payload}.{signature}",
        "garbled": "LP1.%%%.***",
        "not ours": "https://example.test/ticket/123",
        "too long": ticket["code"] + "A" * 500,
        "another event's ticket": theirs["code"],
        "unissued": f"{prefix}.{payload}.{other_signature}",
    }
    for name, code in codes.items():
        response = await scan(api, owner, event["id"], code)
        assert response.status_code == 200, (name, response.text)
        assert response.json() == {"result": INVALID}, name
    # Each refusal is recorded, without a ticket; the real tickets are untouched.
    recorded = await scans_of(db, event["id"])
    assert [(r["ticket_id"], r["result"]) for r in recorded] == [(None, "invalid")] * len(codes)
    assert (await scan(api, owner, event["id"], ticket["code"])).json()["result"] == ADMITTED
    assert (await scan(api, owner, elsewhere["id"], theirs["code"])).json()["result"] == ADMITTED


async def test_a_refunded_ticket_is_invalid(api: httpx.AsyncClient, db: asyncpg.Pool, user: User) -> None:
    owner, buyer = user, await create_user(db)
    event, (ticket, kept) = await free_tickets(api, owner, buyer, quantity=2)
    refunded = await api.post(
        f"/api/orders/{ticket['order_id']}:refund", json={"ticket_ids": [ticket["id"]]}, headers=owner.headers
    )
    assert refunded.status_code == 200, refunded.text

    answer = (await scan(api, owner, event["id"], ticket["code"])).json()
    assert answer["result"] == INVALID and answer["ticket"]["status"] == "TICKET_STATUS_VOID"
    assert (await scan(api, owner, event["id"], kept["code"])).json()["result"] == ADMITTED
    recorded = await scans_of(db, event["id"])
    assert [(r["ticket_id"], r["result"]) for r in recorded] == [
        (uuid.UUID(ticket["id"]), "invalid"),
        (uuid.UUID(kept["id"]), "admitted"),
    ]


# Scanners at the same moment

SCANNERS = 20


async def test_the_race_a_read_then_write_check_in_would_lose(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, user: User
) -> None:
    """Why the admission is one conditional UPDATE: scanners that each read the ticket as valid and then
    mark it checked in all admit it. The same race run with the service's ADMIT statement admits once."""
    event, (naive_ticket, real_ticket) = await free_tickets(api, user, await create_user(db), quantity=2)
    event_id = uuid.UUID(event["id"])
    connections = [await asyncpg.connect(stack.database_url) for _ in range(SCANNERS)]
    try:
        barrier = asyncio.Barrier(SCANNERS)

        async def read_then_write(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                status = await conn.fetchval(
                    "select status from public.tickets where id = $1", uuid.UUID(naive_ticket["id"])
                )
                await barrier.wait()
                if status != "valid":
                    return False
                await conn.execute(
                    "update public.tickets set status = 'checked_in', checked_in_at = now() where id = $1",
                    uuid.UUID(naive_ticket["id"]),
                )
                return True

        naive = await asyncio.gather(*(read_then_write(conn) for conn in connections))
        assert sum(naive) > 1, "the race should show: every scanner read the ticket as valid"

        barrier = asyncio.Barrier(SCANNERS)

        async def admit(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                await barrier.wait()
                return await conn.fetchrow(ADMIT, uuid.UUID(real_ticket["id"]), event_id) is not None

        assert sum(await asyncio.gather(*(admit(conn) for conn in connections))) == 1
    finally:
        for conn in connections:
            await conn.close()


async def test_scanners_at_the_same_moment_admit_a_ticket_once(
    api: httpx.AsyncClient, stack: Stack, db: asyncpg.Pool, user: User
) -> None:
    """20 scans of one ticket at once through the gateway. To have them meet for certain, the test holds
    the ticket's row lock until several of them wait for it, as a slow first scan would."""
    owner, buyer = user, await create_user(db)
    event, (ticket,) = await free_tickets(api, owner, buyer)
    blocker = await asyncpg.connect(stack.database_url)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("select 1 from public.tickets where id = $1 for update", uuid.UUID(ticket["id"]))
        scans = [asyncio.create_task(scan(api, owner, event["id"], ticket["code"])) for _ in range(SCANNERS)]
        waiting = await lock_waiters(db, query_like="%tickets%", at_least=5)
        assert waiting >= 2, "the scans should have met at the ticket"
        await transaction.commit()
        responses = await asyncio.gather(*scans)
    finally:
        await blocker.close()
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    answers = [r.json() for r in responses]
    admitted = [a for a in answers if a["result"] == ADMITTED]
    assert len(admitted) == 1, [a["result"] for a in answers]
    first = admitted[0]["ticket"]["checked_in_at"]
    assert all(a["result"] == ALREADY and a["first_checked_in_at"] == first for a in answers if a is not admitted[0])
    recorded = await scans_of(db, event["id"])
    assert sorted(r["result"] for r in recorded) == ["admitted"] + ["already_checked_in"] * (SCANNERS - 1)
    counted = await db.fetchval(
        "select checked_in from public.event_counters where event_id = $1", uuid.UUID(event["id"])
    )
    assert counted == 1


# Offline scanners


async def test_offline_scans_in_any_order_the_earliest_wins(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    owner, buyer = user, await create_user(db)
    event, (a, b, c, void) = await free_tickets(api, owner, buyer, quantity=4)
    assert (
        await api.post(
            f"/api/orders/{void['order_id']}:refund", json={"ticket_ids": [void["id"]]}, headers=owner.headers
        )
    ).status_code == 200
    created = parse_time(event["created_at"])
    # b was scanned online; an offline scanner had scanned it before that.
    online = (await scan(api, owner, event["id"], b["code"])).json()
    online_at = parse_time(online["ticket"]["checked_in_at"])
    t0 = created + (online_at - created) / 4
    t1, t2, t3 = t0 + timedelta(milliseconds=1), t0 + timedelta(milliseconds=2), t0 + timedelta(milliseconds=3)

    scans = [
        {"code": a["code"], "scanned_at": iso(t3), "device_id": "gate-1"},
        {"code": a["code"], "scanned_at": iso(t1), "device_id": "gate-2"},  # a's earliest
        {"code": b["code"], "scanned_at": iso(t2), "device_id": "gate-2"},  # before b's online scan
        {"code": "LP1.forged.forged", "scanned_at": iso(t2), "device_id": "gate-1"},
        {"code": c["code"], "scanned_at": iso(online_at + timedelta(seconds=1)), "device_id": "gate-1"},
        {"code": void["code"], "scanned_at": iso(t2), "device_id": "gate-1"},
        {"code": a["code"], "scanned_at": iso(t2), "device_id": "gate-1"},
        {"code": c["code"], "scanned_at": iso(online_at + timedelta(seconds=1)), "device_id": "gate-1"},  # repeated
    ]
    response = await upload(api, owner, event["id"], scans)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["result"] for r in results] == [
        ALREADY,
        ADMITTED,
        ADMITTED,
        INVALID,
        ADMITTED,
        INVALID,
        ALREADY,
        ADMITTED,
    ]
    assert [r.get("ticket", {}).get("id") for r in results] == [
        a["id"], a["id"], b["id"], None, c["id"], void["id"], a["id"], c["id"]
    ]  # fmt: skip
    assert parse_time(results[1]["ticket"]["checked_in_at"]) == t1
    assert [parse_time(results[i]["first_checked_in_at"]) for i in (0, 6)] == [t1, t1]
    assert parse_time(results[2]["ticket"]["checked_in_at"]) == t2  # earlier than the online scan
    held = {t["id"]: t for t in await my_tickets(api, buyer)}
    assert parse_time(held[a["id"]]["checked_in_at"]) == t1 and parse_time(held[b["id"]]["checked_in_at"]) == t2
    assert held[void["id"]]["status"] == "TICKET_STATUS_VOID"
    # Nothing is lost: every scan is recorded, the repeated one once.
    recorded = await scans_of(db, event["id"])
    assert len(recorded) == 1 + len(scans) - 1
    assert sum(r["result"] == "admitted" for r in recorded if r["offline"]) == 3

    # The scanner never got the answer and uploads again: the same answers, nothing changes.
    again = await upload(api, owner, event["id"], scans)
    assert again.status_code == 200, again.text
    assert again.json() == response.json()
    assert await scans_of(db, event["id"]) == recorded
    assert {t["id"]: t for t in await my_tickets(api, buyer)} == held

    # An online scan now finds them checked in, at the earliest time.
    later = (await scan(api, owner, event["id"], a["code"])).json()
    assert later["result"] == ALREADY and parse_time(later["first_checked_in_at"]) == t1
    stats = await api.get(f"/api/events/{event['id']}/stats", headers=owner.headers)
    assert stats.json()["checked_in"] == 3


async def test_offline_uploads_are_checked(api: httpx.AsyncClient, db: asyncpg.Pool, user: User) -> None:
    owner, buyer = user, await create_user(db)
    event, (ticket,) = await free_tickets(api, owner, buyer)
    now = datetime.now(UTC)

    async def refused(scans: list[Json], field: str) -> None:
        response = await upload(api, owner, event["id"], scans)
        assert response.status_code == 400, response.text
        assert field in response.text, response.text

    one = {"code": ticket["code"], "scanned_at": iso(now)}
    await refused([one, one | {"scanned_at": iso(now + timedelta(minutes=10))}], "check_ins[1].scanned_at")
    await refused(
        [one | {"scanned_at": iso(parse_time(event["created_at"]) - timedelta(days=1))}], "check_ins[0].scanned_at"
    )
    await refused([{"code": ticket["code"]}], "check_ins[0].scanned_at")
    await refused([one | {"code": ""}], "check_ins[0].code")
    await refused([one | {"device_id": "x" * 101}], "check_ins[0].device_id")
    await refused([], "check_ins")
    await refused([one] * 1001, "check_ins")
    assert await scans_of(db, event["id"]) == []
    # A scanner's clock a little ahead is fine.
    ahead = await upload(api, owner, event["id"], [one | {"scanned_at": iso(now + timedelta(minutes=2))}])
    assert ahead.status_code == 200, ahead.text
    assert ahead.json()["results"][0]["result"] == ADMITTED


# The check-in list


async def test_a_scanner_works_offline_from_the_check_in_list(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    owner, buyer = user, await create_user(db)
    event, tickets = await free_tickets(api, owner, buyer, quantity=3)
    assert (await scan(api, owner, event["id"], tickets[0]["code"])).json()["result"] == ADMITTED

    listed = await api.get(f"/api/events/{event['id']}/check-in-list", headers=owner.headers)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["event_id"] == event["id"] and body["next_page_token"] == ""
    assert abs(parse_time(body["generated_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    entries = {entry["ticket_id"]: entry for entry in body["tickets"]}
    assert list(entries) == sorted(t["id"] for t in tickets)
    assert entries[tickets[0]["id"]]["status"] == "TICKET_STATUS_CHECKED_IN"
    assert entries[tickets[0]["id"]]["checked_in_at"]
    assert entries[tickets[1]["id"]] == {
        "ticket_id": tickets[1]["id"],
        "status": "TICKET_STATUS_VALID",
        "ticket_type_id": tickets[1]["ticket_type_id"],
    }

    # Offline: verify a code with the public key alone, then look its ticket up in the list.
    key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(body["public_key"] + "=="))

    def verify(code: str) -> str | None:
        """The ticket id a code carries, if the key signed it for this event."""
        _, payload_b64, signature_b64 = code.split(".")
        payload = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
        try:
            key.verify(base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4)), payload)
        except InvalidSignature:
            return None
        return str(uuid.UUID(bytes=payload[:16])) if str(uuid.UUID(bytes=payload[16:])) == event["id"] else None

    assert verify(tickets[1]["code"]) == tickets[1]["id"]
    assert entries[verify(tickets[1]["code"]) or ""]["status"] == "TICKET_STATUS_VALID"
    assert verify(tickets[0]["code"]) == tickets[0]["id"]  # valid, but the list says: already in
    prefix, payload, signature = tickets[2]["code"].split(".")
    assert verify(f"{prefix}.{payload}.{signature[::-1]}") is None

    # Keyset pages by ticket id.
    seen, token = [], ""
    while True:
        page = await api.get(
            f"/api/events/{event['id']}/check-in-list",
            params={"page_size": 2, "page_token": token},
            headers=owner.headers,
        )
        assert page.status_code == 200, page.text
        seen += [entry["ticket_id"] for entry in page.json()["tickets"]]
        token = page.json()["next_page_token"]
        if not token:
            break
    assert seen == list(entries)
    for size in (-1, 1001):
        response = await api.get(
            f"/api/events/{event['id']}/check-in-list", params={"page_size": size}, headers=owner.headers
        )
        assert response.status_code == 400, response.text


async def test_check_ins_count_in_the_event_stats(api: httpx.AsyncClient, db: asyncpg.Pool, user: User) -> None:
    owner, buyer = user, await create_user(db)
    event, (ticket, refunded) = await free_tickets(api, owner, buyer, quantity=2)
    stats = await api.get(f"/api/events/{event['id']}/stats", headers=owner.headers)
    assert stats.status_code == 200 and stats.json()["checked_in"] == 0
    for t in (ticket, refunded):
        assert (await scan(api, owner, event["id"], t["code"])).json()["result"] == ADMITTED
    assert (await scan(api, owner, event["id"], ticket["code"])).json()["result"] == ALREADY
    assert (await api.get(f"/api/events/{event['id']}/stats", headers=owner.headers)).json()["checked_in"] == 2
    # A ticket refunded after the door no longer counts.
    assert (
        await api.post(
            f"/api/orders/{refunded['order_id']}:refund", json={"ticket_ids": [refunded["id"]]}, headers=owner.headers
        )
    ).status_code == 200
    assert (await api.get(f"/api/events/{event['id']}/stats", headers=owner.headers)).json()["checked_in"] == 1
