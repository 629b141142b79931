"""The database as production reaches it (Phase 4): through a real PgBouncer in transaction mode (as
behind Supabase's pooler), and with reads routed to a real streaming replica (DATABASE_READ_URL).

PgBouncer 1.18 keeps no prepared statements in transaction mode: the services run with
DB_STATEMENT_CACHE_SIZE=0 there, and the first test shows why. Row-level security must hold through
it too: the request context (role and claims) is transaction-local, so one client's caller never
leaks into another's transaction on the same server connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.auth import ANONYMOUS, Identity
from localplus_common.db import Database
from localplus_common.services import EVENTS
from localplus_dev.pgbouncer import PgBouncer
from localplus_dev.postgres import PostgresServer, free_port
from localplus_dev.processes import Supervisor
from localplus_dev.stack import Stack
from tests.service_process import running_service
from tests.sql_callers import claims_of, new_event, new_user
from tests.support import User, create_user

SERVICE_POOL = 10
# Fewer server connections than the service's pool holds: transaction pooling shuffles them.
PGBOUNCER_POOL = 4


@pytest.fixture(scope="module")
def pgbouncer(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    assert stack.postgres is not None
    run = Path(tmp_path_factory.mktemp("pgbouncer"))
    supervisor = Supervisor(run)
    bouncer = PgBouncer(run, supervisor, postgres_port=stack.postgres.port, port=free_port(), pool_size=PGBOUNCER_POOL)
    bouncer.start()
    yield bouncer
    supervisor.stop_all()


def service_env(stack: Stack, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "LOCALPLUS_ENV": "dev",
        "DATABASE_URL": database_url,
        "DB_POOL_MAX": str(SERVICE_POOL),
        **extra,
    }


async def burst(address: str, draft_id: str, stranger: User, owner: User, rounds: int = 30) -> list[str]:
    """Concurrent reads of a draft as anonymous, a stranger and its owner; what each answered."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = events_pb2_grpc.EventsServiceStub(channel)

        async def read(metadata: list[tuple[str, str]]) -> str:
            try:
                await stub.GetEvent(events_pb2.GetEventRequest(id=draft_id), metadata=metadata, timeout=20)
                return "seen"
            except grpc.aio.AioRpcError as error:
                return error.code().name

        calls = [read(who) for _ in range(rounds) for who in ([], stranger.metadata, owner.metadata)]
        return await asyncio.gather(*calls)


async def test_through_pgbouncer_the_services_need_no_prepared_statements_and_rls_holds(
    stack: Stack, db: asyncpg.Pool, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    owner, stranger = await create_user(db), await create_user(db)
    draft = await new_event(db, owner.id, status="draft")
    expected = ["NOT_FOUND", "NOT_FOUND", "seen"] * 30

    env = service_env(stack, pgbouncer.url, DB_STATEMENT_CACHE_SIZE="0")
    with running_service(EVENTS, env, tmp_path / "events.log") as address:
        assert await burst(address, str(draft), stranger, owner) == expected

    # With asyncpg's statement cache on, statements prepared on one server connection are missing on
    # the next: the setting is what makes the pooler work at all.
    env = service_env(stack, pgbouncer.url, DB_STATEMENT_CACHE_SIZE="100")
    with running_service(EVENTS, env, tmp_path / "events-cached.log") as address:
        answers = await burst(address, str(draft), stranger, owner)
    assert {"INTERNAL", "UNAVAILABLE"} & set(answers), answers
    # Even then nobody saw what they may not: a failure is a failure, never another caller's rows.
    assert all(a != "seen" for a, b in zip(answers, expected, strict=True) if b != "seen")


async def test_the_request_context_never_leaks_across_transactions_through_pgbouncer(
    db: asyncpg.Pool, pgbouncer: PgBouncer
) -> None:
    owner, stranger = await new_user(db), await new_user(db)
    draft = await new_event(db, owner, status="draft")
    pool = await asyncpg.create_pool(
        pgbouncer.url, min_size=SERVICE_POOL, max_size=SERVICE_POOL, statement_cache_size=0
    )
    assert pool is not None
    database = Database(pool)
    callers = {
        "anonymous": ANONYMOUS,
        "stranger": Identity("authenticated", stranger, claims_of(stranger)),
        "owner": Identity("authenticated", owner, claims_of(owner)),
    }

    async def seen_by(name: str) -> tuple[str, int]:
        count: int = await database.run(
            lambda conn: conn.fetchval("select count(*) from public.events where id = $1", draft), callers[name]
        )
        return name, count

    try:
        results = await asyncio.gather(*(seen_by(name) for _ in range(50) for name in callers))
        # And outside any request context, on whatever server connection comes next, no role lingers.
        leftover = await pool.fetchval(
            "select current_user || ' ' || coalesce(current_setting('request.jwt.claims', true), '')"
        )
    finally:
        await pool.close()
    assert {(name, count) for name, count in results} == {("anonymous", 0), ("stranger", 0), ("owner", 1)}
    assert leftover == "postgres "


@pytest.fixture(scope="module")
def replica(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    assert stack.postgres is not None
    base = Path(tmp_path_factory.mktemp("replica"))
    supervisor = Supervisor(base / "run")
    server = PostgresServer(base / "data", supervisor, port=free_port(), name="replica")
    server.start_as_replica_of(stack.postgres)
    yield server
    supervisor.stop_all()


@pytest.fixture
async def replica_admin(replica: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(replica.url)
    yield conn
    await conn.execute("select pg_wal_replay_resume()")
    await conn.close()


async def test_reads_go_to_the_replica_and_callers_see_their_own_writes(
    stack: Stack, db: asyncpg.Pool, replica: PostgresServer, replica_admin: asyncpg.Connection, tmp_path: Path
) -> None:
    owner, fan = await create_user(db), await create_user(db)
    assert await replica_admin.fetchval("select pg_is_in_recovery()")
    await replica_admin.execute("select pg_wal_replay_pause()")
    # Written on the primary while the replica stands still.
    event = str(await new_event(db, owner.id, capacity=10))

    env = service_env(stack, stack.database_url, DATABASE_READ_URL=replica.url)
    with running_service(EVENTS, env, tmp_path / "events.log") as address:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = events_pb2_grpc.EventsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as lagging:
                await stub.GetEvent(events_pb2.GetEventRequest(id=event), timeout=10)
            assert lagging.value.code() == grpc.StatusCode.NOT_FOUND  # an anonymous read: the replica
            as_owner = await stub.GetEvent(events_pb2.GetEventRequest(id=event), metadata=owner.metadata, timeout=10)
            assert as_owner.id == event  # a signed-in read: the primary

            registered = await stub.CreateParticipant(
                events_pb2.CreateParticipantRequest(event_id=event), metadata=fan.metadata, timeout=10
            )
            assert registered.status == events_pb2.PARTICIPANT_STATUS_GOING
            mine = await stub.ListMyEvents(events_pb2.ListMyEventsRequest(), metadata=fan.metadata, timeout=10)
            assert [item.event.id for item in mine.events] == [event]  # the fan's own write, at once

            await replica_admin.execute("select pg_wal_replay_resume()")
            for _ in range(100):
                try:
                    assert (await stub.GetEvent(events_pb2.GetEventRequest(id=event), timeout=10)).id == event
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the replica never caught up")
