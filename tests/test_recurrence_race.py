"""Rebuilds of one event's occurrences at once (pretix's locking.rst: first the test that races, then
the lock): rule changes through the gateway, each rebuilding the occurrences after its commit, the
horizon job's build of the same event, and PATCHes of single occurrences in between. However they
interleave, no request fails, and what is left is exactly what the event's final rule generates."""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from localplus_common.auth import SERVER
from localplus_common.db import Database
from localplus_recurrence import materialise
from localplus_recurrence.rules import compile_schedule
from localplus_recurrence.settings import RecurrenceSettings
from tests.support import User, iso, lock_waiters
from tests.test_recurrence_api import occurrences, patch, set_rule, weekly_event

# Two rules from the same Tuesday 19:00 that share few instances: every switch deletes and adds many.
DAILY, TWICE_WEEKLY = "FREQ=DAILY;COUNT=120", "FREQ=WEEKLY;BYDAY=TU,FR;COUNT=60"
RULE_CHANGES = 20


async def expected_starts(db: asyncpg.Pool, event_id: str) -> list[datetime]:
    """What a fresh expansion of the event's schedule, as it stands, yields (from now on)."""
    event = await db.fetchrow("select * from public.events where id = $1", uuid.UUID(event_id))
    assert event is not None
    settings = RecurrenceSettings()
    now = datetime.now(UTC)
    return compile_schedule(materialise.schedule_of(event)).instants(
        now, now + settings.horizon, settings.max_per_series
    )


async def stored(db: asyncpg.Pool, event_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "select id, original_starts_at, starts_at, in_series, note from public.event_occurrences"
        " where event_id = $1 order by original_starts_at",
        uuid.UUID(event_id),
    )


async def rule_changes(api: httpx.AsyncClient, user: User, event_id: str, at_once: int) -> list[httpx.Response]:
    """RULE_CHANGES PATCHes of the rule, alternating, `at_once` at a time."""
    rules = list(itertools.islice(itertools.cycle([TWICE_WEEKLY, DAILY]), RULE_CHANGES))
    responses: list[httpx.Response] = []
    for start in range(0, RULE_CHANGES, at_once):
        wave = rules[start : start + at_once]
        responses += await asyncio.gather(*(set_rule(api, user, event_id, rule) for rule in wave))
    return responses


async def assert_final_rules_occurrences(db: asyncpg.Pool, event_id: str) -> None:
    """Exactly one occurrence per instance of the event's rule as it stands: none of an older one."""
    rows = await stored(db, event_id)
    assert [r["original_starts_at"] for r in rows] == await expected_starts(db, event_id)
    assert all(r["in_series"] and r["starts_at"] == r["original_starts_at"] for r in rows)


async def test_concurrent_rule_changes_and_the_horizon_job_leave_exactly_the_final_rules_occurrences(
    api: httpx.AsyncClient, db: asyncpg.Pool, service_db: Database, user: User
) -> None:
    """Five rounds of 20 rule PATCHes, 5 at a time, each rebuilding after its commit, with the horizon
    job's build of the event 4 at a time meanwhile. Without a lock between builds an older rule's build
    that commits last leaves its occurrences behind (about every other run)."""
    event = await weekly_event(api, user, rule=DAILY)
    event_id = event["id"]
    build = functools.partial(materialise.build, event_id=uuid.UUID(event_id), settings=RecurrenceSettings())
    for _ in range(5):
        changing = asyncio.ensure_future(rule_changes(api, user, event_id, 5))
        jobs: list[Any] = []
        while not changing.done():  # the horizon job's build (repair -> build), again and again meanwhile
            jobs += await asyncio.gather(*(service_db.run(build, SERVER) for _ in range(4)), return_exceptions=True)
        responses = changing.result()
        assert all(r.status_code < 500 for r in responses), [r.text for r in responses if r.status_code >= 500]
        # Unconditional PATCHes of one event at once: each applies, or is told the event changed meanwhile.
        assert {r.status_code for r in responses} <= {200, 409}, [r.text for r in responses]
        assert any(r.status_code == 200 for r in responses)
        assert not [job for job in jobs if isinstance(job, BaseException)]
        # As soon as the last PATCH has answered, not only once the horizon job has been by.
        await assert_final_rules_occurrences(db, event_id)


