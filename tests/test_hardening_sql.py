"""What anyone reaching the database the way Supabase's REST does (`/rest/v1/` and `/rest/v1/rpc/`
run as `anon` or `authenticated`) can no longer do, on every database the suite runs on. Each test
reproduces a finding of the hardening issue that succeeded before the fix:

1. definer functions callable by anyone (counters bent, the waitlist promoted, drafts revealed);
2. server-owned columns writable (times, `source`, `sold`; a registration dated 1970 jumped the queue);
3. unlisted events listed by `select ... where visibility = 'unlisted'`;
8. the waitlist let a later, smaller party take a place before an earlier, larger one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from localplus_common.auth import SERVER
from localplus_common.db import request_context
from tests.sql_callers import as_caller, new_event, new_user

# How the endpoint `/rest/v1/rpc/<name>` would call each, in `public` (where they were) and in the
# unexposed schema they moved to: refused either way, because they do not exist or may not be run.
INTERNAL_CALLS = {
    "bump_counter": "{schema}.bump_counter($1, 'going', -1000, 0)",
    "promote_waitlist": "{schema}.promote_waitlist($1)",
    "event_seats_taken": "{schema}.event_seats_taken($1)",
    "event_business_id": "{schema}.event_business_id($1)",
}
REFUSED = (asyncpg.UndefinedFunctionError, asyncpg.InsufficientPrivilegeError)


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


async def statuses(pool: asyncpg.Pool, event_id: uuid.UUID) -> dict[uuid.UUID, str]:
    rows = await pool.fetch("select user_id, status from public.event_participants where event_id = $1", event_id)
    return {row["user_id"]: row["status"] for row in rows}


async def register(pool: asyncpg.Pool, event_id: uuid.UUID, user_id: uuid.UUID, guests: int = 0) -> str:
    """Register as the user, the way a REST client would (no RETURNING), and commit."""
    async with as_caller(pool, user_id, commit=True) as conn:
        await conn.execute(
            "insert into public.event_participants (event_id, user_id, guest_count) values ($1, auth.uid(), $2)",
            event_id,
            guests,
        )
    return (await statuses(pool, event_id))[user_id]


async def set_status(pool: asyncpg.Pool, event_id: uuid.UUID, user_id: uuid.UUID, status: str) -> None:
    async with as_caller(pool, user_id, commit=True) as conn:
        await conn.execute(
            "update public.event_participants set status = $2 where event_id = $1 and user_id = auth.uid()",
            event_id,
            status,
        )


# 1. Definer functions


@pytest.mark.parametrize("schema", ["public", "localplus_private"])
@pytest.mark.parametrize("function", list(INTERNAL_CALLS))
@pytest.mark.parametrize("signed_in", [False, True], ids=["anon", "authenticated"])
async def test_api_roles_cannot_run_internal_functions(
    pool: asyncpg.Pool, schema: str, function: str, signed_in: bool
) -> None:
    owner = await new_user(pool)
    draft = await new_event(pool, owner, status="draft", visibility="private", capacity=2)
    caller = await new_user(pool) if signed_in else None
    async with as_caller(pool, caller) as conn:
        with pytest.raises(REFUSED):
            await conn.execute(f"select {INTERNAL_CALLS[function].format(schema=schema)}", draft)


async def test_counters_cannot_be_bent_to_register_past_capacity(pool: asyncpg.Pool) -> None:
    owner = await new_user(pool)
    event = await new_event(pool, owner, capacity=2)
    for schema in ("public", "localplus_private"):
        async with as_caller(pool, None) as conn:
            with pytest.raises(REFUSED):
                await conn.execute(f"select {INTERNAL_CALLS['bump_counter'].format(schema=schema)}", event)
    people = [await new_user(pool) for _ in range(5)]
    assert [await register(pool, event, person) for person in people] == ["going"] * 2 + ["waitlisted"] * 3
    counters = await pool.fetchrow("select going, waitlisted from public.event_counters where event_id = $1", event)
    assert counters is not None and dict(counters) == {"going": 2, "waitlisted": 3}


FIGURES = ("going", "interested", "waitlisted", "cancelled", "attended", "guests", "saves", "checked_in")


@pytest.mark.parametrize("signed_in", [False, True], ids=["anon", "stranger"])
async def test_an_events_figures_are_not_read_around_the_api(pool: asyncpg.Pool, signed_in: bool) -> None:
    """The counters behind GET /api/events/{id}/stats, which the API shows viewers and up only (a stranger
    gets 403), were readable by anyone in SQL for any public event: `select going, guests, ...`. Only the
    popularity a search may sort by is."""
    owner = await new_user(pool)
    event = await new_event(pool, owner)
    await register(pool, event, await new_user(pool), guests=2)
    caller = await new_user(pool) if signed_in else None
    for figure in FIGURES:
        async with as_caller(pool, caller) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"select {figure} from public.event_counters where event_id = $1", event)
    async with as_caller(pool, caller) as conn:
        assert await conn.fetchval("select popularity from public.event_counters where event_id = $1", event) == 1


BLANK_NAMES = ["   ", "\t", " \n "]


@pytest.mark.parametrize("blank", BLANK_NAMES, ids=["spaces", "tab", "newline"])
async def test_names_the_api_refuses_as_blank_are_refused_in_sql_too(pool: asyncpg.Pool, blank: str) -> None:
    """The API answers 400 'title is required' (and 'name is required') for a blank title, ticket type name
    or venue name; an owner writing in SQL stored them, a blank event listed and searchable."""
    owner = await new_user(pool)
    event = await new_event(pool, owner)
    business = await pool.fetchval("insert into public.businesses (name) values ('Blank & Co') returning id")
    await pool.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, 'owner')", business, owner
    )
    city = await pool.fetchval("select id from public.cities order by slug limit 1")
    writes = [
        (
            "insert into public.events (created_by, title, starts_at, ends_at, timezone)"
            " values (auth.uid(), $1, now() + interval '1 day', now() + interval '2 days', 'Asia/Bangkok')",
            (blank,),
        ),
        ("update public.events set title = $2 where id = $1", (event, blank)),
        (
            "insert into public.ticket_types (event_id, name, currency, inventory) values ($1, $2, 'THB', 10)",
            (event, blank),
        ),
        (
            "insert into public.venues (city_id, business_id, name, address) values ($1, $2, $3, '')",
            (city, business, blank),
        ),
    ]
    for sql, args in writes:
        async with as_caller(pool, owner) as conn:
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(sql, *args)


# 2. Server-owned columns

# (table, column, a value someone would like to set); every one is the server's to decide.
SERVER_OWNED = [
    ("events", "published_at", "now()"),
    ("events", "submitted_at", "now()"),
    ("events", "source", "'spam'"),
    ("events", "created_at", "'1970-01-01'"),
    ("events", "updated_at", "'1970-01-01'"),
    ("events", "version", "1000"),
    ("events", "search_text", "'free beer'"),
    ("events", "created_by", "null"),
    ("event_participants", "status_changed_at", "'1970-01-01'"),
    ("event_participants", "created_at", "'1970-01-01'"),
    ("event_permissions", "granted_by", "null"),
    ("event_permissions", "created_at", "'1970-01-01'"),
    ("ticket_types", "created_at", "'1970-01-01'"),
    ("event_saves", "created_at", "'1970-01-01'"),
    ("event_counters", "going", "1000"),
]


async def arrange_everything(pool: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID]:
    """An event its creator owns, with a row of every kind the owner may otherwise act on."""
    owner = await new_user(pool)
    event = await new_event(pool, owner, capacity=10)
    await pool.execute(
        "insert into public.event_participants (event_id, user_id) values ($1, $2)", event, await new_user(pool)
    )
    await pool.execute("insert into public.event_participants (event_id, user_id) values ($1, $2)", event, owner)
    await pool.execute(
        "insert into public.event_permissions (event_id, user_id, role) values ($1, $2, 'viewer')",
        event,
        await new_user(pool),
    )
    await pool.execute(
        "insert into public.ticket_types (event_id, name, currency, inventory) values ($1, 'GA', 'THB', 10)", event
    )
    await pool.execute("insert into public.event_saves (user_id, event_id) values ($1, $2)", owner, event)
    return owner, event


@pytest.mark.parametrize(("table", "column", "value"), SERVER_OWNED, ids=[f"{t}.{c}" for t, c, _ in SERVER_OWNED])
async def test_owners_cannot_write_server_owned_columns(
    pool: asyncpg.Pool, table: str, column: str, value: str
) -> None:
    owner, event = await arrange_everything(pool)
    key = "id" if table == "events" else "event_id"
    async with as_caller(pool, owner) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"update public.{table} set {column} = {value} where {key} = $1", event)


# Where a statement could get past the grants (had a default privilege granted the whole table),
# the before-write triggers keep these as they were.
KEPT_BY_TRIGGERS = [
    (table, column, value)
    for table, column, value in SERVER_OWNED
    # Bumped on every write; the caller who regrants; no write policy at all.
    if column not in ("updated_at", "version", "granted_by") and table != "event_counters"
]


@pytest.mark.parametrize(
    ("table", "column", "value"), KEPT_BY_TRIGGERS, ids=[f"{t}.{c}" for t, c, _ in KEPT_BY_TRIGGERS]
)
async def test_server_owned_columns_hold_even_with_supabase_table_grants(
    pool: asyncpg.Pool, table: str, column: str, value: str
) -> None:
    owner, event = await arrange_everything(pool)
    key = "id" if table == "events" else "event_id"
    query = f"select {column}::text from public.{table} where {key} = $1 order by 1"
    before = [row[0] for row in await pool.fetch(query, event)]
    async with as_caller(pool, owner, grant_all_on=(table,)) as conn:
        status = await conn.execute(f"update public.{table} set {column} = {value} where {key} = $1", event)
        assert status == f"UPDATE {len(before)}"
        assert [row[0] for row in await conn.fetch(query, event)] == before


async def test_a_registration_dated_1970_does_not_jump_the_waitlist(pool: asyncpg.Pool) -> None:
    owner = await new_user(pool)
    event = await new_event(pool, owner, capacity=1)
    first, early_bird = await new_user(pool), await new_user(pool)
    assert await register(pool, event, first) == "going"
    waiting = await new_user(pool)
    assert await register(pool, event, waiting) == "waitlisted"
    async with as_caller(pool, early_bird) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "insert into public.event_participants (event_id, user_id, status_changed_at) "
                "values ($1, auth.uid(), '1970-01-01')",
                event,
            )
    # Even where a grant let the column through, the trigger dates the row itself.
    async with as_caller(pool, early_bird, grant_all_on=("event_participants",)) as conn:
        await conn.execute(
            "insert into public.event_participants (event_id, user_id, status_changed_at) "
            "values ($1, auth.uid(), '1970-01-01')",
            event,
        )
        mine = await conn.fetchrow(
            "select status, status_changed_at > now() - interval '1 hour' as dated_now "
            "from public.event_participants where event_id = $1 and user_id = auth.uid()",
            event,
        )
        assert mine is not None and dict(mine) == {"status": "waitlisted", "dated_now": True}


async def test_owners_cannot_grant_permissions_that_have_already_expired(pool: asyncpg.Pool) -> None:
    """The API refuses an expires_at that is not in the future (400); so does SQL, for new grants and
    changed expiries, while rows that have expired since (and other changes to them) are left alone."""
    owner, editor, viewer = await new_user(pool), await new_user(pool), await new_user(pool)
    event = await new_event(pool, owner)
    await pool.execute(
        "insert into public.event_permissions (event_id, user_id, role, expires_at)"
        " values ($1, $2, 'viewer', now() - interval '1 day')",
        event,
        viewer,
    )
    grant = "insert into public.event_permissions (event_id, user_id, role, expires_at) values ($1, $2, 'editor', $3)"
    extend = "update public.event_permissions set expires_at = $3 where event_id = $1 and user_id = $2"
    for sql, who in ((grant, editor), (extend, viewer)):
        for moment in ("now() - interval '1 hour'", "now()"):
            async with as_caller(pool, owner) as conn:
                with pytest.raises(asyncpg.CheckViolationError, match="expires_at must be in the future"):
                    await conn.execute(sql, event, who, await conn.fetchval(f"select {moment}"))
        async with as_caller(pool, owner) as conn:
            await conn.execute(sql, event, who, await conn.fetchval("select now() + interval '1 day'"))
    async with as_caller(pool, owner) as conn:
        changed = await conn.execute(
            "update public.event_permissions set role = 'editor' where event_id = $1 and user_id = $2", event, viewer
        )
        assert changed == "UPDATE 1"


async def test_callers_cannot_say_someone_else_granted_a_permission(pool: asyncpg.Pool) -> None:
    """Only the server's own role (no user in the request) writes the granted_by it gives, as a series
    split does when it copies an event's grants; a signed-in caller is recorded as the grantor even where
    Supabase's table grants let the column through."""
    owner, someone_else, grantee = await new_user(pool), await new_user(pool), await new_user(pool)
    event = await new_event(pool, owner)
    grant = (
        "insert into public.event_permissions (event_id, user_id, role, granted_by) values ($1, $2, 'viewer', $3)"
        " returning granted_by"
    )
    async with as_caller(pool, owner, grant_all_on=("event_permissions",)) as conn:
        assert await conn.fetchval(grant, event, grantee, someone_else) == owner
    async with as_caller(pool, owner, grant_all_on=("event_permissions",)) as conn:
        await conn.execute(
            "insert into public.event_permissions (event_id, user_id, role) values ($1, $2, 'viewer')", event, grantee
        )
        forged = await conn.fetchval(
            "update public.event_permissions set granted_by = $3 where event_id = $1 and user_id = $2"
            " returning granted_by",
            event,
            grantee,
            someone_else,
        )
        assert forged == owner
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(request_context(SERVER))
        assert await conn.fetchval(grant, event, grantee, someone_else) == someone_else
        await transaction.rollback()


