"""Capacity stays exact under concurrency: the "going" headcount never passes capacity, the
waitlist fills in order, and freed places go to the oldest waitlisted people.

Following pretix's approach, the last test first proves the race exists (a variant of the
seat check without the event-row lock oversells) and then that the real check closes it,
with the same widened race window, in SQL on the embedded and the Supabase-shaped Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import asyncpg
import httpx
import pytest

from localplus_common.config import DEV_JWT_SECRET
from localplus_common.migrate import migrate
from localplus_dev.token import mint
from tests.databases import Server
from tests.sql_callers import as_caller
from tests.support import User, create_event, create_user, lock_waiters, registration_statuses
from tests.test_recurrence_api import occurrences, patch, weekly_event

CAPACITY = 50
REGISTRANTS = 200
CANCELLATIONS = 20


async def _many_users(db: asyncpg.Pool, count: int) -> list[User]:
    ids = [uuid.uuid4() for _ in range(count)]
    await db.executemany("insert into auth.users (id) values ($1)", [(i,) for i in ids])
    return [User(i, mint(i, DEV_JWT_SECRET)) for i in ids]


async def _statuses(db: asyncpg.Pool, event_id: str) -> Counter[str]:
    rows = await db.fetch("select status from public.event_participants where event_id = $1", uuid.UUID(event_id))
    return Counter(row["status"] for row in rows)


async def test_concurrent_registrations_fill_capacity_exactly(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner = await create_user(db)
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", capacity=CAPACITY)
    url = f"/api/events/{event['id']}/participants"
    people = await _many_users(db, REGISTRANTS)

    responses = await asyncio.gather(*(api.post(url, json={}, headers=p.headers) for p in people))

    assert [r.status_code for r in responses] == [200] * REGISTRANTS, {r.text for r in responses}
    answered = Counter(r.json()["status"] for r in responses)
    assert answered == {"PARTICIPANT_STATUS_GOING": CAPACITY, "PARTICIPANT_STATUS_WAITLISTED": REGISTRANTS - CAPACITY}
    assert await _statuses(db, event["id"]) == {"going": CAPACITY, "waitlisted": REGISTRANTS - CAPACITY}

    # Twenty going people cancel at once: exactly twenty waitlisted people move up, oldest first.
    going = [p for p, r in zip(people, responses, strict=True) if r.json()["status"] == "PARTICIPANT_STATUS_GOING"]
    queue = await db.fetch(
        "select user_id from public.event_participants where event_id = $1 and status = 'waitlisted' "
        "order by status_changed_at, user_id",
        uuid.UUID(event["id"]),
    )
    cancelled = await asyncio.gather(*(api.delete(url, headers=p.headers) for p in going[:CANCELLATIONS]))
    assert [r.status_code for r in cancelled] == [200] * CANCELLATIONS, {r.text for r in cancelled}

    assert await _statuses(db, event["id"]) == {
        "going": CAPACITY,
        "cancelled": CANCELLATIONS,
        "waitlisted": REGISTRANTS - CAPACITY - CANCELLATIONS,
    }
    promoted = await db.fetch(
        "select user_id from public.event_participants where event_id = $1 and status = 'going' "
        "and user_id = any($2::uuid[])",
        uuid.UUID(event["id"]),
        [row["user_id"] for row in queue],
    )
    assert {row["user_id"] for row in promoted} == {row["user_id"] for row in queue[:CANCELLATIONS]}


async def test_naming_a_one_off_events_only_occurrence_takes_one_of_the_events_places(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """A one-off event's one occurrence (its id is the event's) is the event: a registration naming it,
    by the API or in SQL as Supabase's REST would write it, takes one of the event's places. It was
    counted in a pool of its own, as large again, so a full event let in as many people once more."""
    owner = await create_user(db)
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", capacity=2)
    url = f"/api/events/{event['id']}/participants"
    first, second, third, fourth = await _many_users(db, 4)
    for who, body in ((first, {}), (second, {"occurrence_id": event["id"]})):
        going = await api.post(url, json=body, headers=who.headers)
        assert going.json()["status"] == "PARTICIPANT_STATUS_GOING", going.text
    naming = await api.post(url, json={"occurrence_id": event["id"]}, headers=third.headers)
    assert naming.status_code == 200, naming.text
    assert naming.json()["status"] == "PARTICIPANT_STATUS_WAITLISTED" and not naming.json().get("occurrence_id")
    async with as_caller(db, fourth.id) as conn:
        row = await conn.fetchrow(
            "insert into public.event_participants (event_id, user_id, status, guest_count, occurrence_id)"
            " values ($1, $2, 'going', 1, $1) returning status, occurrence_id",
            uuid.UUID(event["id"]),
            fourth.id,
        )
        assert row is not None and (row["status"], row["occurrence_id"]) == ("waitlisted", None)
    assert await _statuses(db, event["id"]) == {"going": 2, "waitlisted": 1}
    counters = await db.fetchrow(
        "select going, guests from public.event_counters where event_id = $1", uuid.UUID(event["id"])
    )
    assert counters is not None and (counters["going"], counters["guests"]) == (2, 0)


async def test_a_series_wide_registration_takes_a_place_in_every_occurrence(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """A recurring event's session holds its capacity, counting series-wide registrations and its own
    together (they were two pools, so a session of 3 held 3 series-wide people and 3 more of its own).
    A series-wide registration waits while any session to come is full, and places freed in one pool
    go to the other's waitlist when its own has nobody waiting."""
    owner = await create_user(db)
    event = await weekly_event(api, owner, capacity=3)
    url = f"/api/events/{event['id']}/participants"
    first, second, third, fourth, fifth, sixth, seventh = people = await _many_users(db, 7)
    session, other_session = (o["id"] for o in (await occurrences(api, event["id"]))[1:3])

    async def register(who: User, occurrence_id: str | None = None) -> str:
        body = {"occurrence_id": occurrence_id} if occurrence_id else {}
        response = await api.post(url, json=body, headers=who.headers)
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    async def cancel(who: User) -> None:
        response = await api.delete(url, headers=who.headers)
        assert response.status_code == 200, response.text

    assert [await register(first), await register(second)] == ["PARTICIPANT_STATUS_GOING"] * 2
    assert await register(third, session) == "PARTICIPANT_STATUS_GOING"
    assert await register(fourth, session) == "PARTICIPANT_STATUS_WAITLISTED"
    # The series has a place left, the session has none.
    assert await register(fifth) == "PARTICIPANT_STATUS_WAITLISTED"
    await cancel(third)  # the session's own waitlist comes first
    assert await registration_statuses(db, event["id"], people[2:5]) == ["cancelled", "going", "waitlisted"]
    await cancel(fourth)  # nobody waits for the session alone: the series-wide registration fits now
    assert await registration_statuses(db, event["id"], people[3:5]) == ["cancelled", "going"]
    assert await register(sixth, other_session) == "PARTICIPANT_STATUS_WAITLISTED"
    await cancel(first)  # a series-wide place is a place in every session
    assert await registration_statuses(db, event["id"], people[:6]) == [
        "cancelled",
        "going",
        "cancelled",
        "cancelled",
        "going",
        "going",
    ]
    # The other session is full: a session called off no longer needs the series-wide place.
    assert await register(seventh) == "PARTICIPANT_STATUS_WAITLISTED"
    called_off = await patch(api, owner, event["id"], other_session, {"status": "OCCURRENCE_STATUS_CANCELLED"})
    assert called_off.status_code == 200, called_off.text
    assert await registration_statuses(db, event["id"], [seventh]) == ["going"]


