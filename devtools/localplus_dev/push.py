"""Web push for local development: the dev VAPID key, and a push endpoint (a stand-in for a browser's
push service) that decrypts what it receives with the subscription's keys, as the browser would."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def dev_vapid_key(path: Path) -> Path:
    """The application server's VAPID key (P-256, PEM) at `path`, made on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
    return path


class PushEndpoint:
    """A push service on 127.0.0.1 for the tests: `subscribe()` makes a browser-like subscription (its
    own P-256 key and auth secret); every message posted to it is decrypted (RFC 8291, aes128gcm) with
    them and kept, once per push `Topic` (a resend with the same Topic replaces, as push services do)."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.topics: set[str] = set()
        self.duplicates = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = endpoint.receive(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def subscribe(self) -> dict[str, Any]:
        """A PushSubscription's JSON, as a browser's `subscription.toJSON()` gives it."""
        path = f"/push/{secrets.token_urlsafe(12)}"
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        self.keys[path] = (key, auth)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"endpoint": self.url + path, "keys": {"p256dh": _b64(public), "auth": _b64(auth)}}

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> int:
        lowered = {name.lower(): value for name, value in headers.items()}
        if path not in self.keys:
            return 410  # unsubscribed: the sender should forget it
        if not lowered.get("authorization", "").startswith("vapid "):
            return 401
        key, auth = self.keys[path]
        plain = http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm")
        topic = lowered.get("topic", "")
        with self.lock:
            if topic and topic in self.topics:
                self.duplicates += 1
                return 201
            self.topics.add(topic)
            self.received.setdefault(path, []).append(json.loads(plain))
        return 201

    def messages(self, subscription: dict[str, Any]) -> list[dict[str, Any]]:
        path = str(subscription["endpoint"]).removeprefix(self.url)
        with self.lock:
            return list(self.received.get(path, []))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
