"""Graceful drain on SIGTERM (localplus_common.server), with one worker and with two sharing the port
(localplus_common.workers): a real events service, updates of events held in flight by a lock on their
table, then SIGTERM. Health turns NOT_SERVING first while the process still runs; then new
connections are refused while the calls are still in flight; once the lock goes, every one of those
calls completes OK, and the process exits 0. Workers whose supervisor is killed stop too."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.services import EVENTS, RECURRENCE
from localplus_dev.postgres import free_port
from localplus_dev.stack import Stack
from tests.support import create_event, create_user

IN_FLIGHT = 6
APPLICATION = "lp_drain_test"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def health(address: str, channel: grpc.Channel | None = None) -> int | None:
    """The overall health status, or None when nothing answers."""
    own = channel is None
    channel = channel or grpc.insecure_channel(address)
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
    except grpc.RpcError:
        return None
    finally:
        if own:
            channel.close()


def serving(address: str, channel: grpc.Channel) -> bool:
    return health(address, channel) == SERVING


def start_events(stack: Stack, address: str, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        # Its own application_name, to tell its backends from the session stack's; one connection per call.
        "DATABASE_URL": f"{stack.database_url}?application_name={APPLICATION}",
        "DB_POOL_MAX": str(IN_FLIGHT),
        "SUPABASE_JWT_SECRET": stack.config.jwt_secret,
        EVENTS.addr_var: address,
        RECURRENCE.addr_var: stack.address(RECURRENCE.name),
        "LOCALPLUS_WORKERS": str(workers),
        EVENTS.metrics_var: "off",  # not the default port, which `make up` may hold
        "LOCALPLUS_DRAIN_SECONDS": "3",
        "LOCALPLUS_GRACE_SECONDS": "60",
    }
    # A session of its own: the cleanup reaches the workers too.
    return subprocess.Popen([sys.executable, "-m", EVENTS.module], env=env, start_new_session=True)


async def lock_waiters(locker: asyncpg.Connection) -> int:
    """The service's connections waiting for the lock `locker` holds (one per call: its pool has no more)."""
    count: int = await locker.fetchval(
        "select count(*) from pg_stat_activity"
        " where application_name = $1 and pg_backend_pid() = any(pg_blocking_pids(pid))",
        APPLICATION,
    )
    return count


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_calls_in_flight(
    stack: Stack, db: asyncpg.Pool, api: httpx.AsyncClient, workers: int
) -> None:
    owner = await create_user(db)
    # One event per call: concurrent updates of one event would conflict (ABORTED) when they go on.
    events = [await create_event(api, owner) for _ in range(IN_FLIGHT)]
    address = f"127.0.0.1:{free_port()}"
    process = start_events(stack, address, workers)
    # A connection each (not one shared by all), so that two workers share them out.
    channels = [
        grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(IN_FLIGHT + 1)
    ]
    locker = await asyncpg.connect(stack.database_url)
    pool = ThreadPoolExecutor(IN_FLIGHT)
    try:
        wait_for(lambda: health(address) == SERVING, "the service to serve")
        # Every worker serving: each channel connects anew and the kernel spreads them over the workers.
        for channel in channels:
            wait_for(functools.partial(serving, address, channel), "each channel's worker to serve")

        def update(channel: grpc.Channel, n: int) -> events_pb2.Event:
            request = events_pb2.UpdateEventRequest(
                event=events_pb2.Event(id=events[n]["id"], title=f"Jazz, take {n}"),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            )
            reply: events_pb2.Event = events_pb2_grpc.EventsServiceStub(channel).UpdateEvent(
                request, metadata=owner.metadata, timeout=120
            )
            return reply

        # Warm up, so that the pool has a connection for each call before anything is locked (a new
        # connection's first catalog reads would wait for the lock too, before it has a name).
        for rounds in range(1, 100):
            list(pool.map(update, channels[:IN_FLIGHT], range(IN_FLIGHT)))
            connections = await locker.fetchval(
                "select count(*) from pg_stat_activity where application_name = $1", APPLICATION
            )
            if rounds >= 5 and connections >= IN_FLIGHT:
                break
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("lock table public.events in exclusive mode")
        calls: list[Future[events_pb2.Event]] = [
            pool.submit(update, channel, n) for n, channel in enumerate(channels[:IN_FLIGHT])
        ]
        # Well within the services' 30 s statement timeout.
        deadline = time.monotonic() + 20
        while await lock_waiters(locker) < IN_FLIGHT:
            assert time.monotonic() < deadline, "the calls did not reach the database"
            await asyncio.sleep(0.05)

        process.send_signal(signal.SIGTERM)
        # NOT_SERVING first, on a connection made before, while the process is still up.
        wait_for(lambda: health(address, channels[IN_FLIGHT]) == NOT_SERVING, "NOT_SERVING")
        assert process.poll() is None
        # Then no new connections, while the calls are still held in flight.
        wait_for(lambda: health(address) is None, "new connections to be refused")
        assert process.poll() is None
        assert not any(call.done() for call in calls)
        assert await lock_waiters(locker) == IN_FLIGHT

        await transaction.rollback()
        for call in calls:
            call.result(timeout=60)  # raises unless OK
        assert process.wait(timeout=60) == 0
        assert health(address) is None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        await locker.close()
        pool.shutdown(wait=False, cancel_futures=True)
        for channel in channels:
            channel.close()


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # the field after the state: the parent's pid
                children.append(int(stat.parent.name))
    return children


def test_sigterm_while_the_workers_start_is_a_clean_stop(stack: Stack) -> None:
    """A rolling update may stop a pod at once: SIGTERM while the workers are still starting stops them
    (nothing was served, nothing is lost) and the supervisor exits 0, not as if a worker had failed."""
    address = f"127.0.0.1:{free_port()}"
    process = start_events(stack, address, workers=2)
    try:
        wait_for(lambda: len(children_of(process.pid)) == 2, "the workers to be spawned", timeout=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert health(address) is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def test_workers_stop_when_their_supervisor_is_killed(stack: Stack) -> None:
    """A supervisor killed outright (SIGKILL: no signal passed on) leaves no worker serving: they notice,
    drain and exit."""
    address = f"127.0.0.1:{free_port()}"
    process = start_events(stack, address, workers=2)
    try:
        wait_for(lambda: health(address) == SERVING, "the service to serve")
        process.kill()
        process.wait()
        wait_for(lambda: health(address) is None, "the workers to stop serving")

        def workers_gone() -> bool:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(workers_gone, "the workers to exit")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
