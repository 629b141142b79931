"""Use cases of notifications that users and admins call (the outbox itself is written by triggers and
delivered by localplus_notifications): push subscriptions, preferences, one-click unsubscribe, and the
admins' view of the outbox with its dead letters."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from localplus_common.access import signed_in
from localplus_common.auth import SERVER
from localplus_common.db import Connection, Database
from localplus_common.errors import failed_precondition, invalid_argument, not_found, permission_denied
from localplus_common.paging import Page, PageRequest, decode_keyset, page_of, time_value, uuid_value
from localplus_common.push_services import is_push_service, push_service_hosts
from localplus_common.unsubscribe import signing_secret_from_env, verify

KINDS = (
    "registration_confirmed", "waitlist_promoted", "event_cancelled", "event_moved", "occurrence_cancelled",
    "occurrence_moved", "order_paid", "refund_issued", "event_reminder",
)  # fmt: skip
CHANNELS = ("email", "push")
STATUSES = ("pending", "sent", "failed", "cancelled")
LIST_KEYSET = {"created_at": time_value, "id": uuid_value}
MAX_KEY_LENGTH = 200
BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


@dataclass(frozen=True)
class Preference:
    kind: str
    channel: str
    enabled: bool


async def put_push_subscription(db: Database, endpoint: str, p256dh: str, auth: str) -> asyncpg.Record:
    """The caller's subscription; an endpoint subscribed by another account before moves to the caller
    (a browser has one subscription per application server, whoever signed in last owns it)."""
    identity = signed_in()
    if identity.user_id is None:
        raise invalid_argument("subscription", "a push subscription belongs to a user")
    hosts = push_service_hosts()
    if len(endpoint) > 2000 or not is_push_service(endpoint, hosts):
        raise invalid_argument(
            "subscription.endpoint",
            f"endpoint must be an https URL of at most 2,000 characters on a browser push service ({', '.join(hosts)})",
        )
    for name, value in (("p256dh", p256dh), ("auth", auth)):
        if not 1 <= len(value) <= MAX_KEY_LENGTH or not BASE64URL.fullmatch(value):
            raise invalid_argument(f"subscription.keys.{name}", f"keys.{name} must be base64url")

    async def run(conn: Connection) -> asyncpg.Record:
        row = await conn.fetchrow(
            """
            insert into public.push_subscriptions (user_id, endpoint, p256dh, auth) values ($1, $2, $3, $4)
            on conflict (endpoint) do update
               set user_id = excluded.user_id, p256dh = excluded.p256dh, auth = excluded.auth, updated_at = now()
            returning *
            """,
            identity.user_id,
            endpoint,
            p256dh,
            auth,
        )
        assert row is not None
        return row

    # The server writes: the caller cannot see (so could not take over) another account's row.
    return await db.run(run, SERVER)


async def delete_push_subscription(db: Database, endpoint: str) -> None:
    signed_in()
    if not endpoint:
        raise invalid_argument("endpoint", "endpoint is required")

    async def run(conn: Connection) -> None:
        # Row-level security keeps this to the caller's own subscriptions.
        await conn.execute("delete from public.push_subscriptions where endpoint = $1", endpoint)

    await db.run(run)


async def _preferences(conn: Connection, user_id: UUID) -> list[Preference]:
    off = {
        (row["kind"], row["channel"]): row["enabled"]
        for row in await conn.fetch(
            "select kind, channel, enabled from public.notification_settings where user_id = $1", user_id
        )
    }
    return [Preference(kind, channel, off.get((kind, channel), True)) for kind in KINDS for channel in CHANNELS]


async def notification_settings(db: Database) -> list[Preference]:
    identity = signed_in()
    if identity.user_id is None:
        raise invalid_argument("user", "notification settings belong to a user")
    user_id = identity.user_id

    async def run(conn: Connection) -> list[Preference]:
        return await _preferences(conn, user_id)

    return await db.run(run)


async def update_notification_settings(db: Database, changes: list[Preference]) -> list[Preference]:
    identity = signed_in()
    if identity.user_id is None:
        raise invalid_argument("user", "notification settings belong to a user")
    user_id = identity.user_id
    if not changes:
        raise invalid_argument("settings.preferences", "give at least one preference to change")
    if len({(change.kind, change.channel) for change in changes}) < len(changes):
        raise invalid_argument("settings.preferences", "name each kind and channel at most once")

    async def run(conn: Connection) -> list[Preference]:
        await conn.execute(
            """
            insert into public.notification_settings (user_id, kind, channel, enabled)
            select $1, kind, channel, enabled
              from unnest($2::text[], $3::text[], $4::boolean[]) c (kind, channel, enabled)
            on conflict (user_id, kind, channel) do update set enabled = excluded.enabled
            """,
            user_id,
            [change.kind for change in changes],
            [change.channel for change in changes],
            [change.enabled for change in changes],
        )
        return await _preferences(conn, user_id)

    return await db.run(run)


def _unsubscribe_token(token: str) -> tuple[UUID, str, str]:
    secret = signing_secret_from_env()
    if not secret:
        raise failed_precondition("unsubscribe links are not configured here", "NOT_CONFIGURED")
    verified = verify(secret, token)
    if verified is None or verified[1] not in KINDS or verified[2] not in CHANNELS:
        raise invalid_argument("token", "this unsubscribe link is not valid")
    return verified


def unsubscribe_page(token: str) -> str:
    """The confirmation page of a link (GET changes nothing: link scanners open links too)."""
    _, kind, _ = _unsubscribe_token(token)
    label = html.escape(kind.replace("_", " "))
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head><body>'
        f"<p>Stop emails about: {label}?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form></body></html>'
    )


async def unsubscribe(db: Database, token: str) -> str:
    """Turn the link's kind off on its channel for its user (again is fine); the page saying so."""
    user_id, kind, channel = _unsubscribe_token(token)

    async def run(conn: Connection) -> None:
        await conn.execute(
            """
            insert into public.notification_settings (user_id, kind, channel, enabled)
            values ($1, $2, $3, false)
            on conflict (user_id, kind, channel) do update set enabled = false, updated_at = now()
            """,
            user_id,
            kind,
            channel,
        )

    # No one is signed in: the signature is the authority, and the server writes.
    await db.run(run, SERVER)
    label = html.escape(kind.replace("_", " "))
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribed</title></head><body>'
        f"<p>You will no longer get emails about: {label}.</p></body></html>"
    )