async def test_occurrence_edits_racing_rebuilds_neither_fail_nor_get_lost(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    """PATCHes of the first occurrence (every rule keeps it) and of the second (a Wednesday: only the
    daily rule has it, so every other rebuild deletes it) while the rule keeps changing. Without the
    event's row between them, a PATCH that read the occurrence before a rebuild deleted it updated
    nothing and answered 500."""
    event = await weekly_event(api, user, rule=DAILY)
    event_id = event["id"]
    first = (await occurrences(api, event_id))[0]["id"]
    changing = asyncio.ensure_future(rule_changes(api, user, event_id, 2))
    notes: dict[str, int] = {}

    async def edit_first(n: int) -> httpx.Response:
        body = {"note": f"note {n}", "capacity": n}
        response = await patch(api, user, event_id, first, body, update_mask="note,capacity")
        if response.status_code == 200:
            notes[f"note {n}"] = n
        return response

    async def edit_second() -> httpx.Response:
        second = (await stored(db, event_id))[1]["id"]
        return await patch(api, user, event_id, str(second), {"status": "OCCURRENCE_STATUS_CANCELLED"})

    edits: list[httpx.Response] = []
    n = 0
    while not changing.done():
        n += 1
        edits += await asyncio.gather(edit_first(n), *(edit_second() for _ in range(6)))
    responses = changing.result() + edits
    failed = [r.text for r in responses if r.status_code >= 500]
    assert not failed, failed
    # The second occurrence may be gone by the time its PATCH gets to it: 404.
    assert {r.status_code for r in edits} <= {200, 404}, [r.text for r in edits if r.status_code >= 300]
    rows = await stored(db, event_id)
    assert rows[0]["id"] == uuid.UUID(first) and rows[0]["note"] in notes
    capacity = await db.fetchval("select capacity from public.event_occurrences where id = $1", uuid.UUID(first))
    assert capacity == notes[rows[0]["note"]]  # one PATCH's note and capacity, together
    await assert_final_rules_occurrences(db, event_id)


async def test_a_split_planned_on_an_older_rule_does_not_overwrite_a_newer_one(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    """A "this and following" PATCH reads the event, then asks the events service to split it. A rule
    change landing in between (forced here: the event's row is held locked until the split waits for it,
    then changed) fails the split with 409, where the split used to write a rule derived from the one
    it replaced over the newer one."""
    event = await weekly_event(api, user)
    found = await occurrences(api, event["id"])
    event_id = uuid.UUID(event["id"])
    newer = "FREQ=WEEKLY;BYDAY=TU;COUNT=5"
    later = datetime.fromisoformat(found[2]["starts_at"]) + timedelta(hours=1)
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("select 1 from public.events where id = $1 for update", event_id)
        split = asyncio.create_task(
            patch(
                api,
                user,
                event["id"],
                found[2]["id"],
                {"starts_at": iso(later), "ends_at": iso(later + timedelta(hours=2))},
                scope="UPDATE_SCOPE_THIS_AND_FOLLOWING",
            )
        )
        # Until the events service's split waits for the row.
        assert await lock_waiters(db, query_like="%for no key update of e", seconds=10), "the split never waited"
        await conn.execute("update public.events set recurrence_rrule = $2 where id = $1", event_id, newer)
    answer = await split
    assert answer.status_code == 409 and "ETAG_MISMATCH" in answer.text, answer.text
    assert (await api.get(f"/api/events/{event['id']}")).json()["recurrence"]["rrule"] == newer
