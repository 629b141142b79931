"""Graceful drain of the gateway (localplus_gateway.run, README "Stopping"); Envoy on its own stops at once
on SIGTERM and cuts requests in flight. A gateway of its own in front of the session's services holds
updates in flight (their events' rows locked) and is sent SIGTERM: /healthz answers 503 while it still
serves, and every response then closes its connection (HTTP/1.1 `connection: close`, HTTP/2 GOAWAY); after
the drain window new connections are refused while the updates are still in flight; once the lock goes
they all complete 200 and it exits 0. With a request stuck past the grace period it exits on time."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from localplus_dev.envoy import Gateway
from localplus_dev.postgres import free_port
from localplus_dev.processes import Child, Supervisor
from localplus_dev.stack import Stack
from tests.support import User, create_event, create_user

IN_FLIGHT = 4
DRAIN_S = 3.0
# HTTP/2 frame types (RFC 9113 §6).
HEADERS, GOAWAY = 0x1, 0x7


@contextlib.contextmanager
def gateway(stack: Stack, tmp_path: Path, grace_seconds: float) -> Iterator[Gateway]:
    """A second gateway on free ports with the session's services and tokens."""
    settings = replace(
        stack.gateway.settings,
        gateway_port=free_port(),
        admin_port=free_port(),
        drain_seconds=DRAIN_S,
        grace_seconds=grace_seconds,
    )
    supervisor = Supervisor(tmp_path / "run")
    running = Gateway(tmp_path / "run", supervisor, settings)
    try:
        running.start()
        yield running
    finally:
        supervisor.stop_all()


def launcher(running: Gateway) -> Child:
    assert running.child is not None
    return running.child


