"""The Supabase-shaped database (`supabase_postgres`, tests/supabase/*.sql) really has the shape of a hosted
Supabase project, so it cannot quietly turn into one more bare Postgres; and the engine's migrations,
run there as `postgres`, keep LocalPlus's existing tables and rows and are a no-op the second time."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from localplus_common.migrate import load_migrations, migrate
from tests.databases import Server

SEEDED_BUSINESS = uuid.UUID("b0000000-0000-4000-8000-000000000001")
SEEDED_USER = uuid.UUID("a0000000-0000-4000-8000-000000000001")
EXISTING_ROWS = """
select (select json_agg(u order by id) from auth.users u where id = $1)::text,
       (select json_agg(b order by id) from public.businesses b where id = $2)::text,
       (select json_agg(p order by id) from public.partners p where business_id = $2)::text
"""


@pytest.fixture
async def conn(supabase_postgres: Server) -> AsyncIterator[asyncpg.Connection]:
    """A connection as `postgres`, like the migrations' and the services'."""
    connection = await asyncpg.connect(supabase_postgres.url)
    yield connection
    await connection.close()


async def test_postgres_is_no_superuser_but_bypasses_rls_and_may_become_the_api_roles(
    conn: asyncpg.Connection,
) -> None:
    roles = {
        row["rolname"]: row
        for row in await conn.fetch(
            "select rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolcanlogin, rolinherit, "
            "coalesce(rolconfig, '{}') as config from pg_roles"
        )
    }
    postgres = roles["postgres"]
    assert (postgres["rolsuper"], postgres["rolbypassrls"]) == (False, True)
    assert postgres["rolcreaterole"] and postgres["rolcreatedb"] and postgres["rolcanlogin"]
    assert [name for name, role in roles.items() if role["rolsuper"]] == ["supabase_admin"]
    for api_role, settings in (("anon", ["statement_timeout=3s"]), ("authenticated", ["statement_timeout=8s"])):
        assert roles[api_role]["config"] == settings
    for api_role in ("anon", "authenticated", "service_role"):
        role = roles[api_role]
        assert not role["rolcanlogin"] and role["rolinherit"]
        assert role["rolbypassrls"] == (api_role == "service_role")
        for member in ("postgres", "authenticator"):
            assert await conn.fetchval("select pg_has_role($1, $2, 'member')", member, api_role)
    assert (roles["authenticator"]["rolcanlogin"], roles["authenticator"]["rolinherit"]) == (True, False)
    assert not await conn.fetchval("select pg_has_role('postgres', 'supabase_auth_admin', 'member')")


async def test_what_postgres_creates_in_public_is_granted_to_the_api_roles(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("create table public.shape_probe (id bigserial primary key)")
        await conn.execute("create function public.shape_probe_fn() returns int language sql as 'select 1'")
        for role in ("anon", "authenticated", "service_role"):
            for privilege in ("select", "insert", "update", "delete", "truncate", "references", "trigger"):
                assert await conn.fetchval("select has_table_privilege($1, 'public.shape_probe', $2)", role, privilege)
            assert await conn.fetchval("select has_sequence_privilege($1, 'public.shape_probe_id_seq', 'usage')", role)
            # Granted by name, not just through PUBLIC's default EXECUTE.
            granted = await conn.fetchval(
                "select exists (select 1 from pg_proc p, aclexplode(p.proacl) a where p.oid = $1::regprocedure "
                "and a.grantee = $2::regrole and a.privilege_type = 'EXECUTE')",
                "public.shape_probe_fn()",
                role,
            )
            assert granted, role
        await conn.execute("drop function public.shape_probe_fn()")
        await conn.execute("drop table public.shape_probe")


async def test_extensions_live_in_their_own_schema_on_postgres_search_path(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "select extname, extnamespace::regnamespace::text as schema from pg_extension "
        "where extname in ('pg_trgm', 'pgcrypto', 'uuid-ossp')"
    )
    assert {row["extname"]: row["schema"] for row in rows} == dict.fromkeys(
        ["pg_trgm", "pgcrypto", "uuid-ossp"], "extensions"
    )
    assert await conn.fetchval("show search_path") == '"$user", public, extensions'
    assert await conn.fetchval("select similarity('jazz festival', 'jaz festval')") > 0.3


async def test_auth_belongs_to_the_auth_server_and_reads_both_claim_settings(conn: asyncpg.Connection) -> None:
    owners = await conn.fetch(
        "select p.proname, p.proowner::regrole::text as owner from pg_proc p "
        "where p.pronamespace = 'auth'::regnamespace and p.proname in ('uid', 'role', 'email', 'jwt')"
    )
    assert {row["proname"]: row["owner"] for row in owners} == dict.fromkeys(
        ["uid", "role", "email", "jwt"], "supabase_auth_admin"
    )
    assert await conn.fetchval("select relowner::regrole::text from pg_class where oid = 'auth.users'::regclass") == (
        "supabase_auth_admin"
    )
    columns = await conn.fetch(
        "select column_name, is_nullable, column_default, is_generated from information_schema.columns "
        "where table_schema = 'auth' and table_name = 'users'"
    )
    assert len(columns) == 35
    required = [
        row["column_name"]
        for row in columns
        if row["is_nullable"] == "NO" and row["column_default"] is None and row["is_generated"] == "NEVER"
    ]
    assert required == ["id"]

    sub, legacy_sub = uuid.uuid4(), uuid.uuid4()
    claims = json.dumps({"sub": str(sub), "role": "authenticated", "email": "new@example.test"})
    async with conn.transaction():
        await conn.execute("select set_config('role', 'authenticated', true)")
        await conn.execute("select set_config('request.jwt.claims', $1, true)", claims)
        assert await conn.fetchval("select auth.uid()") == sub
        assert await conn.fetchval("select auth.role()") == "authenticated"
        assert await conn.fetchval("select auth.email()") == "new@example.test"
        assert await conn.fetchval("select auth.jwt() ->> 'sub'") == str(sub)
    async with conn.transaction():  # what PostgREST before v9 set, one setting per claim
        await conn.execute("select set_config('request.jwt.claim.sub', $1, true)", str(legacy_sub))
        await conn.execute("select set_config('request.jwt.claim.role', 'anon', true)")
        await conn.execute("select set_config('request.jwt.claim.email', 'old@example.test', true)")
        assert await conn.fetchval("select auth.uid()") == legacy_sub
        assert await conn.fetchval("select auth.role()") == "anon"
        assert await conn.fetchval("select auth.email()") == "old@example.test"
    assert await conn.fetchval("select auth.uid()") is None


async def test_localplus_tables_keep_their_columns_and_rows_and_a_second_migration_is_a_no_op(
    supabase_postgres: Server, conn: asyncpg.Connection
) -> None:
    """The session's database was migrated once already; its pre-existing rows are still there."""
    rows = await conn.fetchrow(EXISTING_ROWS, SEEDED_USER, SEEDED_BUSINESS)
    assert rows is not None
    [user], [business], [partner] = (json.loads(column) for column in rows)
    assert user["email"] == "owner@old-town-bakery.example"
    assert business["slug"] == "old-town-bakery"  # columns the engine does not know
    assert (partner["role"], partner["invited_by"]) == ("owner", None)
    assert await conn.fetchval("select count(*) from localplus.schema_migrations") == len(load_migrations())
    owner = "select relowner::regrole::text from pg_class where oid = 'public.businesses'::regclass"
    assert await conn.fetchval(owner) == "postgres"

    assert await migrate(supabase_postgres.url) == []
    assert await conn.fetchrow(EXISTING_ROWS, SEEDED_USER, SEEDED_BUSINESS) == rows


async def test_migrations_apply_where_postgres_may_not_create_in_auth(supabase_postgres: Server) -> None:
    """As on Supabase since April 2025 (20250421084701_revoke_admin_roles_from_postgres)."""
    name = f"lp_auth_locked_{uuid.uuid4().hex[:12]}"
    url = await supabase_postgres.create_database(name)
    try:
        conn = await asyncpg.connect(url)
        try:
            assert not await conn.fetchval("select has_schema_privilege('auth', 'CREATE')")
        finally:
            await conn.close()
        assert await migrate(url) == [migration.version for migration in load_migrations()]
    finally:
        await supabase_postgres.drop_database(name)
