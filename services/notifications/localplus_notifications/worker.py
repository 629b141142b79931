"""The delivery loop: a few tasks, each claiming a batch of due messages (localplus_notifications.outbox),
sending them one by one over its own SMTP connection or by web push, and marking each sent right after
its send, so a worker killed mid-batch resends at most the one message it was sending (and that one
with the same Message-ID). Failures retry with exponential backoff and become dead letters after
NOTIFICATIONS_MAX_ATTEMPTS. The trigger that writes the outbox NOTIFYs, so the worker wakes at once;
it also polls, for NOTIFYs missed (e.g. behind a transaction-mode pooler) and for retries coming due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import smtplib
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from pywebpush import WebPushException

from localplus_notifications import mail, outbox, push
from localplus_notifications.config import WorkerSettings
from localplus_notifications.outbox import Message

log = logging.getLogger("localplus_notifications")
CHANNEL = "localplus_notifications"


def backoff(settings: WorkerSettings, attempt: int) -> float:
    """Seconds before the retry after failed attempt `attempt` (1, 2, ...): doubling, capped, with
    up to 20% jitter so messages that failed together do not all retry at the same moment."""
    delay = min(settings.backoff_max_seconds, settings.backoff_seconds * 2 ** (attempt - 1))
    return delay * (1 + random.random() * 0.2)


@dataclass
class Stats:
    sent: int = 0
    retried: int = 0
    dead: int = 0


class Worker:
    def __init__(self, settings: WorkerSettings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.wake = asyncio.Event()
        self.stats = Stats()
        self.last_beat = 0.0
        self.vapid = push.load_vapid(settings.vapid_private_key)

    def beat(self) -> None:
        """Touch the heartbeat file (at most once a second): the loop is alive and reaching the database."""
        if self.settings.heartbeat_file and time.monotonic() - self.last_beat > 1:
            Path(self.settings.heartbeat_file).touch()
            self.last_beat = time.monotonic()

    async def deliver(self, sender: mail.SmtpSender, message: Message) -> None:
        try:
            if message.channel == "email":
                if not message.email:
                    raise mail.PermanentFailure("the user has no email address")
                await asyncio.to_thread(sender.send, mail.build(self.settings, message))
            else:
                if self.vapid is None:
                    raise mail.PermanentFailure("web push is not configured (VAPID_PRIVATE_KEY)")
                result = await asyncio.to_thread(push.send, self.settings, self.vapid, message)
                if result.gone:
                    await self.pool.execute(
                        "delete from public.push_subscriptions where endpoint = any($1)", result.gone
                    )
        # ValueError, LookupError: a message that cannot be written (a header with a line break, a time
        # zone no zone database has) fails for good rather than ending the task, and so the worker.
        except (mail.PermanentFailure, ValueError, LookupError) as error:
            await outbox.mark_failed(self.pool, message, str(error), delay=0, dead=True)
            self.stats.dead += 1
            log.warning("notification %s failed for good: %s", message.id, error)
            return
        except (OSError, smtplib.SMTPException, WebPushException) as error:
            dead = message.attempt >= self.settings.max_attempts
            delay = 0 if dead else backoff(self.settings, message.attempt)
            await outbox.mark_failed(self.pool, message, f"{type(error).__name__}: {error}", delay=delay, dead=dead)
            if dead:
                self.stats.dead += 1
                log.warning(
                    "notification %s is a dead letter after %d attempts: %s", message.id, message.attempt, error
                )
            else:
                self.stats.retried += 1
                log.info(
                    "notification %s: attempt %d failed, retry in %.1fs: %s", message.id, message.attempt, delay, error
                )
            return
        await outbox.mark_sent(self.pool, message)
        self.stats.sent += 1

    async def deliver_batch(self, sender: mail.SmtpSender, messages: list[Message]) -> None:
        """One by one; when a third of the lease has gone, the rest of the batch is leased again, so
        no message is sent after its lease ran out (when another worker may be sending it)."""
        leased_at = time.monotonic()
        waiting = list(messages)
        while waiting:
            if time.monotonic() - leased_at > self.settings.lease_seconds / 3:
                held = await outbox.renew(self.pool, waiting, self.settings.lease_seconds)
                leased_at = time.monotonic()
                waiting = [message for message in waiting if message.id in held]
                if not waiting:
                    return
            await self.deliver(sender, waiting.pop(0))

    async def run_task(self) -> None:
        sender = mail.SmtpSender(self.settings.smtp)
        try:
            while True:
                try:
                    messages = await outbox.claim(self.pool, self.settings.batch_size, self.settings.lease_seconds)
                except (OSError, asyncpg.PostgresError) as error:
                    # The database is away for a moment (a restart, a failover): try again later.
                    log.warning("claiming failed: %s", error)
                    await asyncio.sleep(self.settings.poll_seconds)
                    continue
                self.beat()
                if not messages:
                    sender.close()
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), self.settings.poll_seconds)
                    continue
                await self.deliver_batch(sender, messages)
        finally:
            sender.close()

    async def listen(self) -> asyncpg.Connection | None:
        try:
            conn = await asyncpg.connect(self.settings.database_url, statement_cache_size=0)
            await conn.add_listener(CHANNEL, lambda *_: self.wake.set())
            return conn
        except (OSError, asyncpg.PostgresError) as error:
            log.info("no LISTEN (%s): polling every %.1fs", error, self.settings.poll_seconds)
            return None


async def run(settings: WorkerSettings) -> None:
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=settings.concurrency + 1,
        statement_cache_size=settings.db_statement_cache_size,
        init=outbox.init_connection,
    )
    assert pool is not None
    worker = Worker(settings, pool)
    listener = await worker.listen()
    log.info(
        "delivering notifications (%d tasks, SMTP %s:%d)", settings.concurrency, settings.smtp.host, settings.smtp.port
    )
    try:
        await asyncio.gather(*(worker.run_task() for _ in range(settings.concurrency)))
    finally:
        if listener is not None:
            await listener.close()
        await pool.close()
