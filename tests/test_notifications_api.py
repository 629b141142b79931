"""Notification preferences, one-click unsubscribe, and the admins' dead letters through the gateway;
a failing SMTP server: retries with backoff, dead letters after the limit, an admin retry delivers."""

from __future__ import annotations

import itertools
import re
import uuid
from pathlib import Path

import asyncpg
import httpx

from localplus_dev.mail import MaildirHandler, serve
from localplus_dev.postgres import free_port
from localplus_dev.push import PushEndpoint
from localplus_dev.stack import Stack
from tests.notifications_support import WORKER, create_users, spawn_worker, wait_for_mail, wait_sql, wait_until
from tests.support import User, create_event, create_user

KINDS = 9
CANCELLED_EMAIL = {"kind": "NOTIFICATION_KIND_EVENT_CANCELLED", "channel": "NOTIFICATION_CHANNEL_EMAIL"}


def enabled(settings: dict[str, object]) -> dict[tuple[str, str], bool]:
    preferences = settings["preferences"]
    assert isinstance(preferences, list)
    return {(p["kind"], p["channel"]): p.get("enabled", False) for p in preferences}


async def register(api: httpx.AsyncClient, event: dict[str, object], who: User) -> None:
    response = await api.post(f"/api/events/{event['id']}/participants", json={}, headers=who.headers)
    assert response.status_code == 200, response.text


async def test_preferences_are_each_users_own(api: httpx.AsyncClient, user: User, other_user: User) -> None:
    assert (await api.get("/api/me/notification-settings")).status_code == 401
    initial = await api.get("/api/me/notification-settings", headers=user.headers)
    assert initial.status_code == 200, initial.text
    assert len(enabled(initial.json())) == KINDS * 2 and all(enabled(initial.json()).values())

    changed = await api.patch(
        "/api/me/notification-settings",
        json={"preferences": [{**CANCELLED_EMAIL, "enabled": False}]},
        headers=user.headers,
    )
    assert changed.status_code == 200, changed.text
    now = enabled(changed.json())
    assert now[("NOTIFICATION_KIND_EVENT_CANCELLED", "NOTIFICATION_CHANNEL_EMAIL")] is False
    assert sum(1 for value in now.values() if not value) == 1
    assert all(enabled((await api.get("/api/me/notification-settings", headers=other_user.headers)).json()).values())

    for bad in ({"kind": "NOTIFICATION_KIND_EVENT_CANCELLED"}, {"channel": "NOTIFICATION_CHANNEL_PUSH"}, {}):
        response = await api.patch("/api/me/notification-settings", json={"preferences": [bad]}, headers=user.headers)
        assert response.status_code == 400, response.text
    # One kind and channel named twice (one upsert cannot change a row twice: it was a 500).
    twice = [{**CANCELLED_EMAIL, "enabled": True}, {**CANCELLED_EMAIL, "enabled": False}]
    response = await api.patch("/api/me/notification-settings", json={"preferences": twice}, headers=user.headers)
    assert response.status_code == 400, response.text


async def test_an_opted_out_kind_is_not_sent(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User
) -> None:
    owner = await create_user(db)
    title = f"Opt-out {uuid.uuid4().hex[:8]}"
    event = await create_event(api, owner, title=title, status="EVENT_STATUS_PUBLISHED")
    response = await api.patch(
        "/api/me/notification-settings",
        json={"preferences": [{**CANCELLED_EMAIL, "enabled": False}]},
        headers=user.headers,
    )
    assert response.status_code == 200
    await register(api, event, user)
    await register(api, event, other_user)
    assert (await api.post(f"/api/events/{event['id']}:cancel", json={}, headers=owner.headers)).status_code == 200
    cancelled = await wait_for_mail(stack, lambda m: m.kind == "event_cancelled" and title in m.subject, 1)
    assert [mail.to for mail in cancelled] == [f"{other_user.id}@example.test"]
    # The opted-out user still got the kinds they left on.
    confirmed = await wait_for_mail(stack, lambda m: m.kind == "registration_confirmed" and title in m.subject, 2)
    assert {mail.to for mail in confirmed} == {f"{user.id}@example.test", f"{other_user.id}@example.test"}


