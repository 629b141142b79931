"""Notifications (issue 13): outbox rows written with the change they tell about, delivered by the
worker over SMTP into the stack's Maildir exactly once, even when a worker is killed mid-batch."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from localplus_common.config import DEV_JWT_SECRET
from localplus_dev.stack import Stack
from localplus_dev.token import mint
from tests.notifications_support import (
    WORKER,
    create_users,
    duplicates_dropped,
    kill,
    kinds_to,
    read_maildir,
    spawn_worker,
    wait_for_mail,
    wait_sql,
    wait_until,
)
from tests.support import User, create_event


def titled(title: str) -> Any:
    return lambda mail: title in mail.subject


async def test_registering_sends_a_confirmation_in_the_users_language(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    title = f"Confirmed {uuid.uuid4().hex[:8]}"
    event = await create_event(api, user, title=title, status="EVENT_STATUS_PUBLISHED")
    (thai,) = await create_users(db, 1, locale="th-TH")
    for who in (user.id, thai):
        headers = {"authorization": f"Bearer {mint(who, DEV_JWT_SECRET)}"}
        response = await api.post(f"/api/events/{event['id']}/participants", json={}, headers=headers)
        assert response.status_code == 200, response.text
    mails = await wait_for_mail(stack, titled(title), 2)
    by_to = {mail.to: mail for mail in mails}
    assert set(by_to) == {f"{user.id}@example.test", f"{thai}@example.test"}
    english, in_thai = by_to[f"{user.id}@example.test"], by_to[f"{thai}@example.test"]
    assert english.kind == in_thai.kind == "registration_confirmed"
    assert english.subject == f"You're going: {title}"
    assert in_thai.subject == f"ยืนยันการลงทะเบียน: {title}"
    assert in_thai.message["Content-Language"] == "th"
    # Plain text and HTML; RFC 8058 one-click unsubscribe.
    assert {part.get_content_type() for part in english.message.walk()} >= {"text/plain", "text/html"}
    assert english.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(english.message["List-Unsubscribe"]).startswith(f"<{stack.gateway_url}/api/unsubscribe/")


async def test_cancelling_an_event_emails_every_going_and_waitlisted_person_once(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    title = f"Cancelled {uuid.uuid4().hex[:8]}"
    event = await create_event(api, user, title=title, capacity=500, status="EVENT_STATUS_PUBLISHED")
    people = await create_users(db, 600)
    # Registered in order: the first 500 are going, the other 100 waitlisted (the capacity trigger).
    for person in people:
        await db.execute(
            "insert into public.event_participants (event_id, user_id) values ($1, $2)", uuid.UUID(event["id"]), person
        )
    statuses = await db.fetch(
        "select status, count(*) from public.event_participants where event_id = $1 group by status",
        uuid.UUID(event["id"]),
    )
    assert {row["status"]: row["count"] for row in statuses} == {"going": 500, "waitlisted": 100}
    cancelled = await api.post(f"/api/events/{event['id']}:cancel", json={}, headers=user.headers)
    assert cancelled.status_code == 200, cancelled.text

    mails = await wait_for_mail(stack, lambda mail: mail.kind == "event_cancelled" and title in mail.subject, 600)
    counts = kinds_to(mails)
    assert len(mails) == 600
    assert set(counts.values()) == {1}, "nobody gets it twice"
    assert {to for _, to in counts} == {f"{person}@example.test" for person in people}, "nobody is missed"
    # The 500 going were confirmed when they registered; the waitlisted were not.
    confirmations = await wait_for_mail(
        stack, lambda mail: mail.kind == "registration_confirmed" and title in mail.subject, 500
    )
    assert len(confirmations) == 500


async def test_a_worker_killed_mid_batch_loses_and_repeats_nothing(stack: Stack, db: asyncpg.Pool, user: User) -> None:
    """1,000 messages, two workers, one of them SIGKILLed while sending and started again: every
    message reaches the Maildir exactly once, and the server saw at most the few in flight twice."""
    people = await create_users(db, 1000)
    title = f"Batch {uuid.uuid4().hex[:8]}"
    event_id = await db.fetchval(
        "insert into public.events (title, starts_at, ends_at, timezone, created_by, status)"
        " values ($1, now() + interval '3 days', now() + interval '3 days 2 hours', 'Asia/Bangkok', $2, 'published')"
        " returning id",
        title,
        user.id,
    )
    worker = stack.supervisor.child(WORKER)
    stack.supervisor.child(WORKER).stop()
    before = duplicates_dropped(stack)
    await db.execute(
        "select localplus_private.notify('event_cancelled', $1::uuid[], $2, null, null, '{}', null)", people, event_id
    )
    assert await db.fetchval("select count(*) from public.notifications where event_id = $1", event_id) == 1000
    second = spawn_worker(stack, "notifications-2", NOTIFICATIONS_BATCH_SIZE="20")
    try:
        stack.supervisor.restart(WORKER)

        def delivered() -> int:
            return sum(1 for mail in read_maildir(stack.config.maildir) if title in mail.subject)

        await wait_until(lambda: delivered() >= 250, what="a quarter delivered")
        kill(stack.supervisor.child(WORKER))
        await wait_until(lambda: delivered() >= 500, what="half delivered")
        stack.supervisor.restart(WORKER)
        await wait_sql(
            db, "select count(*) = 1000 from public.notifications where event_id = $1 and status = 'sent'", event_id
        )
    finally:
        second.stop()
    mails = [mail for mail in read_maildir(stack.config.maildir) if title in mail.subject]
    ids = [mail.message_id for mail in mails]
    assert len(ids) == 1000 and len(set(ids)) == 1000
    assert {mail.to for mail in mails} == {f"{person}@example.test" for person in people}
    # What the killed worker was sending when it died: at most one message per delivery task.
    assert duplicates_dropped(stack) - before <= 4
    assert worker is not stack.supervisor.child(WORKER)
