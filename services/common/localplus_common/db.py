"""The database pool and the one place a request's transaction is opened.

Like PostgREST, every request runs in a single transaction as `anon`, `authenticated` or
`service_role`, with `request.jwt.claims` set, so row-level security decides what it sees: `run`
opens one for the work it is given; `read` runs a one-statement read as its own implicit transaction,
in one round trip.
"""

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypeVar
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from localplus_common.auth import Identity
from localplus_common.config import Settings
from localplus_common.errors import user_gone
from localplus_common.telemetry import PoolMetrics

T = TypeVar("T")
# What request code gets: a pooled connection inside the request transaction.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Work = Callable[[Connection], Awaitable[T]]

# Deadlocks and serialization failures are safe to retry: the transaction rolled back whole.
RETRYABLE_SQLSTATES = {"40001", "40P01"}
MAX_ATTEMPTS = 4

# Postgres counts timestamptz in microseconds from 2000-01-01 UTC.
POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
EARLIEST, LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)

# How Database.run starts a transaction: read-only work can go to a read replica.
BEGIN, BEGIN_READ_ONLY = "begin", "begin read only"

current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("current_identity")
# The request's id (Envoy's x-request-id), set as `localplus.request_id` in its transactions.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("current_request_id", default="")


class DatabaseUnavailable(Exception):
    """The database could not be reached, or did not answer in time: worth retrying later."""


def _decode_timestamptz(value: tuple[int]) -> datetime:
    """Every stored timestamptz as an aware datetime. asyncpg's own decoder returns naive
    datetime.min/max for -infinity/infinity (which then cannot be compared with aware times) and fails
    on years outside Python's 1-9999; those are clamped to Python's range instead."""
    try:
        return POSTGRES_EPOCH + value[0] * MICROSECOND
    except OverflowError:
        return LATEST if value[0] > 0 else EARLIEST


def _encode_timestamptz(value: datetime) -> tuple[int]:
    """Unlike asyncpg's own encoder, never writes datetime.min/max as -infinity/infinity."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return ((aware - POSTGRES_EPOCH) // MICROSECOND,)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_encode_timestamptz,
        decoder=_decode_timestamptz,
        format="tuple",
    )


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Returning a connection to the pool: every setting a request makes is transaction-local, so
    only a transaction left open (a cancelled request) needs undoing. asyncpg's default reset
    (RESET ALL, UNLISTEN *, ...) cost an extra round trip on every request."""
    if conn.is_in_transaction():
        await conn.execute("rollback")


async def create_pool(settings: Settings, url: str = "") -> asyncpg.Pool:
    """A pool on the primary (or on `url`, e.g. the read replica) with the services' settings."""
    pool = await asyncpg.create_pool(
        url or settings.database_url,
        min_size=1,
        max_size=settings.db_pool_max,
        statement_cache_size=settings.db_statement_cache_size,
        command_timeout=30,
        init=_init_connection,
        reset=_reset_connection,
    )
    assert pool is not None
    return pool


def literal(value: str) -> str:
    """`value` as an SQL string literal, written as libpq's PQescapeLiteral writes one: quotes doubled,
    and an E'' string with backslashes doubled when it holds any, so it reads back the same whatever
    standard_conforming_strings says. For the request context only (see request_context)."""
    if "\x00" in value:
        raise ValueError("Postgres text cannot hold NUL characters")
    quoted = "'" + value.replace("'", "''") + "'"
    return "E" + quoted.replace("\\", "\\\\") if "\\" in value else quoted


def request_context(identity: Identity, *, event_id: UUID | None = None) -> str:
    """The statement that sets who a transaction runs as, every setting transaction-local: its role and
    claims, as PostgREST sets them, the event the request names by id (see Database.run), and the
    request's id (Envoy's x-request-id; audit rows record it).

    Its values are literals rather than parameters so that it can travel in one simple-protocol
    message with the BEGIN (Database.run): one round trip for both. A new setting is one more entry
    in CONTEXT_SETTINGS and context_values, and a parameter of localplus_private.become."""
    values = context_values(identity, event_id)
    calls = (
        f"set_config({literal(name)}, {literal(value)}, true)"
        for name, value in zip(CONTEXT_SETTINGS, values, strict=True)
    )
    return "select " + ", ".join(calls)


# The settings of a request context, in the order localplus_private.become takes them (Database.read).
CONTEXT_SETTINGS = ("role", "request.jwt.claims", "localplus.event_id", "localplus.request_id")


def context_values(identity: Identity, event_id: UUID | None) -> tuple[str, str, str, str]:
    """The values of CONTEXT_SETTINGS for `identity` in the current request."""
    return identity.role, identity.claims_json, "" if event_id is None else str(event_id), current_request_id.get()


async def act_as(conn: Connection, identity: Identity, *, event_id: UUID | None = None) -> None:
    """Switch the rest of the transaction to another caller. A use case that has checked the caller's
    access under row-level security switches to localplus_common.auth.SERVER for the server's own
    writes. (A request's first caller is set by Database.run, with its BEGIN.)"""
    await conn.execute(request_context(identity, event_id=event_id))


# Appended to a transaction's first statement by Database.run(generic_plans=True), see there.
GENERIC_PLANS = ", set_config('plan_cache_mode', 'force_generic_plan', true)"


