"""Outbox figures (`make bench ARGS="--only notifications"`): how long the trigger takes to fan a
cancelled event out to its registrations (one outbox row per person and channel, in the cancelling
transaction), then how many messages per second the worker delivers to the stack's local SMTP server
(aiosmtpd into a Maildir), with one worker process and with two. Counted at the Maildir, not just in
the outbox, and checked: every message arrives exactly once."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from localplus_dev.processes import Child
from localplus_dev.stack import Stack

MESSAGES = 5_000
WORKER = "notifications"


def maildir_count(path: Path) -> int:
    return sum(1 for _ in (path / "new").glob("*")) + sum(1 for _ in (path / "cur").glob("*"))


async def seed_event(conn: asyncpg.Connection, people: int) -> uuid.UUID:
    """A published event with `people` going (their confirmations are marked sent: not measured)."""
    ids = [uuid.uuid4() for _ in range(people)]
    await conn.execute(
        "insert into auth.users (id, email) select id, id::text || '@bench.test' from unnest($1::uuid[]) id", ids
    )
    event_id: uuid.UUID = await conn.fetchval(
        "insert into public.events (title, starts_at, ends_at, timezone, status)"
        " values ('Bench outbox', now() + interval '3 days', now() + interval '3 days 2 hours', 'Asia/Bangkok',"
        " 'published') returning id"
    )
    await conn.execute(
        "insert into public.event_participants (event_id, user_id) select $1, id from unnest($2::uuid[]) id",
        event_id,
        ids,
    )
    await conn.execute(
        "update public.notifications set status = 'cancelled' where event_id = $1 and status = 'pending'", event_id
    )
    return event_id


async def deliver(stack: Stack, conn: asyncpg.Connection, workers: int) -> tuple[float, int]:
    """Cancel a fresh event of MESSAGES people with the worker(s) stopped, then start them and time
    until the Maildir holds every message. (seconds, fan-out milliseconds)"""
    event_id = await seed_event(conn, MESSAGES)
    before = maildir_count(stack.config.maildir)
    began = time.perf_counter()
    await conn.execute("update public.events set status = 'cancelled' where id = $1", event_id)
    fan_out_ms = round((time.perf_counter() - began) * 1000)
    extra: list[Child] = []
    began = time.perf_counter()
    stack.supervisor.restart(WORKER)
    for n in range(1, workers):
        extra.append(
            stack.supervisor.spawn(
                f"{WORKER}-{n}", [sys.executable, "-m", "localplus_notifications"], env=stack.notifications_env()
            )
        )
    try:
        while True:
            if maildir_count(stack.config.maildir) - before >= MESSAGES:
                break
            await asyncio.sleep(0.5)
        took = time.perf_counter() - began
    finally:
        for child in extra:
            child.stop()
    sent = await conn.fetchval(
        "select count(*) from public.notifications where event_id = $1 and status = 'sent'", event_id
    )
    assert sent == MESSAGES and maildir_count(stack.config.maildir) - before == MESSAGES, "not exactly once"
    return took, fan_out_ms


async def run(stack: Stack) -> None:
    print(f"notifications: {MESSAGES:,} emails per run to the local SMTP server ...", flush=True)
    conn = await asyncpg.connect(stack.database_url)
    try:
        stack.supervisor.child(WORKER).stop()
        for workers in (1, 2):
            took, fan_out_ms = await deliver(stack, conn, workers)
            stack.supervisor.child(WORKER).stop()
            print(
                f"outbox  {workers} worker(s) x 4 tasks: {MESSAGES / took:,.0f} messages/s delivered to the local "
                f"SMTP server ({MESSAGES:,} in {took:.1f} s, counted at the Maildir, each once); fan-out of the "
                f"cancellation to {MESSAGES:,} outbox rows in its transaction: {fan_out_ms:,} ms",
                flush=True,
            )
        stack.supervisor.restart(WORKER)
    finally:
        await conn.close()
