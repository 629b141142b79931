"""Notifications (issue 13): outbox rows written with the change they tell about, delivered by the
worker over SMTP into the stack's Maildir exactly once, even when a worker is killed mid-batch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from localplus_common.config import DEV_JWT_SECRET
from localplus_dev.push import PushEndpoint
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
from tests.support import User, create_event, create_user, iso, service_role_token
from tests.test_recurrence_api import occurrences, patch, weekly_event
from tests.ticketing_support import checkout, event_with_tickets, reserve


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
    # As sent: the <URL> itself, not RFC 2047 encoded words (which hide it from mail clients).
    raw = dict(english.message.raw_items())["List-Unsubscribe"]
    assert raw.strip() == str(english.message["List-Unsubscribe"]) and "=?" not in raw, raw


async def test_nothing_unreviewed_is_mailed_to_people_an_editor_signed_up(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User
) -> None:
    """Any signed-in user may create a draft and register anyone (any user's id) for it as its editor:
    the draft's title, which no reviewer saw, must not reach them by the platform's mail ("You're
    going: <any text>"), nor a published event's new title that is back in review. Messages about
    the event while its text is unreviewed are dropped when due; orders' messages are not affected."""
    spam = f"Win a prize at evil.example {uuid.uuid4().hex[:8]}"
    draft = await create_event(api, user, title=spam)
    signed_up = await api.post(
        f"/api/events/{draft['id']}/participants", json={"user_id": str(other_user.id)}, headers=user.headers
    )
    assert signed_up.status_code == 200, signed_up.text
    # A published event moved and retitled in one change: the move is queued, the new title unreviewed.
    title = f"Reviewed {uuid.uuid4().hex[:8]}"
    event = await create_event(api, user, title=title, status="EVENT_STATUS_PUBLISHED")
    registered = await api.post(f"/api/events/{event['id']}/participants", json={}, headers=other_user.headers)
    assert registered.status_code == 200, registered.text
    await wait_for_mail(stack, titled(title), 1)
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=20)
    retitled = await api.patch(
        f"/api/events/{event['id']}", params={"update_mask": "title,starts_at,ends_at"},
        json={"title": f"{spam} again", "starts_at": iso(later), "ends_at": iso(later + timedelta(hours=2))},
        headers=user.headers,
    )  # fmt: skip
    assert retitled.status_code == 200 and retitled.json()["status"] == "EVENT_STATUS_PENDING_REVIEW", retitled.text
    events = [uuid.UUID(draft["id"]), uuid.UUID(event["id"])]
    await wait_sql(
        db,
        "select not exists (select 1 from public.notifications where event_id = any($1) and user_id = $2"
        " and kind <> 'event_reminder' and status = 'pending')",
        events,
        other_user.id,
    )
    statuses = await db.fetch(
        "select kind, status from public.notifications where event_id = any($1) and kind <> 'event_reminder'"
        " and user_id = $2 order by created_at",
        events,
        other_user.id,
    )
    assert [(row["kind"], row["status"]) for row in statuses] == [
        ("registration_confirmed", "cancelled"),
        ("registration_confirmed", "sent"),
        ("event_moved", "cancelled"),
    ]
    assert not [mail for mail in read_maildir(stack.config.maildir) if spam in mail.subject]


async def test_a_title_with_line_breaks_is_one_subject_line_and_stops_no_worker(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User
) -> None:
    """Supabase's REST lets an editor write any title, line breaks too: a mail header cannot hold one
    (the email library raises), which ended the worker's task, and so the worker, again at each claim."""
    marker = uuid.uuid4().hex[:8]
    event = await create_event(api, user, title=f"Broken {marker}", status="EVENT_STATUS_PUBLISHED")
    await db.execute(
        "update public.events set title = $2 where id = $1", uuid.UUID(event["id"]), f"Broken {marker}\r\nBcc: x@evil"
    )
    after = await create_event(api, user, title=f"After {marker}", status="EVENT_STATUS_PUBLISHED")
    for each in (event, after):
        response = await api.post(f"/api/events/{each['id']}/participants", json={}, headers=other_user.headers)
        assert response.status_code == 200, response.text
    mails = await wait_for_mail(stack, lambda mail: marker in mail.subject, 2, within=30)
    assert sorted(mail.subject for mail in mails) == [
        f"You're going: After {marker}",
        f"You're going: Broken {marker} Bcc: x@evil",
    ]
    assert all(mail.message["Bcc"] is None for mail in mails)


async def test_a_message_that_cannot_be_written_is_a_dead_letter_not_the_end_of_the_worker(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User
) -> None:
    """Rows written before a value was refused (a time zone "PST", which AT TIME ZONE took) cannot be
    rendered: that message fails for good, and the worker goes on with the others."""
    marker = uuid.uuid4().hex[:8]
    event = await create_event(api, user, title=f"Unwritable {marker}", status="EVENT_STATUS_PUBLISHED")
    broken = await db.fetchval(
        "insert into public.notifications (user_id, kind, channel, event_id, payload)"
        " values ($1, 'event_moved', 'email', $2, '{\"starts_at\": \"not a time\"}') returning id",
        other_user.id,
        uuid.UUID(event["id"]),
    )
    await wait_sql(db, "select status = 'failed' from public.notifications where id = $1", broken, within=30)
    response = await api.post(f"/api/events/{event['id']}/participants", json={}, headers=other_user.headers)
    assert response.status_code == 200, response.text
    (mail,) = await wait_for_mail(stack, lambda mail: marker in mail.subject, 1, within=30)
    assert mail.kind == "registration_confirmed"


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
    """1,000 people (200 of them with a push subscription too), two workers, one of them SIGKILLed
    while sending and started again: every message reaches the Maildir or the push endpoint exactly
    once, and they saw at most the few in flight twice."""
    people = await create_users(db, 1000)
    push = PushEndpoint()
    subscriptions = {person: push.subscribe() for person in people[:200]}
    await db.executemany(
        "insert into public.push_subscriptions (user_id, endpoint, p256dh, auth) values ($1, $2, $3, $4)",
        [(p, s["endpoint"], s["keys"]["p256dh"], s["keys"]["auth"]) for p, s in subscriptions.items()],
    )
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
    assert await db.fetchval("select count(*) from public.notifications where event_id = $1", event_id) == 1200
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
            db, "select count(*) = 1200 from public.notifications where event_id = $1 and status = 'sent'", event_id
        )
    finally:
        second.stop()
        push.stop()
    mails = [mail for mail in read_maildir(stack.config.maildir) if title in mail.subject]
    ids = [mail.message_id for mail in mails]
    assert len(ids) == 1000 and len(set(ids)) == 1000
    assert {mail.to for mail in mails} == {f"{person}@example.test" for person in people}
    assert all([m["kind"] for m in push.messages(s)] == ["event_cancelled"] for s in subscriptions.values())
    # What the killed worker was sending when it died: at most one message per delivery task.
    assert duplicates_dropped(stack) - before + push.duplicates <= 4
    assert worker is not stack.supervisor.child(WORKER)


