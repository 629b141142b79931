"""The migration runner and the migrations themselves (CONTRACT §1, §3), on the embedded Postgres, the
machine's Postgres 15 and the Supabase-shaped Postgres 15, each test in a throwaway database created for it
(with the Supabase project's shape on the last) and dropped afterwards.

- applying twice is a no-op, and re-running the files themselves changes neither schema nor data;
- they apply on a Supabase-like database whose auth.users, businesses and partners already exist with
  extra columns and rows, which survive;
- an applied file that was edited afterwards stops the runner;
- two runners at once both succeed and apply every migration exactly once;
- a failing migration rolls back completely and is not recorded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from localplus_common.migrate import MIGRATIONS_DIR, REVISED, MigrationError, load_migrations, migrate
from tests.databases import Server

SCHEMAS = ["public", "auth", "localplus", "localplus_private"]
ALL_VERSIONS = [m.version for m in load_migrations()]


@pytest.fixture
async def fresh_db(server: Server) -> AsyncIterator[str]:
    """A new database on each server, empty but for a Supabase project's shape on supabase15 (the
    cluster's roles already exist, as on Supabase), as the URL migrations use there; dropped after."""
    name = f"lp_migrations_{uuid.uuid4().hex[:12]}"
    yield await server.create_database(name)
    await server.drop_database(name)


SCHEMA_SNAPSHOT = """
select 'relation ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' rls=' || c.relrowsecurity::text
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = any($1) and c.relkind in ('r', 'v', 'm', 'S', 'p')
union all
select 'column ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type
       || ' null=' || is_nullable || ' default=' || coalesce(column_default, '')
  from information_schema.columns where table_schema = any($1)
union all
select 'constraint ' || conrelid::regclass::text || '.' || conname || ' ' || pg_get_constraintdef(oid)
  from pg_constraint where connamespace in (select oid from pg_namespace where nspname = any($1))
union all
select 'index ' || schemaname || '.' || indexname || ' ' || indexdef from pg_indexes where schemaname = any($1)
union all
select 'policy ' || schemaname || '.' || tablename || '.' || policyname || ' ' || cmd::text || ' ' || roles::text
       || ' using=' || coalesce(qual, '') || ' check=' || coalesce(with_check, '')
  from pg_policies where schemaname = any($1)
union all
select 'function ' || pg_get_functiondef(p.oid)
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where n.nspname = any($1) and p.prokind = 'f'
union all
select 'trigger ' || pg_get_triggerdef(t.oid)
  from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = any($1) and not t.tgisinternal
union all
select 'grant ' || table_schema || '.' || table_name || ' ' || grantee || ' ' || privilege_type
  from information_schema.role_table_grants where table_schema = any($1)
"""


