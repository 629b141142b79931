"""Web push with VAPID (RFC 8030, 8291, 8292) through pywebpush: one encrypted message to each of the
user's subscriptions. The push `Topic` is the outbox row's id, so a push service holding an undelivered
copy replaces it with a resend instead of delivering both."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pywebpush import WebPushException, webpush

from localplus_notifications.config import WorkerSettings
from localplus_notifications.messages import render
from localplus_notifications.outbox import Message

TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class PushResult:
    delivered: int
    # Subscriptions the push service says are gone (404/410): the worker deletes them.
    gone: list[str]


def payload(message: Message) -> bytes:
    rendered = render(message.facts, None)
    body = rendered.text.split("\n\n")[0]
    return json.dumps(
        {"id": str(message.id), "kind": message.kind, "title": rendered.subject, "body": body},
        ensure_ascii=False,
    ).encode()


def send(settings: WorkerSettings, message: Message) -> PushResult:
    """Blocking (run it in a thread). Raises WebPushException when a subscription's service failed
    in a way worth retrying."""
    data = payload(message)
    gone: list[str] = []
    delivered = 0
    for subscription in message.subscriptions:
        info = {
            "endpoint": subscription["endpoint"],
            "keys": {"p256dh": subscription["p256dh"], "auth": subscription["auth"]},
        }
        try:
            webpush(
                info,
                data=data,
                vapid_private_key=settings.vapid_private_key,
                vapid_claims={"sub": settings.vapid_subject},
                ttl=TTL_SECONDS,
                headers={"Topic": message.id.hex, "Urgency": "normal"},
                timeout=30,
            )
            delivered += 1
        except WebPushException as error:
            status = error.response.status_code if error.response is not None else None
            if status in (404, 410):
                gone.append(subscription["endpoint"])
                continue
            raise
    return PushResult(delivered=delivered, gone=gone)
