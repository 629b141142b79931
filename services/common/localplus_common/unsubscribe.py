"""One-click unsubscribe links (RFC 8058): a token naming a user, a kind of notification and a channel,
signed with HMAC-SHA256, so the link works without signing in and cannot be forged for someone else.
The worker signs the links it puts in emails; the events service checks them."""

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from uuid import UUID

from localplus_common.config import dev_mode

DEV_SIGNING_SECRET = "localplus-dev-notifications-signing-secret"
SECRET_VAR = "NOTIFICATIONS_SIGNING_SECRET"


def signing_secret_from_env(env: Mapping[str, str] = os.environ) -> str:
    """NOTIFICATIONS_SIGNING_SECRET; in dev mode a published default. "" means unset."""
    return env.get(SECRET_VAR) or (DEV_SIGNING_SECRET if dev_mode(env) else "")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), b"unsubscribe:" + payload, hashlib.sha256).digest()[:16]


def sign(secret: str, user_id: UUID, kind: str, channel: str) -> str:
    payload = f"{user_id}:{kind}:{channel}".encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify(secret: str, token: str) -> tuple[UUID, str, str] | None:
    """(user, kind, channel) of a token this secret signed, else None."""
    try:
        encoded, mac = token.split(".")
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
        if not hmac.compare_digest(given, _mac(secret, payload)):
            return None
        user, kind, channel = payload.decode().split(":")
        return UUID(user), kind, channel
    except ValueError:
        return None