async def schema_of(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return sorted(row[0] for row in await conn.fetch(SCHEMA_SNAPSHOT, SCHEMAS))
    finally:
        await conn.close()


async def recorded(url: str) -> dict[str, int]:
    """Version -> how many times localplus.schema_migrations records it."""
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("select to_regclass('localplus.schema_migrations')") is None:
            return {}
        rows = await conn.fetch("select version, count(*) as n from localplus.schema_migrations group by version")
        return {row["version"]: row["n"] for row in rows}
    finally:
        await conn.close()


async def test_applying_twice_is_a_no_op(fresh_db: str) -> None:
    assert await migrate(fresh_db) == ALL_VERSIONS
    schema = await schema_of(fresh_db)
    assert any(line.startswith("relation public.events ") for line in schema)
    assert await migrate(fresh_db) == []
    assert await schema_of(fresh_db) == schema
    assert await recorded(fresh_db) == dict.fromkeys(ALL_VERSIONS, 1)


async def test_the_files_themselves_can_run_again_without_changing_schema_or_data(fresh_db: str) -> None:
    """Each file is safe on a database that already has what it creates (IF NOT EXISTS, no drops of data)."""
    await migrate(fresh_db)
    schema = await schema_of(fresh_db)
    conn = await asyncpg.connect(fresh_db)
    try:
        user_id = uuid.uuid4()
        await conn.execute("insert into auth.users (id, email) values ($1, 'again@example.test')", user_id)
        event_id = await conn.fetchval(
            "insert into public.events (created_by, title, starts_at, ends_at, timezone, capacity) "
            "values ($1, 'Kept', now() + interval '1 day', now() + interval '2 days', 'Asia/Bangkok', 5) returning id",
            user_id,
        )
        await conn.execute(
            "insert into public.event_participants (event_id, user_id) values ($1, $2)", event_id, user_id
        )
        await conn.execute(
            "insert into public.ticket_types (event_id, name, currency, inventory) values ($1, 'GA', 'THB', 10)",
            event_id,
        )
        data_query = """
            select (select json_agg(e order by id) from public.events e)::text,
                   (select json_agg(p order by user_id) from public.event_participants p)::text,
                   (select json_agg(t order by id) from public.ticket_types t)::text,
                   (select json_agg(u order by id) from auth.users u)::text
        """
        data = await conn.fetchrow(data_query)
        for migration in load_migrations():
            async with conn.transaction():
                await conn.execute(migration.sql)
        assert await conn.fetchrow(data_query) == data
    finally:
        await conn.close()
    assert await schema_of(fresh_db) == schema


SUPABASE_LIKE = """
-- What a real Supabase project, with LocalPlus's own tables, already has before our first migration.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin noinherit; end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

create schema auth;
grant usage on schema auth to anon, authenticated, service_role;

create table auth.users (
  instance_id uuid,
  id uuid not null primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz,
  updated_at timestamptz,
  phone text unique default null,
  phone_confirmed_at timestamptz,
  banned_until timestamptz,
  is_anonymous boolean not null default false
);

create function auth.uid() returns uuid language sql stable as $f$
  -- supabase original
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$f$;
create function auth.role() returns text language sql stable as $f$
  -- supabase original
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$f$;
create function auth.jwt() returns jsonb language sql stable as $f$
  -- supabase original
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$f$;
create function auth.email() returns text language sql stable as $f$
  -- supabase original
  select nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'
$f$;

create table public.businesses (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  slug text not null unique,
  owner_id uuid references auth.users (id),
  created_at timestamptz not null default now()
);

create table public.partners (
  id uuid primary key default gen_random_uuid(),
  business_id uuid references public.businesses (id) on delete cascade,
  user_id uuid references auth.users (id) on delete cascade,
  role text not null check (role in ('owner', 'editor', 'viewer')),
  invited_by uuid references auth.users (id),
  created_at timestamptz not null default now(),
  unique (business_id, user_id)
);
"""

OWNER_ID = uuid.UUID("11111111-1111-4111-8111-111111111111")
EDITOR_ID = uuid.UUID("22222222-2222-4222-8222-222222222222")
STRANGER_ID = uuid.UUID("33333333-3333-4333-8333-333333333333")
BUSINESS_ID = uuid.UUID("44444444-4444-4444-8444-444444444444")

EXISTING_ROWS = """
insert into auth.users (id, aud, role, email, phone, raw_app_meta_data, created_at) values
  ('11111111-1111-4111-8111-111111111111', 'authenticated', 'authenticated', 'owner@cafe.example', '+66800000001',
   '{"provider": "email"}', now() - interval '1 year'),
  ('22222222-2222-4222-8222-222222222222', 'authenticated', 'authenticated', 'editor@cafe.example', '+66800000002',
   '{"provider": "phone"}', now() - interval '6 months'),
  ('33333333-3333-4333-8333-333333333333', 'authenticated', 'authenticated', 'someone@else.example', null,
   null, now());
insert into public.businesses (id, name, slug, owner_id) values
  ('44444444-4444-4444-8444-444444444444', 'Riverside Café', 'riverside-cafe', '11111111-1111-4111-8111-111111111111'),
  (gen_random_uuid(), 'Night Market', 'night-market', null);
insert into public.partners (business_id, user_id, role, invited_by) values
  ('44444444-4444-4444-8444-444444444444', '11111111-1111-4111-8111-111111111111', 'owner', null),
  ('44444444-4444-4444-8444-444444444444', '22222222-2222-4222-8222-222222222222', 'editor',
   '11111111-1111-4111-8111-111111111111');
"""

EXISTING_DATA = """
select (select json_agg(u order by id) from auth.users u)::text as users,
       (select json_agg(b order by slug) from public.businesses b)::text as businesses,
       (select json_agg(p order by user_id) from public.partners p)::text as partners
"""


async def create_business_event(conn: asyncpg.Connection, user_id: uuid.UUID) -> uuid.UUID:
    """Insert an event for the business as `user_id`, through row-level security like a request would."""
    async with conn.transaction():
        await conn.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
            f'{{"sub": "{user_id}", "role": "authenticated", "aud": "authenticated"}}',
        )
        event_id: uuid.UUID = await conn.fetchval(
            "insert into public.events (created_by, business_id, title, starts_at, ends_at, timezone) "
            "values ($1, $2, 'Latte art night', now() + interval '1 day', now() + interval '1 day 2 hours', "
            "'Asia/Bangkok') returning id",
            user_id,
            BUSINESS_ID,
        )
        return event_id