async def test_a_waitlisted_registration_cannot_move_to_another_occurrence_through_supabase_rest(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """The API refuses moving a registration between occurrences (400); SQL must too, or a waitlisted
    person jumps into another session's queue, or a cancelled-then-kept place, without its checks."""
    owner = await create_user(db)
    event = await weekly_event(api, owner, capacity=1)
    url = f"/api/events/{event['id']}/participants"
    first, second = await _many_users(db, 2)
    session, other_session = (o["id"] for o in (await occurrences(api, event["id"]))[1:3])
    for who in (first, second):
        registered = await api.post(url, json={"occurrence_id": session}, headers=who.headers)
        assert registered.status_code == 200, registered.text
    assert await registration_statuses(db, event["id"], [first, second]) == ["going", "waitlisted"]
    for status in ("waitlisted", "interested"):
        await db.execute(
            "update public.event_participants set status = $3 where event_id = $1 and user_id = $2",
            uuid.UUID(event["id"]),
            second.id,
            status,
        )
        async with as_caller(db, second.id) as conn:
            with pytest.raises(asyncpg.RaiseError, match="cancel the registration before registering for another"):
                await conn.execute(
                    "update public.event_participants set occurrence_id = $2"
                    " where event_id = $1 and user_id = auth.uid()",
                    uuid.UUID(event["id"]),
                    uuid.UUID(other_session),
                )
    # Registering again after cancelling may name another occurrence, as the API's POST does.
    assert (await api.delete(url, headers=second.headers)).status_code == 200
    again = await api.post(url, json={"occurrence_id": other_session}, headers=second.headers)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "PARTICIPANT_STATUS_GOING"


async def test_concurrent_series_and_session_registrations_never_overfill_a_session(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    owner = await create_user(db)
    event = await weekly_event(api, owner, capacity=5)
    url = f"/api/events/{event['id']}/participants"
    session = (await occurrences(api, event["id"]))[1]["id"]
    people = await _many_users(db, 20)
    bodies = [{} if i % 2 else {"occurrence_id": session} for i in range(len(people))]

    responses = await asyncio.gather(
        *(api.post(url, json=body, headers=p.headers) for p, body in zip(people, bodies, strict=True))
    )

    assert [r.status_code for r in responses] == [200] * len(people), {r.text for r in responses}
    in_session = await db.fetchval(
        "select count(*) from public.event_participants where event_id = $1 and status = 'going' "
        "and (occurrence_id is null or occurrence_id = $2)",
        uuid.UUID(event["id"]),
        uuid.UUID(session),
    )
    assert in_session == 5


async def test_guests_count_against_capacity(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner = await create_user(db)
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", capacity=3)
    url = f"/api/events/{event['id']}/participants"
    family, single = await create_user(db), await create_user(db)
    first = await api.post(url, json={"guest_count": 2}, headers=family.headers)
    assert first.json()["status"] == "PARTICIPANT_STATUS_GOING"
    second = await api.post(url, json={"guest_count": 1}, headers=single.headers)
    assert second.json()["status"] == "PARTICIPANT_STATUS_WAITLISTED"
    # A going participant cannot grow past capacity: that is refused rather than silently waitlisted.
    more = await api.put(url, json={"guest_count": 3}, headers=family.headers)
    assert more.status_code == 400
    assert "CAPACITY_EXCEEDED" in more.text


async def test_checking_people_in_keeps_their_seats(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner = await create_user(db)
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", capacity=1)
    url = f"/api/events/{event['id']}/participants"
    guest, waiting = await _many_users(db, 2)
    assert (await api.post(url, json={}, headers=guest.headers)).json()["status"] == "PARTICIPANT_STATUS_GOING"
    assert (await api.post(url, json={}, headers=waiting.headers)).json()["status"] == "PARTICIPANT_STATUS_WAITLISTED"
    checked_in = await api.put(
        url, json={"user_id": str(guest.id), "status": "PARTICIPANT_STATUS_ATTENDED"}, headers=owner.headers
    )
    assert checked_in.status_code == 200, checked_in.text
    assert await _statuses(db, event["id"]) == {"attended": 1, "waitlisted": 1}


async def test_raising_capacity_promotes_the_waitlist(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner = await create_user(db)
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", capacity=1)
    url = f"/api/events/{event['id']}/participants"
    for person in await _many_users(db, 3):
        assert (await api.post(url, json={}, headers=person.headers)).status_code == 200
    assert await _statuses(db, event["id"]) == {"going": 1, "waitlisted": 2}
    raised = await api.patch(
        f"/api/events/{event['id']}", params={"update_mask": "capacity"}, json={"capacity": 2}, headers=owner.headers
    )
    assert raised.status_code == 200, raised.text
    assert await _statuses(db, event["id"]) == {"going": 2, "waitlisted": 1}


SEAT_CHECK = "localplus_private.event_participants_before_write()"
LOCK = "from public.events where id = new.event_id for no key update;"
COUNT_END = "then 1 + old.guest_count else 0 end;"


async def _oversold(database_url: str, definition: str) -> int:
    """Register 60 people at once for 10 places with `definition` as the seat check; return going - 10."""
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(definition)
        owner = uuid.uuid4()
        await admin.execute("insert into auth.users (id) values ($1)", owner)
        event_id = await admin.fetchval(
            "insert into public.events (created_by, title, starts_at, ends_at, timezone, capacity, status) "
            "values ($1, 'race', now() + interval '1 day', now() + interval '2 days', 'UTC', 10, 'published') "
            "returning id",
            owner,
        )
        people = [uuid.uuid4() for _ in range(60)]
        await admin.executemany("insert into auth.users (id) values ($1)", [(p,) for p in people])
        pool = await asyncpg.create_pool(database_url, min_size=30, max_size=30)
        assert pool is not None
        try:
            await asyncio.gather(
                *(
                    pool.execute(
                        "insert into public.event_participants (event_id, user_id) values ($1, $2)", event_id, p
                    )
                    for p in people
                )
            )
        finally:
            await pool.close()
        going: int = await admin.fetchval(
            "select count(*) from public.event_participants where event_id = $1 and status = 'going'", event_id
        )
        return going - 10
    finally:
        await admin.close()


# The race is the same on both Postgres 15 servers, and takes seconds: the Supabase-shaped one suffices.
@pytest.mark.parametrize("server", ["embedded", "supabase15"], indirect=True)
async def test_seat_check_race_exists_without_the_lock_and_the_lock_closes_it(server: Server) -> None:
    scratch = f"race_{uuid.uuid4().hex[:8]}"
    url = await server.create_database(scratch)
    try:
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            real = await conn.fetchval("select pg_get_functiondef($1::regprocedure)", SEAT_CHECK)
        finally:
            await conn.close()
        assert LOCK in real and COUNT_END in real
        # Widen the window between counting seats and taking one, the way a slow disk or a busy CPU would.
        widened = real.replace(COUNT_END, COUNT_END + "\n  perform pg_sleep(0.02);")
        unlocked = widened.replace(LOCK, "from public.events where id = new.event_id;")

        assert await _oversold(url, unlocked) > 0, "the race did not show: this test could not catch a regression"
        assert await _oversold(url, widened) == 0
    finally:
        await server.drop_database(scratch)


REGISTER = "insert into public.event_participants (event_id, user_id) values ($1, $2)"
CANCEL = "update public.event_participants set status = 'cancelled' where event_id = $1 and user_id = $2"


async def _event_with_a_waitlist(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]:
    """A published event of one place: (its id, the person going, the person waiting, a newcomer who
    has not registered yet)."""
    owner, going, waiting, newcomer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.executemany("insert into auth.users (id) values ($1)", [(owner,), (going,), (waiting,), (newcomer,)])
    event_id: uuid.UUID = await conn.fetchval(
        "insert into public.events (created_by, title, starts_at, ends_at, timezone, capacity, status) "
        "values ($1, 'one place', now() + interval '1 day', now() + interval '2 days', 'UTC', 1, 'published') "
        "returning id",
        owner,
    )
    await conn.executemany(REGISTER, [(event_id, going), (event_id, waiting)])
    return event_id, going, waiting, newcomer


async def _status_of_each(conn: asyncpg.Connection, event_id: uuid.UUID) -> dict[uuid.UUID, str]:
    rows = await conn.fetch("select user_id, status from public.event_participants where event_id = $1", event_id)
    return {row["user_id"]: row["status"] for row in rows}


async def test_a_row_referencing_the_event_holds_up_no_registration(database_url: str) -> None:
    """Inserting anything that references an event (a save, a notification, a day of analytics) takes a
    key-share lock on the event row until it commits; the seat check's lock must not wait for it, or a
    cancellation holding the counters waits behind a transaction waiting for those counters: a deadlock."""
    admin, referencing, writer = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        event_id, going, waiting, newcomer = await _event_with_a_waitlist(admin)
        await writer.execute("set lock_timeout = '3s'")
        async with referencing.transaction():
            await referencing.execute("select 1 from public.events where id = $1 for key share", event_id)
            await writer.execute(CANCEL, event_id, going)  # promotes the waitlist
            await writer.execute(REGISTER, event_id, newcomer)
        assert await _status_of_each(admin, event_id) == {
            going: "cancelled",
            waiting: "going",
            newcomer: "waitlisted",
        }
    finally:
        for conn in (admin, referencing, writer):
            await conn.close()


async def test_a_cancellation_takes_the_event_lock_before_the_counters(database_url: str) -> None:
    """A registration locks the event for its seat check, then bumps the event's counters. A
    cancellation that bumped the counters first and locked the event only to promote the waitlist
    deadlocked with it (one of them failed after a second's wait): every write of a registration takes
    the event lock first."""
    admin, registering, cancelling = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        event_id, going, waiting, newcomer = await _event_with_a_waitlist(admin)
        async with registering.transaction():
            # The seat check of a registration in flight: the event is locked, the counters not yet bumped.
            await registering.execute("select 1 from public.events where id = $1 for no key update", event_id)
            cancelled = asyncio.ensure_future(cancelling.execute(CANCEL, event_id, going))
            if not await lock_waiters(admin, pid=cancelling.get_server_pid()):
                raise AssertionError(f"the cancellation never waited: {await cancelled}")
            await registering.execute(REGISTER, event_id, newcomer)
        await asyncio.wait_for(cancelled, 10)
        # The newcomer asked while the place was still taken, so they wait behind the earlier waiter.
        assert await _status_of_each(admin, event_id) == {
            going: "cancelled",
            waiting: "going",
            newcomer: "waitlisted",
        }
    finally:
        for conn in (admin, registering, cancelling):
            await conn.close()
