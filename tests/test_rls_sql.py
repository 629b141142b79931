"""The RBAC matrix straight in SQL: the row-level security policies themselves, not the service code.

For the same callers and events as `tests/test_rbac_matrix.py`, each statement runs the way
Supabase's own REST (PostgREST) runs it: in a transaction, as role `anon` or `authenticated`, with
`request.jwt.claims` set to the caller's token claims, and with the table privileges Supabase grants
`anon` and `authenticated` by default (everything), so that only the policies stand between a caller
and the rows. Every statement's transaction is rolled back, so the cells of one test stay independent;
the arrangement is committed once per test by the role migrations use (a superuser, or on the
Supabase-shaped database `postgres`, which bypasses RLS). Runs on every database the suite checks.

SQL cannot say 403 or 404: a caller either sees/changes rows or not. UPDATE and DELETE that the
policies refuse affect 0 rows silently; an INSERT they refuse fails with insufficient_privilege (42501).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from localplus_common.db import Connection
from tests.test_rbac_matrix import ACTORS, KINDS, Scene, arrange, clean_up

SQL_ACTIONS: tuple[str, ...] = (
    "see_event",  # 1  select from events where id = $event: rows seen
    "update_event",  # 2  update events set title = ... where id = $event: rows affected
    "delete_event",  # 3  delete from events where id = $event: rows affected
    "see_participants",  # 4  select user_id from event_participants where event_id = $event
    "register",  # 5  insert into event_participants (event_id, user_id) values ($event, auth.uid())
    "register_other",  # 6  insert into event_participants (event_id, user_id) values ($event, $newcomer)
    "update_own",  # 7  update event_participants set status = 'interested' where user_id = auth.uid()
    "cancel_own",  # 8  update event_participants set status = 'cancelled' where user_id = auth.uid()
    "update_other_participant",  # 9  update event_participants set status = 'attended' where user_id = $attendee
    "delete_other_participant",  # 10 delete from event_participants where user_id = $attendee
    "see_permissions",  # 11 select user_id from event_permissions where event_id = $event
    "grant_permission",  # 12 insert into event_permissions (event_id, user_id, role) values ($event, $newcomer, ...)
    "revoke_permission",  # 13 delete from event_permissions where user_id = $grantee: rows affected
    "create_business_event",  # 14 insert into events (business_id, created_by, ...) values ($business, auth.uid(), ..)
)

Expect = int | str
OK, DENIED, DUPLICATE = "ok", "denied (42501)", "duplicate (23505)"  # inserts
ALL, OWN = "all rows", "own rows only"  # selects of participants and permissions

# fmt: off
# An unlisted event is readable by its id through the API only (CONTRACT §3): in SQL, people without a
# tie to it do not see it at all, so it cannot be listed (tests/test_hardening_sql.py).
# Columns numbered as in SQL_ACTIONS. Row counts for selects, updates and deletes; OK / DENIED /
# DUPLICATE for inserts, DENIED also for an update whose new row fails the policy's WITH CHECK.
# One's own registration needs a published event the caller can see (a private one only with a role
# or a registration), editors' and admins' too; editors and up may add anyone else to any event they
# edit. An already registered participant passes the policy and hits the primary key instead.
SQL_EXPECTED: dict[str, dict[str, tuple[Expect, ...]]] = {
        #            1  2  3  4    5          6       7       8  9  10  11   12      13  14
    "anonymous": {
        "public":   (1, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "unlisted": (0, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "private":  (0, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "draft":    (0, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
    },
    "stranger": {
        "public":   (1, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "unlisted": (0, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "private":  (0, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "draft":    (0, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
    },
    "participant": {
        "public":   (1, 0, 0, OWN, DUPLICATE, DENIED, 1,      1, 0, 0,  OWN, DENIED, 0,  DENIED),
        "unlisted": (1, 0, 0, OWN, DUPLICATE, DENIED, 1,      1, 0, 0,  OWN, DENIED, 0,  DENIED),
        "private":  (1, 0, 0, OWN, DUPLICATE, DENIED, 1,      1, 0, 0,  OWN, DENIED, 0,  DENIED),
        "draft":    (1, 0, 0, OWN, DENIED,    DENIED, DENIED, 1, 0, 0,  OWN, DENIED, 0,  DENIED),
    },
    "viewer": {
        "public":   (1, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "unlisted": (1, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "private":  (1, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "draft":    (1, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
    },
    "editor": {
        "public":   (1, 1, 0, ALL, OK,        OK,     0,      0, 1, 1,  ALL, DENIED, 0,  DENIED),
        "unlisted": (1, 1, 0, ALL, OK,        OK,     0,      0, 1, 1,  ALL, DENIED, 0,  DENIED),
        "private":  (1, 1, 0, ALL, OK,        OK,     0,      0, 1, 1,  ALL, DENIED, 0,  DENIED),
        "draft":    (1, 1, 0, ALL, DENIED,    OK,     0,      0, 1, 1,  ALL, DENIED, 0,  DENIED),
    },
    "owner": {
        "public":   (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  DENIED),
        "unlisted": (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  DENIED),
        "private":  (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  DENIED),
        "draft":    (1, 1, 1, ALL, DENIED,    OK,     0,      0, 1, 1,  ALL, OK,     1,  DENIED),
    },
    "creator": {
        "public":   (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  DENIED),
        "unlisted": (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  DENIED),
        "private":  (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  DENIED),
        "draft":    (1, 1, 1, ALL, DENIED,    OK,     0,      0, 1, 1,  ALL, OK,     1,  DENIED),
    },
    "expired": {
        "public":   (1, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "unlisted": (0, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "private":  (0, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "draft":    (0, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
    },
    "other_business_partner": {
        "public":   (1, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "unlisted": (0, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "private":  (0, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "draft":    (0, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
    },
    "business_owner": {
        "public":   (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  OK),
        "unlisted": (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  OK),
        "private":  (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  OK),
        "draft":    (1, 1, 1, ALL, DENIED,    OK,     0,      0, 1, 1,  ALL, OK,     1,  OK),
    },
    "business_editor": {
        "public":   (1, 1, 0, ALL, OK,        OK,     0,      0, 1, 1,  ALL, DENIED, 0,  OK),
        "unlisted": (1, 1, 0, ALL, OK,        OK,     0,      0, 1, 1,  ALL, DENIED, 0,  OK),
        "private":  (1, 1, 0, ALL, OK,        OK,     0,      0, 1, 1,  ALL, DENIED, 0,  OK),
        "draft":    (1, 1, 0, ALL, DENIED,    OK,     0,      0, 1, 1,  ALL, DENIED, 0,  OK),
    },
    "business_viewer": {
        "public":   (1, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "unlisted": (1, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "private":  (1, 0, 0, OWN, OK,        DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
        "draft":    (1, 0, 0, OWN, DENIED,    DENIED, 0,      0, 0, 0,  OWN, DENIED, 0,  DENIED),
    },
    "admin": {
        "public":   (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  OK),
        "unlisted": (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  OK),
        "private":  (1, 1, 1, ALL, OK,        OK,     0,      0, 1, 1,  ALL, OK,     1,  OK),
        "draft":    (1, 1, 1, ALL, DENIED,    OK,     0,      0, 1, 1,  ALL, OK,     1,  OK),
    },
}
# fmt: on

# PostgREST's setup of a request, preceded by Supabase's default table privileges (the shim's own
# grants are narrower; `test_anon_cannot_touch_the_tables_without_supabase_grants` covers those).
SUPABASE_DEFAULT_GRANTS = (
    "grant select, insert, update, delete on public.events, public.event_participants, public.event_permissions"
    " to anon, authenticated"
)
AS_CALLER = "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)"


def test_the_sql_table_covers_every_actor_kind_and_action() -> None:
    assert set(SQL_EXPECTED) == set(ACTORS)
    for actor, rows in SQL_EXPECTED.items():
        assert set(rows) == set(KINDS), actor
        for kind, row in rows.items():
            assert len(row) == len(SQL_ACTIONS), (actor, kind)


@pytest.fixture(scope="session")
async def sql_db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


def _rows(status: str) -> int:
    """`UPDATE 1` / `DELETE 0` -> the row count."""
    return int(status.rsplit(" ", 1)[1])


async def _statement(conn: Connection, scene: Scene, action: str) -> Expect | set[uuid.UUID]:
    """Run one action's statement as the caller; rows affected, rows seen, or how an insert ended."""
    event = scene.event_id
    match action:
        case "see_event":
            seen: int = await conn.fetchval("select count(*) from public.events where id = $1", event)
            return seen
        case "update_event":
            return await _write(conn, "update public.events set title = 'Changed in SQL' where id = $1", event)
        case "delete_event":
            return await _write(conn, "delete from public.events where id = $1", event)
        case "see_participants":
            rows = await conn.fetch("select user_id from public.event_participants where event_id = $1", event)
            return {row["user_id"] for row in rows}
        case "register":
            sql = "insert into public.event_participants (event_id, user_id) values ($1, auth.uid())"
            return await _insert(conn, sql, event)
        case "register_other":
            sql = "insert into public.event_participants (event_id, user_id) values ($1, $2)"
            return await _insert(conn, sql, event, scene.newcomer)
        case "update_own" | "cancel_own":
            status = "interested" if action == "update_own" else "cancelled"
            sql = "update public.event_participants set status = $2 where event_id = $1 and user_id = auth.uid()"
            return await _write(conn, sql, event, status)
        case "update_other_participant":
            sql = "update public.event_participants set status = 'attended' where event_id = $1 and user_id = $2"
            return await _write(conn, sql, event, scene.attendee)
        case "delete_other_participant":
            sql = "delete from public.event_participants where event_id = $1 and user_id = $2"
            return await _write(conn, sql, event, scene.attendee)
        case "see_permissions":
            rows = await conn.fetch("select user_id from public.event_permissions where event_id = $1", event)
            return {row["user_id"] for row in rows}
        case "grant_permission":
            sql = (
                "insert into public.event_permissions (event_id, user_id, role, granted_by)"
                " values ($1, $2, 'viewer', auth.uid())"
            )
            return await _insert(conn, sql, event, scene.newcomer)
        case "revoke_permission":
            sql = "delete from public.event_permissions where event_id = $1 and user_id = $2"
            return await _write(conn, sql, event, scene.grantee)
        case "create_business_event":
            sql = (
                "insert into public.events (business_id, created_by, title, starts_at, ends_at, timezone)"
                " values ($1, auth.uid(), 'Made in SQL', now() + interval '7 days',"
                " now() + interval '7 days 3 hours', 'Asia/Bangkok')"
            )
            return await _insert(conn, sql, scene.business_id)
    raise AssertionError(f"unknown action {action}")