def _admin() -> None:
    if not signed_in().is_platform_admin:
        raise permission_denied("the notifications outbox is for platform admins")


async def list_notifications(db: Database, status: str | None, page: PageRequest) -> Page[asyncpg.Record]:
    """The outbox, newest first, optionally of one status (platform admins)."""
    _admin()
    after = decode_keyset(page, LIST_KEYSET)

    async def run(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            """
            select * from public.notifications
             where ($2::text is null or status = $2)
               and ($3::timestamptz is null or (created_at, id) < ($3, $4))
             order by created_at desc, id desc
             limit $1
            """,
            page.size + 1,
            status,
            *(after or (None, None)),
        )

    return page_of(await db.run(run), page, LIST_KEYSET)


async def retry_notification(db: Database, notification_id: UUID) -> asyncpg.Record:
    """A dead letter pending again with its attempts reset, due now (platform admins)."""
    _admin()

    async def run(conn: Connection) -> asyncpg.Record:
        current = await conn.fetchrow("select status from public.notifications where id = $1", notification_id)
        if current is None:
            raise not_found("no such notification")
        if current["status"] != "failed":
            raise failed_precondition("only a failed notification (a dead letter) can be retried", "NOT_FAILED")
        row = await conn.fetchrow(
            """
            update public.notifications
               set status = 'pending', attempts = 0, send_after = now(), last_error = '', updated_at = now()
             where id = $1 and status = 'failed'
            returning *
            """,
            notification_id,
        )
        if row is None:
            raise failed_precondition("only a failed notification (a dead letter) can be retried", "NOT_FAILED")
        await conn.execute("select pg_notify('localplus_notifications', '')")
        return row

    # Admins read the outbox under row-level security; only the server writes it.
    return await db.run(run, SERVER)
