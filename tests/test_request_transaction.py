"""The request transaction of Database.run: its start and the caller travel in one round trip, and
row-level security still decides what each caller sees.

The BEGIN and the request context (role, claims, the event named by id) go as one simple-protocol
message ahead of the work, never inside the work's first statement: row-level security is decided
when a statement is planned, as whoever the session is then. So the draft below is read by its owner
first, which leaves the use case's statement prepared (asyncpg's statement cache is on) and planned for
the owner; anonymous callers and strangers then run that very statement and must still not see it.
The same holds through PgBouncer in transaction mode (tests/test_pooler_and_replica.py runs
Database.run and the service there)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from localplus_common.auth import ANONYMOUS, Identity
from localplus_common.config import Settings
from localplus_common.db import Database, create_pool, current_identity, literal
from localplus_common.errors import ApiError
from localplus_events import events
from tests.sql_callers import claims_of, new_event, new_user

READY_FOR_QUERY = ord("Z")


def caller(user_id: uuid.UUID) -> Identity:
    return Identity("authenticated", user_id, claims_of(user_id))


async def services_pool(database_url: str, size: int) -> asyncpg.Pool:
    """A pool as the services open one (statement cache on, their reset), of up to `size` connections."""
    return await create_pool(replace(Settings.from_env(), database_url=database_url, db_pool_max=size))


@pytest.fixture(scope="module")
async def database(database_url: str) -> AsyncIterator[Database]:
    pool = await services_pool(database_url, 2)
    yield Database(pool)
    await pool.close()


async def read_as(database: Database, identity: Identity, event_id: uuid.UUID) -> str:
    """What the events service's own GetEvent use case answers `identity`."""
    current_identity.set(identity)
    try:
        row = await events.get_event(database, event_id)
    except ApiError as error:
        return error.code.name
    return "seen" if row["id"] == event_id else "another event"


async def test_a_draft_stays_hidden_from_anonymous_callers_and_strangers(database: Database, database_url: str) -> None:
    admin = database.pool
    owner, stranger = await new_user(admin), await new_user(admin)
    draft = await new_event(admin, owner, status="draft")
    callers = {"owner": caller(owner), "anonymous": ANONYMOUS, "stranger": caller(stranger)}
    # The owner first: the statement is prepared and planned while its owner may see the draft.
    assert await read_as(database, callers["owner"], draft) == "seen"
    # Past Postgres' fifth execution a prepared statement may switch to a generic plan: go well beyond.
    for _ in range(8):
        for name, identity in callers.items():
            assert await read_as(database, identity, draft) == ("seen" if name == "owner" else "NOT_FOUND"), name
    # Concurrently, on both pooled connections, in every order.
    answers = await asyncio.gather(*(read_as(database, callers[name], draft) for _ in range(10) for name in callers))
    assert answers == ["seen", "NOT_FOUND", "NOT_FOUND"] * 10


@pytest.mark.parametrize("standard_conforming_strings", ["on", "off"])
async def test_any_claims_reach_the_database_as_they_were_signed(
    database_url: str, standard_conforming_strings: str
) -> None:
    """The context is written as literals (to share the BEGIN's message); quotes, backslashes and any
    text in the claims arrive unchanged, whatever the server's string syntax."""
    # asyncpg passes a URL parameter it does not know on as a server setting.
    pool = await services_pool(f"{database_url}?standard_conforming_strings={standard_conforming_strings}", 1)
    user_id = uuid.uuid4()
    tricky = (
        "it's \\' \\\\ '); select set_config('role', 'postgres', false); -- $$ \u00e9 \u0e14\u0e19\u0e15\u0e23\u0e35"
    )
    claims: dict[str, Any] = {**claims_of(user_id), "email": tricky, "user_metadata": {"name": tricky}}
    try:
        seen = await Database(pool).run(
            lambda conn: conn.fetchrow(
                "select current_user, current_setting('request.jwt.claims') as claims, auth.uid() as uid"
            ),
            Identity("authenticated", user_id, claims),
        )
        assert seen is not None
        assert (seen["current_user"], json.loads(seen["claims"]), seen["uid"]) == ("authenticated", claims, user_id)
        # And nothing of it outlives the transaction.
        assert await pool.fetchval("select current_user") != "authenticated"
    finally:
        await pool.close()
    with pytest.raises(ValueError):
        literal("a\x00b")