async def _write(conn: Connection, sql: str, *args: Any) -> int | str:
    """Rows an UPDATE or DELETE affected; DENIED when a new row fails the policy's WITH CHECK."""
    try:
        return _rows(await conn.execute(sql, *args))
    except asyncpg.InsufficientPrivilegeError:
        return DENIED


async def _insert(conn: Connection, sql: str, *args: Any) -> str:
    # No RETURNING: PostgREST's default (return=minimal) does not read the new row back.
    try:
        await conn.execute(sql, *args)
    except asyncpg.InsufficientPrivilegeError:
        return DENIED
    except asyncpg.UniqueViolationError:
        return DUPLICATE
    return OK


@asynccontextmanager
async def _rolled_back(pool: asyncpg.Pool) -> AsyncIterator[Connection]:
    """A transaction that never commits, whatever happens inside it."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        finally:
            await transaction.rollback()


async def run_as_caller(pool: asyncpg.Pool, scene: Scene, action: str) -> Expect | set[uuid.UUID]:
    """One statement in its own transaction, as Supabase's REST would run it, then rolled back."""
    async with _rolled_back(pool) as conn:
        await conn.execute(SUPABASE_DEFAULT_GRANTS)
        role = "anon" if scene.actor is None else "authenticated"
        await conn.execute(AS_CALLER, role, json.dumps(scene.claims))
        return await _statement(conn, scene, action)


