"""Web push with VAPID (RFC 8030, 8291, 8292) through pywebpush: one encrypted message to each of the
user's subscriptions. The push `Topic` is the outbox row's id, so a push service holding an undelivered
copy replaces it with a resend instead of delivering both."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import http_ece
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from localplus_common.push_services import is_push_service
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


def load_vapid(key: str) -> Vapid | None:
    """The VAPID key (a PEM file, or the raw key in base64url); None when unset. A bad one stops the
    worker at start, naming the setting."""
    if not key:
        return None
    try:
        return Vapid.from_file(key) if os.path.isfile(key) else Vapid.from_string(key)
    except (ValueError, TypeError, OSError) as error:
        raise SystemExit(f"VAPID_PRIVATE_KEY is not a usable P-256 key: {error}") from None


def send(settings: WorkerSettings, vapid: Vapid, message: Message) -> PushResult:
    """Blocking (run it in a thread). Raises WebPushException when a subscription's service failed
    in a way worth retrying."""
    data = payload(message)
    gone: list[str] = []
    delivered = 0
    for subscription in message.subscriptions:
        if not is_push_service(subscription["endpoint"], settings.push_service_hosts):
            gone.append(subscription["endpoint"])  # never a request to a host that is not a push service
            continue
        info = {
            "endpoint": subscription["endpoint"],
            "keys": {"p256dh": subscription["p256dh"], "auth": subscription["auth"]},
        }
        try:
            webpush(
                info,
                data=data,
                vapid_private_key=vapid,
                vapid_claims={"sub": settings.vapid_subject},
                ttl=TTL_SECONDS,
                headers={"Topic": message.id.hex, "Urgency": "normal"},
                timeout=30,
            )
            delivered += 1
        except WebPushException as error:
            # No response: pywebpush refused the subscription's keys before sending (our own VAPID
            # key was checked at start, by load_vapid); 404/410: the push service forgot it.
            if error.response is None or error.response.status_code in (404, 410):
                gone.append(subscription["endpoint"])
                continue
            raise
        except (ValueError, TypeError, http_ece.ECEException):
            # Keys nothing can encrypt to (cryptography refuses them): never deliverable.
            gone.append(subscription["endpoint"])
    return PushResult(delivered=delivered, gone=gone)