class RoundTrips:
    """A TCP relay in front of Postgres that counts ReadyForQuery messages: the server sends one when it
    has answered a simple query or a Sync, so one for each time the client had to wait for it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.count = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                server_writer.write(data)
                await server_writer.drain()
            server_writer.close()

        async def downstream() -> None:
            # Without SSL, everything the server sends is typed messages: a type byte, a 4-byte length.
            while True:
                try:
                    kind = await server_reader.readexactly(1)
                    length = await server_reader.readexactly(4)
                    body = await server_reader.readexactly(int.from_bytes(length, "big") - 4)
                except asyncio.IncompleteReadError:
                    break
                if kind[0] == READY_FOR_QUERY:
                    self.count += 1
                client_writer.write(kind + length + body)
                await client_writer.drain()
            client_writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@asynccontextmanager
async def counted(database_url: str) -> AsyncIterator[tuple[Database, RoundTrips]]:
    """A Database whose one connection goes through the counting relay."""
    url = urllib.parse.urlsplit(database_url)
    assert url.hostname and url.port
    relay = RoundTrips(url.hostname, url.port)
    relayed = url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{await relay.start()}")
    pool = await services_pool(urllib.parse.urlunsplit(relayed._replace(query="sslmode=disable")), 1)
    try:
        yield Database(pool), relay
    finally:
        await pool.close()
        await relay.stop()


async def round_trips(database: Database, relay: RoundTrips, work: Any, identity: Identity, **kwargs: Any) -> int:
    await database.run(work, identity, **kwargs)  # the first call prepares the work's statement
    before = relay.count
    await database.run(work, identity, **kwargs)
    return relay.count - before


async def test_a_request_transaction_costs_one_round_trip_more_than_its_statements(database_url: str) -> None:
    """Starting the transaction and setting the caller share one round trip; the commit is the other.
    (A round trip more, e.g. a separate BEGIN or set_config, fails this.)"""
    async with counted(database_url) as (database, relay):
        admin = database.pool
        owner = await new_user(admin)
        event_id = await new_event(admin, owner)

        async def read(conn: Any) -> Any:
            return await conn.fetchval("select title from public.events where id = $1", event_id)

        async def read_twice(conn: Any) -> Any:
            await read(conn)
            return await read(conn)

        assert await round_trips(database, relay, read, ANONYMOUS, replica=True) == 3
        assert await round_trips(database, relay, read, caller(owner), event_id=event_id) == 3
        assert await round_trips(database, relay, read_twice, caller(owner)) == 4

        async def fail(conn: Any) -> None:
            await conn.execute("select 1/0")

        # A failed transaction is rolled back before the connection goes back to the pool.
        with pytest.raises(asyncpg.DivisionByZeroError):
            await database.run(fail, ANONYMOUS)
        assert await admin.fetchval("select current_user") != "anon"


async def test_reading_an_event_costs_one_round_trip_and_leaves_nothing_set(database_url: str) -> None:
    """GetEvent's read (Database.read) sends no BEGIN and no COMMIT: its one statement is its own
    transaction, and the caller it set ends with it, on the very connection the next request gets."""
    async with counted(database_url) as (database, relay):
        admin = database.pool
        owner, stranger = await new_user(admin), await new_user(admin)
        unlisted = await new_event(admin, owner, visibility="unlisted")
        for identity in (caller(owner), caller(stranger), ANONYMOUS):
            assert await read_as(database, identity, unlisted) == "seen"  # prepares the statement
            before = relay.count
            assert await read_as(database, identity, unlisted) == "seen"  # by its id, though unlisted
            assert relay.count - before == 1
            leftover = await admin.fetchval(
                "select current_user || ' ' || coalesce(current_setting('request.jwt.claims', true), '') || ' '"
                " || coalesce(current_setting('localplus.event_id', true), '')"
            )
            assert leftover.split() == [await admin.fetchval("select session_user")]
