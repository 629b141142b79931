"""Check-in at the door (the event's editors): scans made online one at a time, scans uploaded later by
scanners that worked offline, and the list such a scanner works from.

A code's signature is checked first (codes.TicketSigner): a forged, garbled or other event's code is
INVALID without a ticket. Every scan is recorded in public.check_ins with what it was answered,
refusals included; the ticket's status and first check-in time are the server's writes."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from localplus_common.access import EDITOR, require_rank, signed_in, visible_event
from localplus_common.auth import SERVER
from localplus_common.db import Connection, Database, act_as
from localplus_common.errors import invalid_argument
from localplus_common.paging import Page, PageRequest, decode_keyset, page_of, uuid_value
from localplus_common.requests import text
from localplus_ticketing.codes import TicketSigner

ADMITTED, ALREADY_CHECKED_IN, INVALID = "admitted", "already_checked_in", "invalid"
MAX_BATCH = 1000
MAX_DEVICE_ID = 100
# A scanner downloads the whole list in pages of this many tickets (also the default).
MAX_LIST_PAGE = 1000
# How far ahead of the server's clock a scanner's may run before its scan times are refused.
CLOCK_SKEW = timedelta(minutes=5)
CHECK_IN_LIST_KEYSET = {"id": uuid_value}

# Admits a ticket once: of scans at the same moment, the first to lock the row changes it; the others
# wait for it to commit, find the ticket no longer valid, and change nothing.
ADMIT = """
update public.tickets set status = 'checked_in', checked_in_at = now()
 where id = $1 and event_id = $2 and status = 'valid'
returning *
"""

# One offline scan, as the scanner describes it: ticket, device, scan time.
ScanKey = tuple[UUID, str, datetime]


@dataclass(frozen=True)
class OfflineScan:
    code: str
    scanned_at: datetime
    device_id: str


@dataclass(frozen=True)
class CheckIn:
    """What a scan was answered."""

    result: str  # ADMITTED, ALREADY_CHECKED_IN or INVALID
    # The ticket as it stands after the scan; None unless the code names one of this event's tickets.
    ticket: asyncpg.Record | None
    # When the ticket was first checked in, for a scan that did not admit it.
    first_checked_in_at: datetime | None


@dataclass(frozen=True)
class CheckInList:
    event_id: UUID
    tickets: Page[asyncpg.Record]
    public_key: str
    generated_at: datetime


async def check_in(db: Database, signer: TicketSigner, event_id: UUID, code: str) -> CheckIn:
    """Scan a ticket at the door now: the first scan of a valid ticket admits it, later ones answer when
    that was; void (refunded) tickets and codes that are not this event's are INVALID."""
    identity = signed_in()
    if not code:
        raise invalid_argument("code", "code is required")
    ticket_id = _ticket_of(signer, code, event_id)

    async def scan(conn: Connection) -> CheckIn:
        await _at_the_door(conn, event_id)
        await act_as(conn, SERVER)
        answer = CheckIn(INVALID, None, None)
        if ticket_id is not None:
            admitted = await conn.fetchrow(ADMIT, ticket_id, event_id)
            if admitted is not None:
                answer = CheckIn(ADMITTED, admitted, None)
            else:
                ticket = await conn.fetchrow(
                    "select * from public.tickets where id = $1 and event_id = $2", ticket_id, event_id
                )
                if ticket is not None:
                    answer = _answer(ALREADY_CHECKED_IN if ticket["status"] == "checked_in" else INVALID, ticket)
        await conn.execute(
            "insert into public.check_ins (event_id, ticket_id, result, scanned_at, scanned_by) "
            "values ($1, $2, $3, now(), $4)",
            event_id,
            answer.ticket["id"] if answer.ticket else None,
            answer.result,
            identity.user_id,
        )
        return answer

    return await db.run(scan, event_id=event_id)