async def test_editors_cannot_set_sold(pool: asyncpg.Pool) -> None:
    owner = await new_user(pool)
    event = await new_event(pool, owner)
    editor = await new_user(pool)
    await pool.execute(
        "insert into public.event_permissions (event_id, user_id, role) values ($1, $2, 'editor')", event, editor
    )
    await pool.execute(
        "insert into public.ticket_types (event_id, name, currency, inventory) values ($1, 'GA', 'THB', 10)", event
    )
    # What is sold is counted in the type's buckets, which are the server's alone.
    refused = (
        "update public.ticket_type_buckets set sold = 10, taken = 10"
        " where ticket_type_id in (select id from public.ticket_types where event_id = $1)",
        "insert into public.ticket_type_buckets (ticket_type_id, bucket, capacity, taken, sold)"
        " select id, 100, 10, 10, 10 from public.ticket_types where event_id = $1",
    )
    for sql in refused:
        async with as_caller(pool, editor) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql, event)
    # What editors may change, they still can.
    async with as_caller(pool, editor) as conn:
        assert await conn.execute("update public.ticket_types set inventory = 20 where event_id = $1", event) == (
            "UPDATE 1"
        )


async def test_a_cancelled_event_shows_only_reviewed_text(pool: asyncpg.Pool) -> None:
    """Approved, then edited by its owner (back to review), then cancelled: no longer public."""
    owner = await new_user(pool)
    event = await new_event(pool, owner, status="pending_review")
    async with as_caller(pool, await new_user(pool), admin=True, commit=True) as conn:
        await conn.execute("update public.events set status = 'published' where id = $1", event)
    async with as_caller(pool, owner, commit=True) as conn:
        await conn.execute("update public.events set title = 'Spam, unreviewed' where id = $1", event)
        assert await conn.fetchval("select status from public.events where id = $1", event) == "pending_review"
        await conn.execute("update public.events set status = 'cancelled' where id = $1", event)
    async with as_caller(pool, None) as conn:
        assert await conn.fetchval("select count(*) from public.events where id = $1", event) == 0
    # Cancelled straight from published, it stays readable; and it can no longer be changed.
    other = await new_event(pool, owner)
    async with as_caller(pool, owner, commit=True) as conn:
        await conn.execute("update public.events set status = 'cancelled' where id = $1", other)
    async with as_caller(pool, None) as conn:
        assert await conn.fetchval("select status from public.events where id = $1", other) == "cancelled"
    async with as_caller(pool, owner) as conn:
        with pytest.raises(asyncpg.RaiseError, match="cancelled event can no longer be changed"):
            await conn.execute("update public.events set title = 'Spam after all' where id = $1", other)