def _matches(scene: Scene, action: str, want: Expect, got: Expect | set[uuid.UUID]) -> bool:
    if want not in (ALL, OWN):
        return got == want
    everyone = set(scene.participants if action == "see_participants" else scene.permission_holders)
    return got == (everyone if want == ALL else everyone & {scene.actor})


@pytest.mark.parametrize(
    ("actor", "kind"), [pytest.param(actor, kind, id=f"{actor}-{kind}") for actor in ACTORS for kind in KINDS]
)
async def test_rls_matrix(sql_db: asyncpg.Pool, actor: str, kind: str) -> None:
    scene = await arrange(sql_db, actor, kind)
    try:
        wrong = []
        for action, want in zip(SQL_ACTIONS, SQL_EXPECTED[actor][kind], strict=True):
            got = await run_as_caller(sql_db, scene, action)
            if not _matches(scene, action, want, got):
                wrong.append(f"{actor}-{kind}-{action}: expected {want}, got {got}")
    finally:
        await clean_up(sql_db, scene)
    assert not wrong, "\n".join(wrong)


async def test_anon_cannot_touch_the_tables_without_supabase_grants(sql_db: asyncpg.Pool) -> None:
    """With only the migration's own grants, `anon` may read events and is refused everything else outright."""
    scene = await arrange(sql_db, "anonymous", "public")
    event = scene.event_id
    refused: list[tuple[str, list[Any]]] = [
        ("update public.events set title = 'x' where id = $1", [event]),
        ("delete from public.events where id = $1", [event]),
        (
            "insert into public.events (title, starts_at, ends_at, timezone) values ('x', now(), now() + '1h', 'UTC')",
            [],
        ),
        ("select * from public.event_participants where event_id = $1", [event]),
        ("insert into public.event_participants (event_id, user_id) values ($1, $2)", [event, scene.newcomer]),
        ("select * from public.event_permissions where event_id = $1", [event]),
        ("delete from public.event_permissions where event_id = $1", [event]),
    ]
    try:
        for sql, args in refused:
            async with _rolled_back(sql_db) as conn:
                await conn.execute(AS_CALLER, "anon", json.dumps(scene.claims))
                assert await conn.fetchval("select count(*) from public.events where id = $1", event) == 1
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql, *args)
    finally:
        await clean_up(sql_db, scene)