async def upload_scans(db: Database, signer: TicketSigner, event_id: UUID, scans: list[OfflineScan]) -> list[CheckIn]:
    """Record scans made offline, in any order, and answer each in request order. A ticket's earliest
    scan is its check-in, also when it is earlier than one recorded online (the ticket's
    checked_in_at moves back to it); every other scan of it is ALREADY_CHECKED_IN. A scan uploaded
    again (same ticket, device and scan time) is recorded once and answered as before."""
    identity = signed_in()
    _check_batch(scans)
    named = [_ticket_of(signer, scan.code, event_id) for scan in scans]

    async def upload(conn: Connection) -> list[CheckIn]:
        event = await _at_the_door(conn, event_id)
        _check_times(scans, event["created_at"])
        await act_as(conn, SERVER)
        # Locked in id order, so uploads and online scans of the same tickets run one after another.
        rows = await conn.fetch(
            "select * from public.tickets where id = any($1) and event_id = $2 order by id for update",
            sorted({ticket_id for ticket_id in named if ticket_id is not None}),
            event_id,
        )
        tickets = {row["id"]: row for row in rows}
        keys: list[ScanKey | None] = [
            (ticket_id, scan.device_id, scan.scanned_at) if ticket_id is not None and ticket_id in tickets else None
            for ticket_id, scan in zip(named, scans, strict=True)
        ]
        known = [key for key in keys if key is not None]
        recorded = await _recorded(conn, event_id, known)
        results, moved = _decide(known, tickets, recorded)
        if moved:
            changed = await conn.fetch(
                "update public.tickets t set status = 'checked_in', checked_in_at = v.at "
                "from unnest($1::uuid[], $2::timestamptz[]) as v (id, at) where t.id = v.id returning t.*",
                list(moved),
                list(moved.values()),
            )
            tickets |= {row["id"]: row for row in changed}
        # Each new scan once (at its first place in the request), and every scan without a ticket (the
        # unique key drops repeats of those).
        first_place = {key: i for i, key in reversed(list(enumerate(keys)))}
        new = [i for i, key in enumerate(keys) if key is None or (key not in recorded and first_place[key] == i)]
        await conn.execute(
            """
            insert into public.check_ins (event_id, ticket_id, result, scanned_at, device_id, scanned_by, offline)
            select $1, s.ticket_id, s.result, s.scanned_at, s.device_id, $2, true
              from unnest($3::uuid[], $4::text[], $5::timestamptz[], $6::text[])
                   as s (ticket_id, result, scanned_at, device_id)
             -- In key order: two uploads sharing scans without a ticket wait for each other, never deadlock.
             order by s.ticket_id, s.device_id, s.scanned_at
            on conflict (event_id, ticket_id, device_id, scanned_at) where offline do nothing
            """,
            event_id,
            identity.user_id,
            [key[0] if (key := keys[i]) else None for i in new],
            [results[key] if (key := keys[i]) else INVALID for i in new],
            [scans[i].scanned_at for i in new],
            [scans[i].device_id for i in new],
        )
        return [CheckIn(INVALID, None, None) if key is None else _answer(results[key], tickets[key[0]]) for key in keys]

    return await db.run(upload, event_id=event_id)


async def check_in_list(db: Database, signer: TicketSigner, event_id: UUID, page: PageRequest) -> CheckInList:
    """Every ticket issued for the event (void ones too), by id, with the key that verifies their
    codes: what a scanner needs to admit people offline."""
    signed_in()
    after = decode_keyset(page, CHECK_IN_LIST_KEYSET)
    generated_at = datetime.now(UTC)

    async def read(conn: Connection) -> Page[asyncpg.Record]:
        await _at_the_door(conn, event_id)
        rows = await conn.fetch(
            """
            select id, status, checked_in_at, ticket_type_id, seat_zone, seat_row, seat_number from public.tickets
             where event_id = $1 and ($3::uuid is null or id > $3)
             order by id
             limit $2
            """,
            event_id,
            page.size + 1,
            after[0] if after else None,
        )
        return page_of(rows, page, CHECK_IN_LIST_KEYSET)

    return CheckInList(event_id, await db.run(read, event_id=event_id), signer.public_key_b64, generated_at)