# 3. Unlisted events


async def test_unlisted_events_cannot_be_listed(pool: asyncpg.Pool) -> None:
    owner = await new_user(pool)
    unlisted = await new_event(pool, owner, visibility="unlisted")
    await pool.execute(
        "insert into public.ticket_types (event_id, name, currency, inventory) values ($1, 'GA', 'THB', 10)", unlisted
    )
    listing = {
        "events": "select id from public.events where visibility = 'unlisted'",
        "ticket_types": "select event_id from public.ticket_types",
        "event_counters": "select event_id from public.event_counters",
    }
    for caller in (None, await new_user(pool)):
        async with as_caller(pool, caller) as conn:
            for table, sql in listing.items():
                assert unlisted not in {row[0] for row in await conn.fetch(sql)}, (caller, table)
    # Who presents its id (as the API does for a request naming the event) reads it, and only it.
    async with as_caller(pool, None) as conn:
        await conn.execute("select set_config('localplus.event_id', $1, true)", str(unlisted))
        assert [row[0] for row in await conn.fetch(listing["events"])] == [unlisted]
        assert [row[0] for row in await conn.fetch(listing["ticket_types"] + " where event_id = $1", unlisted)] == [
            unlisted
        ]
    # Who saved it keeps it among their saves.
    fan = await new_user(pool)
    await pool.execute("insert into public.event_saves (user_id, event_id) values ($1, $2)", fan, unlisted)
    async with as_caller(pool, fan) as conn:
        saved = await conn.fetch(
            "select e.id from public.event_saves s join public.events e on e.id = s.event_id where s.user_id = $1", fan
        )
        assert [row[0] for row in saved] == [unlisted]