async def rank_as(conn: asyncpg.Connection, user_id: uuid.UUID, event_id: uuid.UUID) -> int:
    async with conn.transaction():
        await conn.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
            f'{{"sub": "{user_id}", "role": "authenticated", "aud": "authenticated"}}',
        )
        rank: int = await conn.fetchval("select localplus_private.event_role_rank($1)", event_id)
        return rank


async def test_applies_on_an_existing_supabase_like_database(server: Server, fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        if not server.supabase:  # there the database already has all of it, made as Supabase makes it
            await conn.execute(SUPABASE_LIKE)
        await conn.execute(EXISTING_ROWS)
        data_before = await conn.fetchrow(EXISTING_DATA)
        users_before = await conn.fetchval("select count(*) from auth.users")
        functions_query = (
            "select p.proname, p.proowner::regrole::text, pg_get_functiondef(p.oid) from pg_proc p "
            "where p.pronamespace = 'auth'::regnamespace order by 1"
        )
        auth_functions = await conn.fetch(functions_query)
    finally:
        await conn.close()

    assert await migrate(fresh_db) == ALL_VERSIONS
    assert await migrate(fresh_db) == []

    conn = await asyncpg.connect(fresh_db)
    try:
        # The rows and the extra columns survive; Supabase's own functions are left alone.
        assert await conn.fetchrow(EXISTING_DATA) == data_before
        columns = await conn.fetch(
            "select table_schema || '.' || table_name || '.' || column_name from information_schema.columns "
            "where (table_schema, table_name) in (('auth', 'users'), ('public', 'businesses'), ('public', 'partners'))"
        )
        names = {row[0] for row in columns}
        assert {"auth.users.phone", "auth.users.is_anonymous", "public.businesses.slug"} <= names
        assert {"public.businesses.owner_id", "public.partners.invited_by"} <= names
        assert await conn.fetch(functions_query) == auth_functions
        if server.supabase:
            assert {row[1] for row in auth_functions} == {"supabase_auth_admin"}
        else:
            assert all("supabase original" in row[2] for row in auth_functions)

        # And the engine works on top of them: RLS consults the existing partners rows.
        event_id = await create_business_event(conn, EDITOR_ID)
        assert await rank_as(conn, OWNER_ID, event_id) == 4  # owner partner of the business, not the creator
        assert await rank_as(conn, STRANGER_ID, event_id) == 0
        assert await conn.fetchval("select business_id from public.events where id = $1", event_id) == BUSINESS_ID
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await create_business_event(conn, STRANGER_ID)
        await conn.execute(
            "insert into public.event_participants (event_id, user_id) values ($1, $2)", event_id, STRANGER_ID
        )
        # Deleting a business the old way still cascades through the new tables.
        await conn.execute("delete from public.businesses where id = $1", BUSINESS_ID)
        assert await conn.fetchval("select count(*) from public.events where id = $1", event_id) == 0
        assert await conn.fetchval("select count(*) from auth.users") == users_before
    finally:
        await conn.close()


def write_migration(directory: Path, version: str, name: str, sql: str) -> Path:
    path = directory / f"{version}_{name}.sql"
    path.write_text(sql)
    return path


async def test_an_applied_migration_edited_afterwards_stops_the_runner(fresh_db: str, tmp_path: Path) -> None:
    first = write_migration(
        tmp_path,
        "20990101000000",
        "probe",
        "create table public.migration_probe (id int primary key);\ninsert into public.migration_probe values (1);\n",
    )
    write_migration(tmp_path, "20990101000100", "probe_note", "alter table public.migration_probe add note text;\n")
    assert await migrate(fresh_db, tmp_path) == ["20990101000000", "20990101000100"]

    first.write_text(first.read_text() + "insert into public.migration_probe values (2);\n")
    write_migration(tmp_path, "20990101000200", "later", "create table public.migration_later (id int);\n")
    with pytest.raises(MigrationError, match=r"20990101000000_probe\.sql"):
        await migrate(fresh_db, tmp_path)

    conn = await asyncpg.connect(fresh_db)
    try:
        assert [row[0] for row in await conn.fetch("select id from public.migration_probe")] == [1]
        assert await conn.fetchval("select to_regclass('public.migration_later')") is None
    finally:
        await conn.close()
    assert await recorded(fresh_db) == {"20990101000000": 1, "20990101000100": 1}

    # Even a whitespace-only edit counts: the checksum is over the file's bytes.
    first.write_text(first.read_text().replace("insert into public.migration_probe values (2);\n", "") + "\n")
    with pytest.raises(MigrationError):
        await migrate(fresh_db, tmp_path)


async def test_a_database_that_applied_a_revised_file_is_up_to_date(fresh_db: str) -> None:
    """A file revised in place (REVISED) keeps databases that applied its earlier text working."""
    assert await migrate(fresh_db) == ALL_VERSIONS
    [(version, earlier)] = [(version, checksum) for version, checksums in REVISED.items() for checksum in checksums]
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute("update localplus.schema_migrations set checksum = $2 where version = $1", version, earlier)
        schema = await schema_of(fresh_db)
        assert await migrate(fresh_db) == []
        current = next(m.checksum for m in load_migrations() if m.version == version)
        assert await conn.fetchval("select checksum from localplus.schema_migrations where version = $1", version) == (
            current
        )
        assert await schema_of(fresh_db) == schema
    finally:
        await conn.close()


@pytest.mark.parametrize("runners", [2, 4])
async def test_runners_started_together_apply_each_migration_once(fresh_db: str, runners: int) -> None:
    results = await asyncio.gather(*(migrate(fresh_db) for _ in range(runners)))
    applied = [version for result in results for version in result]
    assert sorted(applied) == ALL_VERSIONS  # every migration applied, by exactly one runner
    assert sorted(len(result) for result in results) == [0] * (runners - 1) + [len(ALL_VERSIONS)]
    assert await recorded(fresh_db) == dict.fromkeys(ALL_VERSIONS, 1)
    assert await migrate(fresh_db) == []


BROKEN = """
create table public.half_done (id int primary key);
insert into public.half_done values (1);
alter table public.events add column half_done_note text;
create index half_done_idx on public.events (title);
create or replace function public.half_done() returns int language sql as $$ select 1 $$;
insert into auth.users (id, email) values ('55555555-5555-4555-8555-555555555555', 'half@done.example');
select 1 / 0;
"""


async def test_a_failing_migration_rolls_back_completely(fresh_db: str, tmp_path: Path) -> None:
    for source in sorted(MIGRATIONS_DIR.glob("*.sql")):
        (tmp_path / source.name).write_text(source.read_text())
    broken = write_migration(tmp_path, "20990101000000", "broken", BROKEN)
    write_migration(tmp_path, "20990101000100", "after_broken", "create table public.after_broken (id int);\n")

    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(fresh_db, tmp_path)

    # The migrations before it are applied and recorded; nothing of the broken one (or after it) remains.
    assert await recorded(fresh_db) == dict.fromkeys(ALL_VERSIONS, 1)
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("select to_regclass('public.half_done')") is None
        assert await conn.fetchval("select to_regclass('public.half_done_idx')") is None
        assert await conn.fetchval("select to_regclass('public.after_broken')") is None
        assert await conn.fetchval("select to_regprocedure('public.half_done()')") is None
        column = await conn.fetchval(
            "select count(*) from information_schema.columns where table_name = 'events' and column_name = $1",
            "half_done_note",
        )
        assert column == 0
        half_done_user = "select count(*) from auth.users where id = '55555555-5555-4555-8555-555555555555'"
        assert await conn.fetchval(half_done_user) == 0
    finally:
        await conn.close()

    # The lock was released and the file was never recorded, so fixing it is allowed and it applies.
    broken.write_text(BROKEN.replace("select 1 / 0;", ""))
    assert await migrate(fresh_db, tmp_path) == ["20990101000000", "20990101000100"]
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("select count(*) from public.half_done") == 1
    finally:
        await conn.close()


async def test_a_badly_named_file_is_refused_before_anything_runs(fresh_db: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "20990101000000", "fine", "create table public.fine (id int);\n")
    (tmp_path / "2099_oops.sql").write_text("create table public.oops (id int);\n")
    with pytest.raises(MigrationError, match=r"2099_oops\.sql"):
        await migrate(fresh_db, tmp_path)
    assert await recorded(fresh_db) == {}
