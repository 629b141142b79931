"""Session fixtures: the real stack (embedded Postgres, the three gRPC services, Envoy,
localstripe) starts once per test session on free ports, beside any running `make up`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest

from localplus_common.config import DEV_JWT_SECRET, Settings
from localplus_common.db import Database, create_pool
from localplus_common.migrate import migrate
from localplus_dev.postgres import PostgresServer, free_port
from localplus_dev.processes import Supervisor
from localplus_dev.stack import Stack, StackConfig
from tests.databases import SERVERS, Server, shape_like_supabase
from tests.support import User, create_user


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(StackConfig.isolated(Path(tmp_path_factory.mktemp("stack"))))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
async def db(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """A superuser pool for arranging data (users, businesses, partners) behind the API's back."""
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=5)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def service_db(stack: Stack) -> AsyncIterator[Database]:
    """A pool made like the services' (their codecs, statement cache), on the stack's database: for a
    use case or a background job's work run in a test's own process."""
    config = Settings(
        database_url=stack.database_url,
        database_read_url="",
        jwt_secret=DEV_JWT_SECRET,
        jwks="",
        addresses={},
        db_pool_max=8,
        db_statement_cache_size=100,
    )
    pool = await create_pool(config)
    yield Database(pool)
    await pool.close()


@pytest.fixture(scope="session")
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """JSON over the Envoy gateway, as the apps call it."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, limits=limits) as client:
        yield client


@pytest.fixture(scope="session")
async def gateway_channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    """Native gRPC through the gateway."""
    async with grpc.aio.insecure_channel(stack.gateway_url.removeprefix("http://")) as channel:
        yield channel


@pytest.fixture(scope="session")
async def events_channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    """Native gRPC straight to the events service, as an internal caller would."""
    async with grpc.aio.insecure_channel(stack.address("events")) as channel:
        yield channel


@pytest.fixture
async def user(db: asyncpg.Pool) -> User:
    return await create_user(db)


@pytest.fixture
async def other_user(db: asyncpg.Pool) -> User:
    return await create_user(db)


@pytest.fixture
async def admin(db: asyncpg.Pool) -> User:
    return await create_user(db, admin=True)


def _scratch_postgres(base: Path, name: str, superuser: str = "postgres") -> tuple[PostgresServer, Supervisor]:
    """A throwaway cluster of the machine's Postgres 15 (Supabase's major version), started."""
    supervisor = Supervisor(base / "run")
    server = PostgresServer(
        base / "data",
        supervisor,
        port=free_port(),
        flavour="system15",
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
        name=name,
        superuser=superuser,
    )
    server.start()
    return server, supervisor


@pytest.fixture(scope="session")
def system_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Postgres 15, bare (`postgres` is its superuser), migrated, as a database URL."""
    server, supervisor = _scratch_postgres(Path(tmp_path_factory.mktemp("pg15")), "postgres15")
    asyncio.run(migrate(server.url))
    yield server.url
    supervisor.stop_all()


@pytest.fixture(scope="session")
def supabase_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The machine's Postgres 15 shaped like a hosted Supabase project (tests/supabase/*.sql) and
    migrated as `postgres`, the role migrations and the services use there."""
    server, supervisor = _scratch_postgres(Path(tmp_path_factory.mktemp("supabase15")), "supabase15", "supabase_admin")
    supabase = Server(server.url_for("postgres"), server.url, supabase=True)

    async def shape_and_migrate() -> None:
        await shape_like_supabase(supabase.admin_url)
        await migrate(supabase.url)

    asyncio.run(shape_and_migrate())
    yield supabase
    supervisor.stop_all()


def _server_named(request: pytest.FixtureRequest, name: str) -> Server:
    if name == "embedded":
        url: str = request.getfixturevalue("stack").database_url
        return Server(url, url)
    if name == "system15":
        url = request.getfixturevalue("system_postgres")
        return Server(url, url)
    supabase: Server = request.getfixturevalue("supabase_postgres")
    return supabase


@pytest.fixture(scope="session", params=SERVERS)
def server(request: pytest.FixtureRequest) -> Server:
    """Each Postgres server the suite checks SQL-level behaviour on, its `postgres` database migrated."""
    return _server_named(request, request.param)


@pytest.fixture(scope="session", params=SERVERS)
def database_url(request: pytest.FixtureRequest) -> str:
    """Each migrated database the suite checks SQL-level behaviour on, as the role migrations use:
    a superuser on a bare Postgres, `postgres` (BYPASSRLS, a member of the API roles) on Supabase."""
    return _server_named(request, request.param).url