# 8. The waitlist: strictly first come, first served


async def test_nobody_overtakes_a_waiting_party(pool: asyncpg.Pool) -> None:
    owner = await new_user(pool)
    event = await new_event(pool, owner, capacity=2)
    couple, family, single = await new_user(pool), await new_user(pool), await new_user(pool)
    assert await register(pool, event, couple, guests=1) == "going"  # both places
    assert await register(pool, event, family, guests=2) == "waitlisted"  # needs three
    await set_status(pool, event, couple, "cancelled")  # two free: still not enough for the family
    assert (await statuses(pool, event))[family] == "waitlisted"
    # A single person asking later would fit, but the family asked first.
    assert await register(pool, event, single) == "waitlisted"
    queued_at = await pool.fetchval(
        "select status_changed_at from public.event_participants where event_id = $1 and user_id = $2", event, family
    )
    # Asking again for a place keeps one's position in the queue.
    await set_status(pool, event, family, "going")
    assert (await statuses(pool, event))[family] == "waitlisted"
    assert (
        await pool.fetchval(
            "select status_changed_at from public.event_participants where event_id = $1 and user_id = $2",
            event,
            family,
        )
        == queued_at
    )
    # When the family gives up its turn, the single person is next.
    await set_status(pool, event, family, "cancelled")
    assert (await statuses(pool, event))[single] == "going"


