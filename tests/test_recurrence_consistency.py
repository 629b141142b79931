"""What keeps occurrences and schedules together when the two services do not talk: the events
service commits the event first and asks for the occurrences after, and the recurrence service's
horizon job (running inside the service, every second in the test stack) builds them for every
event it finds stale: after a lost call, and after a write through Supabase's REST. Plus the
property that what a build leaves in the table is exactly a fresh expansion of the rule."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import httpx
import icalendar
import pytest
from dateutil import rrule as dateutil_rrule
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from localplus_common.auth import Identity
from localplus_common.calls import Forward
from localplus_common.db import Database, current_identity
from localplus_dev.postgres import free_port
from localplus_dev.stack import Stack
from localplus_events import events
from localplus_events.schedules import Schedules
from localplus_recurrence import materialise
from localplus_recurrence.rules import to_instant, to_wall
from localplus_recurrence.settings import RecurrenceSettings
from tests.sql_callers import as_caller, claims_of
from tests.support import User, add_city
from tests.test_recurrence_api import weekly_event


async def occurrence_starts(db: asyncpg.Pool, event_id: uuid.UUID) -> list[datetime]:
    rows = await db.fetch(
        "select original_starts_at from public.event_occurrences where event_id = $1 order by 1", event_id
    )
    return [row[0] for row in rows]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait (at most 15 s; the horizon job runs every second) until `check` holds."""
    for _ in range(75):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the horizon job did not build the occurrences in time")


def weekly_values(weeks: int) -> dict[str, object]:
    zone = ZoneInfo("Europe/London")
    day = (datetime.now(zone) + timedelta(days=3)).date()
    starts = datetime(day.year, day.month, day.day, 19, tzinfo=zone).astimezone(UTC)
    return {
        "title": "Lost call",
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=2),
        "timezone": "Europe/London",
        "recurrence_rrule": f"FREQ=WEEKLY;COUNT={weeks}",
        "recurrence_exdates": [],
        "recurrence_rdates": [],
    }


async def test_a_lost_call_to_the_recurrence_service_is_repaired_by_the_horizon_job(
    stack: Stack, service_db: Database, db: asyncpg.Pool, user: User
) -> None:
    """The events service's own create, with the recurrence service reachable for the check but not
    for the build (a port nobody listens on): the event is created, and the job builds its occurrences."""
    checking = grpc.aio.insecure_channel(stack.address("recurrence"))
    lost = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")

    class HalfReachable:
        validate = Schedules(checking).validate
        materialize = Schedules(lost).materialize

    current_identity.set(Identity("authenticated", user.id, claims_of(user.id)))
    created = await events.create_event(service_db, HalfReachable(), Forward(), weekly_values(5))
    await checking.close()
    await lost.close()
    event_id = created["id"]
    await eventually(lambda: _has(db, event_id, 5))


async def _has(db: asyncpg.Pool, event_id: uuid.UUID, count: int) -> bool:
    return len(await occurrence_starts(db, event_id)) == count


async def test_a_schedule_written_through_supabase_rest_gets_its_occurrences(db: asyncpg.Pool, user: User) -> None:
    values = weekly_values(3)
    columns = ["created_by", *values]
    async with as_caller(db, user.id, commit=True) as conn:
        event_id = await conn.fetchval(
            f"insert into public.events ({', '.join(columns)}) values"
            f" ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) returning id",
            user.id,
            *values.values(),
        )
    await eventually(lambda: _has(db, event_id, 3))
    async with as_caller(db, user.id, commit=True) as conn:
        await conn.execute("update public.events set recurrence_rrule = 'FREQ=WEEKLY;COUNT=7' where id = $1", event_id)
    await eventually(lambda: _has(db, event_id, 7))
    # A rule the SQL checks refuse never gets that far.
    async with as_caller(db, user.id) as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("update public.events set recurrence_rrule = 'FREQ=SECONDLY' where id = $1", event_id)


