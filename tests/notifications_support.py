"""Helpers of the notifications tests: the Maildir the stack's SMTP server delivers into, many users at
once, and the worker processes (the stack's, and more of them)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import asyncpg

from localplus_dev.processes import Child
from localplus_dev.stack import Stack

WORKER = "notifications"


@dataclass(frozen=True)
class Mail:
    message_id: str
    to: str
    kind: str
    subject: str
    message: EmailMessage


# Maildir file name -> what it holds: each file is parsed once, however often a test looks.
_parsed: dict[Path, Mail] = {}


def read_maildir(path: Path) -> list[Mail]:
    found = []
    for file in [*(path / "new").glob("*"), *(path / "cur").glob("*")]:
        mail = _parsed.get(file)
        if mail is None:
            message = email.message_from_bytes(file.read_bytes(), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            mail = _parsed[file] = Mail(
                message_id=str(message["Message-ID"]),
                to=str(message["To"]),
                kind=str(message["X-LocalPlus-Kind"]),
                subject=str(message["Subject"]),
                message=message,
            )
        found.append(mail)
    return found


async def wait_for_mail(stack: Stack, matches: Callable[[Mail], bool], count: int, within: float = 120.0) -> list[Mail]:
    """The mail matching, once `count` of them arrived (and a moment more, for any extra one)."""
    deadline = time.monotonic() + within
    while True:
        found = [mail for mail in read_maildir(stack.config.maildir) if matches(mail)]
        if len(found) >= count:
            await asyncio.sleep(0.5)
            return [mail for mail in read_maildir(stack.config.maildir) if matches(mail)]
        assert time.monotonic() < deadline, f"{len(found)} of {count} messages after {within:.0f}s"
        await asyncio.sleep(0.3)


async def create_users(db: asyncpg.Pool, count: int, *, locale: str = "en") -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    await db.execute(
        "insert into auth.users (id, email, raw_user_meta_data)"
        " select id, id::text || '@example.test', jsonb_build_object('locale', $2::text) from unnest($1::uuid[]) id",
        ids,
        locale,
    )
    return ids


def duplicates_dropped(stack: Stack) -> int:
    """How many resent messages the SMTP server dropped (its log says each)."""
    log = stack.supervisor.child("mail").log_path.read_text(errors="replace")
    return log.count("duplicate <")


def kinds_to(mails: list[Mail]) -> Counter[tuple[str, str]]:
    return Counter((mail.kind, mail.to) for mail in mails)


def kill(child: Child) -> None:
    """SIGKILL, as a crash would: nothing gets to finish what it was doing."""
    child.stopping = True
    os.kill(child.pid, signal.SIGKILL)
    child.popen.wait()


def spawn_worker(stack: Stack, name: str, **env: str) -> Child:
    return stack.supervisor.spawn(
        name, [sys.executable, "-m", "localplus_notifications"], env=stack.notifications_env(**env)
    )


async def wait_until(condition: Callable[[], object], within: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {within:.0f}s"
        await asyncio.sleep(0.1)


async def wait_sql(db: asyncpg.Pool, query: str, *args: object, within: float = 120.0) -> None:
    """Until `query` answers true."""
    deadline = time.monotonic() + within
    while not await db.fetchval(query, *args):
        assert time.monotonic() < deadline, f"not true after {within:.0f}s: {query}"
        await asyncio.sleep(0.2)