async def test_reminders_follow_the_events_wall_clock_and_its_moves(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User
) -> None:
    # 12:00 in London the day after the clocks go forward (BST, 11:00 UTC): the reminder is at 12:00
    # the day before (GMT, 12:00 UTC), 23 hours ahead, not 24.
    starts = datetime(2027, 3, 28, 11, 0, tzinfo=UTC)
    title = f"Reminder {uuid.uuid4().hex[:8]}"
    event = await create_event(
        api, user, title=title, timezone="Europe/London", starts_at=iso(starts),
        ends_at=iso(starts + timedelta(hours=2)), capacity=1, status="EVENT_STATUS_PUBLISHED",
    )  # fmt: skip
    event_id = uuid.UUID(event["id"])

    async def reminders(status: str = "pending") -> list[tuple[uuid.UUID, datetime]]:
        rows = await db.fetch(
            "select user_id, send_after from public.notifications"
            " where event_id = $1 and kind = 'event_reminder' and status = $2 order by send_after",
            event_id,
            status,
        )
        return [(row["user_id"], row["send_after"]) for row in rows]

    for who in (user, other_user):  # the second one is waitlisted (capacity 1)
        response = await api.post(f"/api/events/{event['id']}/participants", json={}, headers=who.headers)
        assert response.status_code == 200, response.text
    assert await reminders() == [(user.id, datetime(2027, 3, 27, 12, 0, tzinfo=UTC))]

    moved_to = starts + timedelta(days=7)  # 12:00 BST a week later: the reminder at 12:00 BST the day before
    response = await api.patch(
        f"/api/events/{event['id']}", params={"update_mask": "starts_at,ends_at"},
        json={"starts_at": iso(moved_to), "ends_at": iso(moved_to + timedelta(hours=2))}, headers=user.headers,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert await reminders() == [(user.id, datetime(2027, 4, 3, 11, 0, tzinfo=UTC))]
    moved = await wait_for_mail(stack, lambda m: m.kind == "event_moved" and title in m.subject, 2)
    assert {mail.to for mail in moved} == {f"{user.id}@example.test", f"{other_user.id}@example.test"}
    assert "2027-04-04 12:00" in moved[0].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    # The first one cancels: their reminder goes, the waitlisted one is promoted, told, and reminded.
    response = await api.delete(f"/api/events/{event['id']}/participants", headers=user.headers)
    assert response.status_code == 200, response.text
    assert await reminders() == [(other_user.id, datetime(2027, 4, 3, 11, 0, tzinfo=UTC))]
    (promoted,) = await wait_for_mail(stack, lambda m: m.kind == "waitlist_promoted" and title in m.subject, 1)
    assert promoted.to == f"{other_user.id}@example.test"
    # Cancelling the event cancels the reminders that were still to come.
    assert (await api.post(f"/api/events/{event['id']}:cancel", json={}, headers=user.headers)).status_code == 200
    assert await reminders() == []


async def test_a_paid_order_emails_its_e_tickets_and_a_refund_is_told(
    stack: Stack, api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    event, ticket_type = await event_with_tickets(api, user, price_minor=0)
    order = (await reserve(api, other_user, ticket_type["id"], quantity=2)).json()
    paid = await checkout(api, other_user, order["id"])
    assert paid.status_code == 200, paid.text
    buyer = f"{other_user.id}@example.test"
    (mail,) = await wait_for_mail(stack, lambda m: m.kind == "order_paid" and m.to == buyer, 1)
    assert event["title"] in mail.subject
    images = [part for part in mail.message.iter_attachments() if part.get_content_type() == "image/png"]
    assert len(images) == 2
    refunded = await api.post(f"/api/orders/{order['id']}:refund", json={"ticket_ids": []}, headers=user.headers)
    assert refunded.status_code == 200, refunded.text
    await wait_for_mail(stack, lambda m: m.kind == "refund_issued" and m.to == buyer, 1)


async def test_a_paid_order_is_emailed_while_another_message_waits_for_the_worker(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User
) -> None:
    """A transaction wakes the worker (NOTIFY) only when nothing else is due; a message due and unsent,
    held here where the worker's claim skips it, must not keep the order's email from going out."""
    event, ticket_type = await event_with_tickets(api, user, price_minor=0)
    (waiting,) = await create_users(db, 1)
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "insert into public.notifications (user_id, kind, channel, send_after, created_at) "
            "values ($1, 'order_paid', 'email', now() - interval '1 minute', now() - interval '1 minute')",
            waiting,
        )
    holder = await db.acquire()
    try:
        lock = holder.transaction()
        await lock.start()
        # Locked, so the worker's claim (FOR UPDATE SKIP LOCKED) passes it by: it stays due.
        await holder.execute("select 1 from public.notifications where user_id = $1 for update", waiting)
        order = (await reserve(api, other_user, ticket_type["id"], quantity=1)).json()
        assert (await checkout(api, other_user, order["id"])).status_code == 200
        buyer = f"{other_user.id}@example.test"
        (mail,) = await wait_for_mail(stack, lambda m: m.kind == "order_paid" and m.to == buyer, 1, within=30)
        assert event["title"] in mail.subject
        await holder.execute("update public.notifications set status = 'cancelled' where user_id = $1", waiting)
        await lock.commit()
    finally:
        await db.release(holder)


async def test_a_cancelled_or_moved_occurrence_tells_its_own_registrations(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User
) -> None:
    owner = await create_user(db)
    title = f"Weekly {uuid.uuid4().hex[:8]}"
    event = await weekly_event(api, owner, title=title)
    found = await occurrences(api, event["id"])
    for who, occurrence in ((user, found[1]), (other_user, found[2])):
        body = {"occurrence_id": occurrence["id"]}
        response = await api.post(f"/api/events/{event['id']}/participants", json=body, headers=who.headers)
        assert response.status_code == 200, response.text

    async def reminder(who: User) -> list[datetime]:
        rows = await db.fetch(
            "select send_after from public.notifications where user_id = $1 and kind = 'event_reminder'"
            " and channel = 'email' and status = 'pending'",
            who.id,
        )
        return [row["send_after"] for row in rows]

    assert len(await reminder(user)) == len(await reminder(other_user)) == 1
    cancelled = await patch(api, owner, event["id"], found[1]["id"], {"status": "OCCURRENCE_STATUS_CANCELLED"})
    assert cancelled.status_code == 200, cancelled.text
    (told,) = await wait_for_mail(stack, lambda m: m.kind == "occurrence_cancelled" and title in m.subject, 1)
    assert told.to == f"{user.id}@example.test"
    assert await reminder(user) == []
    # Taking place again, as scheduled: its registrations (still going) are reminded again.
    restored = await patch(api, owner, event["id"], found[1]["id"], {"status": "OCCURRENCE_STATUS_SCHEDULED"})
    assert restored.status_code == 200, restored.text
    assert await reminder(user) == [datetime.fromisoformat(found[1]["starts_at"]) - timedelta(days=1)]

    later = datetime.fromisoformat(found[2]["starts_at"]) + timedelta(hours=1)
    body = {"starts_at": iso(later), "ends_at": iso(later + timedelta(hours=2))}
    moved = await patch(api, owner, event["id"], found[2]["id"], body, update_mask="starts_at,ends_at")
    assert moved.status_code == 200, moved.text
    (told,) = await wait_for_mail(stack, lambda m: m.kind == "occurrence_moved" and title in m.subject, 1)
    assert told.to == f"{other_user.id}@example.test"
    assert await reminder(other_user) == [later - timedelta(days=1)]  # no DST change in between


async def test_publishing_reminds_the_people_an_editor_registered_for_one_occurrence(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    """Editors may register people on a draft; publishing it scheduled reminders for series-wide
    registrations only, so someone registered for one occurrence of a recurring draft was never
    reminded."""
    owner = await create_user(db)
    draft = await weekly_event(api, owner, status="EVENT_STATUS_DRAFT")
    second = await db.fetchrow(
        "select id, starts_at from public.event_occurrences where event_id = $1 order by starts_at offset 1 limit 1",
        uuid.UUID(draft["id"]),
    )
    assert second is not None
    body = {"user_id": str(user.id), "occurrence_id": str(second["id"])}
    registered = await api.post(f"/api/events/{draft['id']}/participants", json=body, headers=owner.headers)
    assert registered.status_code == 200, registered.text
    backend = {"authorization": f"Bearer {service_role_token()}"}
    assert (await api.post(f"/api/events/{draft['id']}:approve", json={}, headers=backend)).status_code == 200
    reminders = await db.fetch(
        "select send_after from public.notifications where user_id = $1 and event_id = $2"
        " and kind = 'event_reminder' and channel = 'email' and status = 'pending'",
        user.id,
        uuid.UUID(draft["id"]),
    )
    assert [r["send_after"] for r in reminders] == [second["starts_at"] - timedelta(days=1)]