async def test_service_role_bypasses_the_policies(sql_db: asyncpg.Pool) -> None:
    """The backend's own role (CONTRACT §3: may do everything) sees and changes a draft it has no tie to."""
    scene = await arrange(sql_db, "anonymous", "draft")
    event = scene.event_id
    try:
        async with _rolled_back(sql_db) as conn:
            await conn.execute(AS_CALLER, "service_role", json.dumps({"role": "service_role"}))
            assert await conn.fetchval("select count(*) from public.events where id = $1", event) == 1
            participants = await conn.fetch("select user_id from public.event_participants where event_id = $1", event)
            assert {row["user_id"] for row in participants} == set(scene.participants)
            permissions = await conn.fetch("select user_id from public.event_permissions where event_id = $1", event)
            assert {row["user_id"] for row in permissions} == set(scene.permission_holders)
            assert await _write(conn, "update public.events set visibility = 'private' where id = $1", event) == 1
            assert await _write(conn, "delete from public.events where id = $1", event) == 1
    finally:
        await clean_up(sql_db, scene)


async def test_an_owners_own_registration_on_a_draft_can_only_be_cancelled(sql_db: asyncpg.Pool) -> None:
    """The owner's own registration follows the rule everyone's does (published events only), also
    when it dates from before the event went back to draft; leaving is always allowed."""
    scene = await arrange(sql_db, "creator", "draft")
    event = scene.event_id
    own = "update public.event_participants set status = $2 where event_id = $1 and user_id = auth.uid()"
    try:
        await sql_db.execute(
            "insert into public.event_participants (event_id, user_id, status) values ($1, $2, 'interested')",
            event,
            scene.actor,
        )
        for status in ("going", "interested", "waitlisted", "attended"):
            async with _rolled_back(sql_db) as conn:
                await conn.execute(SUPABASE_DEFAULT_GRANTS)
                await conn.execute(AS_CALLER, "authenticated", json.dumps(scene.claims))
                assert await _write(conn, own, event, status) == DENIED, status
        async with _rolled_back(sql_db) as conn:
            await conn.execute(SUPABASE_DEFAULT_GRANTS)
            await conn.execute(AS_CALLER, "authenticated", json.dumps(scene.claims))
            assert await _write(conn, own, event, "cancelled") == 1
            deleted = "delete from public.event_participants where event_id = $1 and user_id = auth.uid()"
            assert await _write(conn, deleted, event) == 1
    finally:
        await clean_up(sql_db, scene)