class Database:
    def __init__(self, pool: asyncpg.Pool, replica_pool: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        # Without a replica, reads that could use one go to the primary.
        self.replica_pool = replica_pool or pool
        self._pool_metrics = {pool: PoolMetrics("primary")} | (
            {replica_pool: PoolMetrics("replica")} if replica_pool else {}
        )

    async def run(
        self,
        work: Work[T],
        identity: Identity | None = None,
        *,
        event_id: UUID | None = None,
        replica: bool = False,
        generic_plans: bool = False,
    ) -> T:
        """Run `work` in one transaction as the caller (default: the current request's caller).

        `replica`: the work only reads, and may read a moment in the past (a streaming replica's lag):
        public discovery, and reads of anonymous callers, who cannot have written. Reads that must see
        the caller's own writes stay on the primary.

        `generic_plans`: every statement of the transaction (and of the SQL functions it calls) runs on
        its generic plan, planned once per connection. With the default, Postgres plans a prepared
        statement anew on every call while its custom plans look cheaper than the generic one, and under
        row-level security that can cost 20x the execution (counting the ticket types a buyer may see:
        1.0 ms to plan, 0.05 to run). Only for work whose statements all look rows up by key: a generic
        plan cannot drop an `$n is null or ...` condition of a keyset page, as a custom plan does.

        `event_id` is the event the request names by id: an unlisted event is readable by anyone
        who has its id (CONTRACT §3), so row-level security admits that one event for this
        transaction, and never lists unlisted events otherwise.
        """
        who = identity or current_identity.get()
        return await _retrying(lambda: self._transaction(work, who, event_id, replica, generic_plans))

    async def read(
        self,
        statement: str,
        *args: Any,
        identity: Identity | None = None,
        event_id: UUID | None = None,
        replica: bool = False,
    ) -> list[asyncpg.Record]:
        """A request's read in one round trip, where `run` takes three (BEGIN with the caller, the work,
        COMMIT): `statement` selects from a plain plpgsql function of localplus_private that takes the
        caller's context as $1-$4 (role, claims, the event named by id, the request id), sets it with
        localplus_private.become and only then reads (sql/migrations/20261224000000_one_round_trip_reads.sql
        says why row-level security holds); `args` are its $5 on. It runs outside a transaction block,
        as one implicit transaction, so the caller's settings end with it. `identity`, `event_id` and
        `replica` are as for `run`."""
        who = identity or current_identity.get()
        context = context_values(who, event_id)
        return await _retrying(lambda: self._read(statement, context + args, replica))

    async def _read(self, statement: str, args: tuple[Any, ...], replica: bool) -> list[asyncpg.Record]:
        pool = self.replica_pool if replica else self.pool
        conn = await self._acquire(pool)
        try:
            return await conn.fetch(statement, *args)
        finally:
            await pool.release(conn)

    async def _acquire(self, pool: asyncpg.Pool) -> Connection:
        metrics = self._pool_metrics[pool]
        metrics.waiting.inc()
        started = time.perf_counter()
        try:
            conn: Connection = await pool.acquire()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            # Refused, unreachable, out of connections, shutting down: unlike any error of the work.
            raise DatabaseUnavailable("the database cannot be reached") from error
        finally:
            metrics.waiting.dec()
        metrics.acquire.observe(time.perf_counter() - started)
        return conn

    async def _transaction(
        self, work: Work[T], who: Identity, event_id: UUID | None, replica: bool, generic_plans: bool
    ) -> T:
        pool = self.replica_pool if replica else self.pool
        conn = await self._acquire(pool)
        try:
            # The transaction starts and the caller is set in one round trip: one simple-protocol
            # message of two statements. Not in the same statement as the work's first query: row-level
            # security is decided when a statement is planned, as whoever the session is then.
            context = request_context(who, event_id=event_id) + (GENERIC_PLANS if generic_plans else "")
            await conn.execute(f"{BEGIN_READ_ONLY if replica else BEGIN}; {context}")
            result = await work(conn)
            await conn.execute("commit")
            return result
        except BaseException as error:
            if not conn.is_closed() and conn.is_in_transaction():
                await conn.execute("rollback")
            # Every write naming the caller (created_by, a registration's user_id) breaks a foreign key once
            # their user is deleted: a 401, not "created_by does not exist". Asked here, on the failure only,
            # as the pool's own role (the caller's settings ended with the rollback).
            if (
                isinstance(error, asyncpg.ForeignKeyViolationError)
                and who.user_id is not None
                and not await conn.fetchval("select exists (select from auth.users where id = $1)", who.user_id)
            ):
                raise user_gone() from error
            raise
        finally:
            await pool.release(conn)


async def _retrying(attempt_once: Callable[[], Awaitable[T]]) -> T:
    """`attempt_once` again after a deadlock or a serialization failure (it rolled back whole)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await attempt_once()
        except asyncpg.PostgresError as error:
            if error.sqlstate not in RETRYABLE_SQLSTATES or attempt == MAX_ATTEMPTS:
                raise
        except TimeoutError as error:  # asyncpg's command_timeout
            raise DatabaseUnavailable("the database did not answer in time") from error
        await asyncio.sleep(0.005 * attempt)
    raise AssertionError("unreachable")