async def test_one_click_unsubscribe_works_without_signing_in(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    title = f"Unsubscribe {uuid.uuid4().hex[:8]}"
    event = await create_event(api, await create_user(db), title=title, status="EVENT_STATUS_PUBLISHED")
    await register(api, event, user)
    (mail,) = await wait_for_mail(stack, lambda m: title in m.subject, 1)
    link = re.fullmatch(r"<(.+)>", str(mail.message["List-Unsubscribe"]))
    assert link is not None
    path = link.group(1).removeprefix(stack.gateway_url)

    page = await api.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in page.text
    key = ("NOTIFICATION_KIND_REGISTRATION_CONFIRMED", "NOTIFICATION_CHANNEL_EMAIL")
    settings = await api.get("/api/me/notification-settings", headers=user.headers)
    assert enabled(settings.json())[key] is True, "opening the link changes nothing"

    # What a mail client sends for RFC 8058, with no credentials at all.
    form = {"content-type": "application/x-www-form-urlencoded"}
    for _ in range(2):  # twice is fine
        done = await api.post(path, content=b"List-Unsubscribe=One-Click", headers=form)
        assert done.status_code == 200, done.text
    settings = await api.get("/api/me/notification-settings", headers=user.headers)
    assert enabled(settings.json())[key] is False

    token = path.rsplit("/", 1)[1]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    refused = await api.post(f"/api/unsubscribe/{forged}", content=b"List-Unsubscribe=One-Click", headers=form)
    assert refused.status_code == 400
    assert (await api.get("/api/unsubscribe/not-a-token")).status_code == 400


async def test_a_failing_smtp_server_retries_with_backoff_then_dead_letters_an_admin_retries(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, admin: User, user: User, tmp_path: Path
) -> None:
    failing = MaildirHandler(tmp_path / "refused", fail=True)
    port = free_port()
    controller = serve(failing, "127.0.0.1", port)
    stack.supervisor.child(WORKER).stop()
    flaky = spawn_worker(
        stack,
        "notifications-failing",
        SMTP_URL=f"smtp://127.0.0.1:{port}",
        NOTIFICATIONS_MAX_ATTEMPTS="4",
        NOTIFICATIONS_BACKOFF_SECONDS="0.5",
        NOTIFICATIONS_POLL_SECONDS="0.1",
    )
    title = f"Dead letter {uuid.uuid4().hex[:8]}"
    try:
        event = await create_event(api, await create_user(db), title=title, status="EVENT_STATUS_PUBLISHED")
        people = await create_users(db, 3)
        for person in people:
            await db.execute(
                "insert into public.event_participants (event_id, user_id) values ($1, $2)",
                uuid.UUID(str(event["id"])),
                person,
            )
        ids = [
            row["id"]
            for row in await db.fetch(
                "select id from public.notifications where event_id = $1 and kind = 'registration_confirmed'",
                uuid.UUID(str(event["id"])),
            )
        ]
        assert len(ids) == 3
        await wait_sql(
            db, "select count(*) = 3 from public.notifications where id = any($1) and status = 'failed'", ids
        )
    finally:
        flaky.stop()
        controller.stop()
        stack.supervisor.restart(WORKER)
    rows = await db.fetch("select attempts, last_error from public.notifications where id = any($1)", ids)
    assert {row["attempts"] for row in rows} == {4}
    assert all("451" in row["last_error"] for row in rows)
    # Each waited longer than the one before: 0.5 s, 1 s, 2 s (and up to 20% more) at least.
    for message_id in (f"<{i}@notifications.localplus>" for i in ids):
        times = failing.refused[message_id]
        assert len(times) == 4
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap >= 0.5 * 2**n for n, gap in enumerate(gaps)), gaps
        assert gaps[2] > gaps[0]

    # The dead letters, as an admin sees them; others may not look.
    assert (await api.get("/api/admin/notifications", headers=user.headers)).status_code == 403
    query: dict[str, str | int] = {"status": "NOTIFICATION_STATUS_FAILED", "page_size": 100}
    listed = await api.get("/api/admin/notifications", params=query, headers=admin.headers)
    assert listed.status_code == 200, listed.text
    dead = {n["id"]: n for n in listed.json()["notifications"]}
    assert {str(i) for i in ids} <= set(dead)
    assert all(dead[str(i)]["status"] == "NOTIFICATION_STATUS_FAILED" for i in ids)

    for notification_id in ids:
        retried = await api.post(f"/api/admin/notifications/{notification_id}:retry", json={}, headers=admin.headers)
        assert retried.status_code == 200, retried.text
        assert retried.json()["notification"]["status"] == "NOTIFICATION_STATUS_PENDING"
    delivered = await wait_for_mail(stack, lambda m: title in m.subject, 3)
    assert sorted(mail.to for mail in delivered) == sorted(f"{person}@example.test" for person in people)
    await wait_sql(db, "select count(*) = 3 from public.notifications where id = any($1) and status = 'sent'", ids)
    # Only a dead letter can be retried; an unknown one is not found.
    again = await api.post(f"/api/admin/notifications/{ids[0]}:retry", json={}, headers=admin.headers)
    assert again.status_code == 400, again.text
    missing = await api.post(f"/api/admin/notifications/{uuid.uuid4()}:retry", json={}, headers=admin.headers)
    assert missing.status_code == 404
    await wait_until(lambda: stack.supervisor.child(WORKER).alive, what="the worker back")