async def until(condition: Callable[[], Awaitable[bool]], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def healthz(url: str) -> int | None:
    """/healthz's status on a new connection, or None when no connection is accepted."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"{url}/healthz")).status_code
    except httpx.TransportError:
        return None


@contextlib.asynccontextmanager
async def locked(stack: Stack, events: list[dict[str, Any]]) -> AsyncIterator[asyncpg.Connection]:
    """The events' rows locked (an update of one waits) until the block ends."""
    locker = await asyncpg.connect(stack.database_url)
    try:
        async with locker.transaction():
            ids = [uuid.UUID(event["id"]) for event in events]
            await locker.execute("select from public.events where id = any($1::uuid[]) for update", ids)
            yield locker
    finally:
        await locker.close()


async def lock_waiters(db: asyncpg.Pool, locker: asyncpg.Connection) -> int:
    """Backends waiting for a lock `locker` holds (one per update in flight). Asked outside its transaction,
    which would read pg_stat_activity as it was when first asked."""
    count: int = await db.fetchval(
        "select count(*) from pg_stat_activity where $1 = any(pg_blocking_pids(pid))", locker.get_server_pid()
    )
    return count


def updates(client: httpx.AsyncClient, owner: User, events: list[dict[str, Any]]) -> list[asyncio.Task[httpx.Response]]:
    return [
        asyncio.create_task(
            client.patch(f"/api/events/{event['id']}", json={"title": f"Jazz, take {n}"}, headers=owner.headers)
        )
        for n, event in enumerate(events)
    ]


def _literal(name: str, value: str) -> bytes:
    """An HPACK header field, literal, not indexed, no Huffman coding (RFC 7541 §6.2.2)."""
    return bytes([0, len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


class Http2Client:
    """HTTP/2 with prior knowledge over a plain socket, to see the frames Envoy sends (httpx has no h2 here)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0, b""))  # preface, SETTINGS
        self.buffer = b""
        self.stream = -1

    def get(self, path: str) -> set[int]:
        """GET `path` on the next stream; the types of the frames read until its response's HEADERS (and a
        GOAWAY, if Envoy sends one with it)."""
        self.stream += 2
        block = _literal(":method", "GET") + _literal(":scheme", "http") + _literal(":path", path)
        block += _literal(":authority", "gateway")
        self.sock.sendall(_frame(HEADERS, 0x5, self.stream, block))  # END_STREAM | END_HEADERS
        seen: set[int] = set()
        answered = False
        while not (answered and GOAWAY in seen):
            frame = self._next_frame(timeout=0.5 if answered else 10)
            if frame is None:
                break
            kind, stream = frame
            seen.add(kind)
            answered = answered or (kind == HEADERS and stream == self.stream)
        assert answered, f"no response on stream {self.stream} (frames {sorted(seen)})"
        return seen

    def _next_frame(self, timeout: float) -> tuple[int, int] | None:
        """The next frame's type and stream, or None at the end or after `timeout` without one."""
        self.sock.settimeout(timeout)
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        kind, stream = self.buffer[3], int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
        self.buffer = self.buffer[9 + int.from_bytes(self.buffer[:3], "big") :]
        return kind, stream

    def close(self) -> None:
        self.sock.close()


async def test_sigterm_drains_requests_in_flight(
    stack: Stack, db: asyncpg.Pool, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    owner = await create_user(db)
    events = [await create_event(api, owner) for _ in range(IN_FLIGHT)]
    with gateway(stack, tmp_path, grace_seconds=60) as running:
        envoy = launcher(running)
        h2 = Http2Client(running.settings.gateway_port)
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
        async with (
            httpx.AsyncClient(base_url=running.url, timeout=120, limits=limits) as client,
            httpx.AsyncClient(base_url=running.url, timeout=30) as keep_alive,
        ):
            # Connected before: a keep-alive HTTP/1.1 client and an HTTP/2 one, neither told to close yet.
            before = await keep_alive.get(f"/api/events/{events[0]['id']}", headers=owner.headers)
            assert before.status_code == 200 and before.headers.get("connection") != "close"
            assert GOAWAY not in await asyncio.to_thread(h2.get, "/healthz")
            async with locked(stack, events) as locker:
                calls = updates(client, owner, events)
                await until(lambda: _equals(lock_waiters(db, locker), IN_FLIGHT), "the updates to wait for the lock")

                envoy.popen.send_signal(signal.SIGTERM)
                # Unready at once, while it still runs and serves, and every response closes its connection.
                await until(lambda: _equals(healthz(running.url), 503), "/healthz to answer 503")
                assert envoy.alive
                during = await keep_alive.get(f"/api/events/{events[0]['id']}", headers=owner.headers)
                assert during.status_code == 200 and during.headers["connection"] == "close"
                assert GOAWAY in await asyncio.to_thread(h2.get, "/healthz")
                # After the drain window no new connections, while the updates are still in flight.
                await until(lambda: _equals(healthz(running.url), None), "new connections to be refused")
                assert envoy.alive
                assert not any(call.done() for call in calls)
                assert await lock_waiters(db, locker) == IN_FLIGHT
            # The lock is gone: every update completes, and Envoy exits once they have.
            for call in calls:
                response = await call
                assert response.status_code == 200, response.text
                assert response.headers["connection"] == "close"
            assert await asyncio.to_thread(envoy.popen.wait, 30) == 0
        h2.close()
    titles = await db.fetch(
        "select title from public.events where id = any($1::uuid[])", [uuid.UUID(e["id"]) for e in events]
    )
    assert sorted(row["title"] for row in titles) == [f"Jazz, take {n}" for n in range(IN_FLIGHT)]


async def test_a_stuck_request_does_not_hold_the_gateway_past_its_grace(
    stack: Stack, db: asyncpg.Pool, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    owner = await create_user(db)
    events = [await create_event(api, owner)]
    grace = 2.0
    with gateway(stack, tmp_path, grace_seconds=grace) as running:
        envoy = launcher(running)
        async with httpx.AsyncClient(base_url=running.url, timeout=120) as client, locked(stack, events) as locker:
            (call,) = updates(client, owner, events)
            await until(lambda: _equals(lock_waiters(db, locker), 1), "the update to wait for the lock")
            started = time.monotonic()
            envoy.popen.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(envoy.popen.wait, DRAIN_S + grace + 20) == 0
            took = time.monotonic() - started
            assert DRAIN_S + grace - 0.5 < took < DRAIN_S + grace + 5, took
            # Cut when Envoy stopped, while the row was still locked.
            try:
                response = await call
            except httpx.TransportError:
                pass
            else:
                raise AssertionError(f"the stuck request was answered: {response.status_code} {response.text}")