async def test_occurrences_are_readable_with_their_event_and_writable_by_no_api_role(
    db: asyncpg.Pool, user: User, other_user: User
) -> None:
    draft = weekly_values(2) | {"title": "Draft series"}
    async with as_caller(db, user.id, commit=True) as conn:
        event_id = await conn.fetchval(
            "insert into public.events (created_by, title, starts_at, ends_at, timezone, recurrence_rrule)"
            " values ($1, $2, $3, $4, $5, $6) returning id",
            user.id,
            draft["title"],
            draft["starts_at"],
            draft["ends_at"],
            draft["timezone"],
            draft["recurrence_rrule"],
        )
    await eventually(lambda: _has(db, event_id, 2))
    read = "select count(*) from public.event_occurrences where event_id = $1"
    async with as_caller(db, user.id) as conn:
        assert await conn.fetchval(read, event_id) == 2
    for who in (other_user.id, None):
        async with as_caller(db, who) as conn:
            assert await conn.fetchval(read, event_id) == 0  # a draft's occurrences are the draft's
    async with as_caller(db, user.id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("update public.event_occurrences set note = 'x' where event_id = $1", event_id)
    async with as_caller(db, user.id, grant_all_on=("event_occurrences",)) as conn:
        # Even with Supabase's blanket grants, no policy lets a write through.
        changed = await conn.execute("update public.event_occurrences set note = 'x' where event_id = $1", event_id)
        assert changed == "UPDATE 0"


# Property: a build leaves exactly the rule's instances in the window, as dateutil (with an aware
# DTSTART, an independent path through the same RFC) expands them.

NOW = datetime.now(UTC).replace(microsecond=0)
RECURRENCE = RecurrenceSettings(horizon=timedelta(days=120), max_per_series=200)
ZONES = ["Europe/London", "America/New_York", "Asia/Bangkok", "Australia/Lord_Howe", "UTC"]


@st.composite
def rules(draw: st.DrawFn) -> tuple[str, str, datetime]:
    freq = draw(st.sampled_from(["HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"]))
    parts = [f"FREQ={freq}"]
    interval = draw(st.integers(1, 4)) if freq != "HOURLY" else draw(st.integers(5, 13))
    if interval > 1:
        parts.append(f"INTERVAL={interval}")
    if freq == "WEEKLY" and draw(st.booleans()):
        days = draw(
            st.lists(st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"]), min_size=1, max_size=4, unique=True)
        )
        parts.append("BYDAY=" + ",".join(days))
    if freq == "MONTHLY" and draw(st.booleans()):
        parts.append(draw(st.sampled_from(["BYMONTHDAY=-1", "BYMONTHDAY=15", "BYDAY=2TU", "BYDAY=-1FR"])))
    end = draw(st.sampled_from(["none", "count", "until"]))
    if end == "count":
        parts.append(f"COUNT={draw(st.integers(1, 80))}")
    elif end == "until":
        parts.append(f"UNTIL={(NOW + timedelta(days=draw(st.integers(1, 200)))):%Y%m%dT%H%M%SZ}")
    zone = draw(st.sampled_from(ZONES))
    # Local start times that include DST gaps and repeats (01:30, 02:30).
    first = NOW + timedelta(days=draw(st.integers(0, 30)))
    wall = to_wall(first, ZoneInfo(zone)).replace(
        hour=draw(st.sampled_from([0, 1, 2, 9, 19, 23])), minute=draw(st.sampled_from([0, 30])), second=0
    )
    return ";".join(parts), zone, wall


def oracle(rule: str, zone: str, dtstart: datetime, exdates: set[datetime]) -> list[datetime]:
    tz = ZoneInfo(zone)
    aware = dtstart.replace(tzinfo=tz)
    expanded = dateutil_rrule.rrulestr(rule, dtstart=aware)
    end = NOW + RECURRENCE.horizon
    found = sorted(
        {i.astimezone(UTC) for i in expanded.between(NOW - timedelta(days=1), end + timedelta(days=1), inc=True)}
    )
    return [i for i in found if NOW <= i < end and i not in exdates][: RECURRENCE.max_per_series]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=rules(), skip=st.lists(st.integers(0, 5), max_size=3, unique=True))
async def test_a_build_leaves_exactly_a_fresh_expansion(
    service_db: Database, user: User, case: tuple[str, str, datetime], skip: list[int]
) -> None:
    rule, zone, wall = case
    tz = ZoneInfo(zone)
    # DTSTART must be an instance (the API refuses others): the rule's first one from `wall`.
    aware_first = next(iter(dateutil_rrule.rrulestr(rule, dtstart=wall.replace(tzinfo=tz))), None)
    assume(aware_first is not None)
    assert aware_first is not None
    first = aware_first.replace(tzinfo=None)
    starts = to_instant(first, tz)
    assume(to_wall(starts, tz) == first)  # not inside a gap, where the event's own start would move
    everything = oracle(rule, zone, first, set())
    exdates = {everything[i] for i in skip if i < len(everything) and everything[i] != starts}
    # One transaction, rolled back: the horizon job never sees the event.
    async with service_db.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            event_id = await conn.fetchval(
                "insert into public.events (created_by, title, starts_at, ends_at, timezone, recurrence_rrule,"
                " recurrence_exdates) values ($1, 'Property', $2, $3, $4, $5, $6) returning id",
                user.id,
                starts,
                starts + timedelta(minutes=90),
                zone,
                rule,
                sorted(exdates),
            )
            await materialise.build(conn, event_id, RECURRENCE, now=NOW)
            rows = await conn.fetch(
                "select original_starts_at, starts_at, ends_at, status from public.event_occurrences"
                " where event_id = $1 order by original_starts_at",
                event_id,
            )
        finally:
            await transaction.rollback()
    assert [r["original_starts_at"] for r in rows] == oracle(rule, zone, first, exdates), (rule, zone, first)
    assert all(r["starts_at"] == r["original_starts_at"] for r in rows)
    assert {r["ends_at"] - r["starts_at"] for r in rows} <= {timedelta(minutes=90)}
    assert {r["status"] for r in rows} <= {"scheduled"}


async def test_a_rule_written_through_supabase_rest_that_the_service_refuses_breaks_no_feed(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    """The SQL checks hold a rule's shape, not all of RFC 5545: an editor can store BYDAY=XX or a
    20-digit COUNT through Supabase's REST. Such a series has no occurrences (the service cannot expand
    it), so it is left out of the iCalendar feeds too: every feed naming it, the city's and the
    business's included, was a 500 for everyone."""
    city = await add_city(db, f"city-{uuid.uuid4().hex[:8]}")
    kept = await weekly_event(api, user, city=city)
    broken = await weekly_event(api, user, city=city)
    paths = (f"/api/cities/{city}/calendar.ics", f"/api/events/{broken['id']}/calendar.ics")
    for rule in ("FREQ=WEEKLY;BYDAY=XX", "FREQ=DAILY;COUNT=99999999999999999999", "FREQ=DAILY;INTERVAL=0"):
        async with as_caller(db, user.id, commit=True) as conn:
            await conn.execute(
                "update public.events set recurrence_rrule = $2 where id = $1", uuid.UUID(broken["id"]), rule
            )
        for path in paths:
            feed = await api.get(path)
            assert feed.status_code == 200, (rule, path, feed.text)
            uids = [str(e["uid"]) for e in icalendar.Calendar.from_ical(feed.text).walk("VEVENT")]
            assert f"{broken['id']}@localplus" not in uids, (rule, path)
            assert (f"{kept['id']}@localplus" in uids) == ("cities" in path), (rule, path)


async def test_the_horizon_job_warns_once_about_a_rule_it_cannot_expand_and_builds_the_rest(
    stack: Stack, db: asyncpg.Pool, user: User
) -> None:
    """A rule of the right shape for the SQL checks that the service refuses (BYDAY=XX), written through
    Supabase's REST: one warning naming the event in the recurrence service's log, not a traceback on
    every pass of the job, and the job still builds a series written after it."""
    log = stack.config.run_dir / "recurrence.log"
    columns = ["created_by", *weekly_values(3)]
    insert = (
        f"insert into public.events ({', '.join(columns)}) values"
        f" ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) returning id"
    )
    async with as_caller(db, user.id, commit=True) as conn:
        bad = await conn.fetchval(
            insert, user.id, *(weekly_values(3) | {"recurrence_rrule": "FREQ=WEEKLY;BYDAY=XX"}).values()
        )
        good = await conn.fetchval(insert, user.id, *weekly_values(4).values())
    await eventually(lambda: _has(db, good, 4))
    await asyncio.sleep(3)  # three more passes of the job
    lines = [json.loads(line) for line in log.read_text().splitlines() if str(bad) in line and line.startswith("{")]
    assert [(line["level"], "error" in line) for line in lines] == [("WARNING", False)], lines
    assert await occurrence_starts(db, bad) == []