async def test_raising_capacity_lets_the_queue_in_in_order(pool: asyncpg.Pool) -> None:
    owner = await new_user(pool)
    event = await new_event(pool, owner, capacity=1)
    first = await new_user(pool)
    assert await register(pool, event, first) == "going"
    family, single = await new_user(pool), await new_user(pool)
    assert await register(pool, event, family, guests=2) == "waitlisted"
    assert await register(pool, event, single) == "waitlisted"
    async with as_caller(pool, owner, commit=True) as conn:
        await conn.execute("update public.events set capacity = 3 where id = $1", event)
    # Two places more: the family needs three, so nobody moves (the single person waits behind it).
    assert await statuses(pool, event) == {first: "going", family: "waitlisted", single: "waitlisted"}
    async with as_caller(pool, owner, commit=True) as conn:
        await conn.execute("update public.events set capacity = 5 where id = $1", event)
    assert await statuses(pool, event) == {first: "going", family: "going", single: "going"}


async def test_a_going_party_cannot_grow_while_others_wait(pool: asyncpg.Pool) -> None:
    owner = await new_user(pool)
    event = await new_event(pool, owner, capacity=3)
    host, family = await new_user(pool), await new_user(pool)
    assert await register(pool, event, host) == "going"
    assert await register(pool, event, family, guests=2) == "waitlisted"  # needs three, two are free
    async with as_caller(pool, host) as conn:
        with pytest.raises(asyncpg.RaiseError, match="others are waiting"):
            await conn.execute(
                "update public.event_participants set guest_count = 1 where event_id = $1 and user_id = auth.uid()",
                event,
            )


async def test_a_time_zone_is_a_zone_name_not_an_abbreviation(pool: asyncpg.Pool) -> None:
    """`AT TIME ZONE` also takes abbreviations ("PST"), which no zone database has: an editor writing
    one through Supabase's REST made every Python reader of the event fail (the notifications worker
    stopped at its messages, a city's calendar feed answered 500). The API already refused them."""
    owner = await new_user(pool)
    event_id = await new_event(pool, owner)
    for zone in ("PST", "CEST", "ICT", "Z"):
        async with as_caller(pool, owner) as conn:
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute("update public.events set timezone = $2 where id = $1", event_id, zone)
    for zone in ("America/Los_Angeles", "UTC", "EST"):
        async with as_caller(pool, owner) as conn:
            await conn.execute("update public.events set timezone = $2 where id = $1", event_id, zone)