def _decide(
    keys: list[ScanKey], tickets: dict[UUID, asyncpg.Record], recorded: set[ScanKey]
) -> tuple[dict[ScanKey, str], dict[UUID, datetime]]:
    """Each scan's result, and the tickets whose first check-in becomes a scan of this upload, with that
    scan's time. `recorded`: the scans among `keys` that were uploaded before."""
    by_ticket: dict[UUID, list[ScanKey]] = {}
    for key in dict.fromkeys(keys):  # once each, in request order
        by_ticket.setdefault(key[0], []).append(key)
    results: dict[ScanKey, str] = {}
    moved: dict[UUID, datetime] = {}
    for ticket_id, ticket_scans in by_ticket.items():
        ticket = tickets[ticket_id]
        if ticket["status"] == "void":
            results |= dict.fromkeys(ticket_scans, INVALID)
            continue
        results |= dict.fromkeys(ticket_scans, ALREADY_CHECKED_IN)
        first = ticket["checked_in_at"] if ticket["status"] == "checked_in" else None
        earliest = min((key for key in ticket_scans if key not in recorded), key=lambda key: key[2], default=None)
        if earliest is not None and (first is None or earliest[2] < first):
            results[earliest] = ADMITTED
            moved[ticket_id] = earliest[2]
        else:
            # An upload repeated: the scan that checked the ticket in is still the one that admitted it.
            again = next((key for key in ticket_scans if key in recorded and key[2] == first), None)
            if again is not None:
                results[again] = ADMITTED
    return results, moved


async def _recorded(conn: Connection, event_id: UUID, keys: list[ScanKey]) -> set[ScanKey]:
    """Which of these offline scans were uploaded before."""
    rows = await conn.fetch(
        """
        select c.ticket_id, c.device_id, c.scanned_at from public.check_ins c
          join unnest($2::uuid[], $3::text[], $4::timestamptz[]) as s (ticket_id, device_id, scanned_at)
            using (ticket_id, device_id, scanned_at)
         where c.event_id = $1 and c.offline
        """,
        event_id,
        [key[0] for key in keys],
        [key[1] for key in keys],
        [key[2] for key in keys],
    )
    return {(row["ticket_id"], row["device_id"], row["scanned_at"]) for row in rows}


async def _at_the_door(conn: Connection, event_id: UUID) -> asyncpg.Record:
    event = await visible_event(conn, event_id)
    require_rank(event, EDITOR, "check tickets in at")
    return event


def _ticket_of(signer: TicketSigner, code: str, event_id: UUID) -> UUID | None:
    """The ticket a code names, if it is a code this service signed for this event."""
    scanned = signer.verify(code)
    return scanned.ticket_id if scanned is not None and scanned.event_id == event_id else None


def _answer(result: str, ticket: asyncpg.Record) -> CheckIn:
    return CheckIn(result, ticket, ticket["checked_in_at"] if result == ALREADY_CHECKED_IN else None)


def _check_batch(scans: list[OfflineScan]) -> None:
    if not 1 <= len(scans) <= MAX_BATCH:
        raise invalid_argument("check_ins", f"between 1 and {MAX_BATCH} scans per upload")
    for index, scan in enumerate(scans):
        if not scan.code:
            raise invalid_argument(f"check_ins[{index}].code", "code is required")
        text(f"check_ins[{index}].device_id", scan.device_id)
        if len(scan.device_id) > MAX_DEVICE_ID:
            raise invalid_argument(
                f"check_ins[{index}].device_id", f"device_id must be at most {MAX_DEVICE_ID} characters"
            )


def _check_times(scans: list[OfflineScan], event_created_at: datetime) -> None:
    """Scan times a scanner's clock can have given: not before the event existed, and not ahead of
    the server's clock by more than CLOCK_SKEW."""
    latest = datetime.now(UTC) + CLOCK_SKEW
    for index, scan in enumerate(scans):
        if not event_created_at <= scan.scanned_at <= latest:
            raise invalid_argument(
                f"check_ins[{index}].scanned_at",
                "scanned_at must be after the event was created and at most "
                f"{CLOCK_SKEW.seconds // 60} minutes ahead of the server's clock: is the scanner's clock right?",
            )