async def test_web_push_reaches_each_subscription_encrypted_to_its_keys(
    stack: Stack, api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    push = PushEndpoint()
    try:
        phone, laptop, gone = push.subscribe(), push.subscribe(), push.subscribe()
        for subscription in (phone, laptop, gone, phone):  # the same one again is fine
            response = await api.put("/api/me/push-subscriptions", json=subscription, headers=user.headers)
            assert response.status_code == 200, response.text
            assert response.json()["endpoint"] == subscription["endpoint"]
        # Only browser push services: the worker POSTs to the endpoint, so anything else would let a
        # user make it call hosts inside the network.
        for endpoint in (
            "ftp://example.test/x",
            "https://169.254.169.254/latest/meta-data/",
            "https://events:50051/localplus.events.v1.EventsService/GetEvent",
            "https://fcm.googleapis.com@10.0.0.1/fcm/send/x",
            "https://fcm.googleapis.com.attacker.example/fcm/send/x",
            "http://fcm.googleapis.com/fcm/send/x",
            "https://fcm.googleapis.com:bad/x",
            "https://fcm.googleapis.com:5432/fcm/send/x",
        ):
            bad = {"endpoint": endpoint, "keys": phone["keys"]}
            refused = await api.put("/api/me/push-subscriptions", json=bad, headers=user.headers)
            assert refused.status_code == 400 and "push service" in refused.text, (endpoint, refused.text)
        stranger = await create_user(db)
        fcm = {"endpoint": "https://fcm.googleapis.com/fcm/send/abc:def", "keys": phone["keys"]}
        assert (await api.put("/api/me/push-subscriptions", json=fcm, headers=stranger.headers)).status_code == 200
        # A row from before the rule is dropped by the worker, unsent (a request there would hang).
        internal = "https://10.255.255.1/push/x"
        await db.execute(
            "insert into public.push_subscriptions (user_id, endpoint, p256dh, auth) values ($1, $2, $3, $4)",
            user.id,
            internal,
            phone["keys"]["p256dh"],
            phone["keys"]["auth"],
        )
        del push.keys[str(gone["endpoint"]).removeprefix(push.url)]  # that browser unsubscribed

        title = f"Push {uuid.uuid4().hex[:8]}"
        owner = await create_user(db)
        event = await create_event(api, owner, title=title, status="EVENT_STATUS_PUBLISHED")
        await register(api, event, user)
        await wait_until(lambda: push.messages(phone) and push.messages(laptop), what="both pushes")
        (message,) = push.messages(phone)
        assert message["kind"] == "registration_confirmed" and title in message["title"]
        assert push.messages(laptop) == [message]
        # The push service said 410 for the gone one: it is forgotten.
        for forgotten in (gone["endpoint"], internal):
            await wait_sql(
                db, "select not exists (select 1 from public.push_subscriptions where endpoint = $1)", forgotten
            )

        removed = await api.delete(
            "/api/me/push-subscriptions", params={"endpoint": laptop["endpoint"]}, headers=user.headers
        )
        assert removed.status_code == 200, removed.text
        assert (await api.post(f"/api/events/{event['id']}:cancel", json={}, headers=owner.headers)).status_code == 200
        await wait_until(lambda: len(push.messages(phone)) == 2, what="the cancellation pushed")
        assert push.messages(phone)[1]["kind"] == "event_cancelled"
        assert len(push.messages(laptop)) == 1
        assert push.duplicates == 0
    finally:
        push.stop()
