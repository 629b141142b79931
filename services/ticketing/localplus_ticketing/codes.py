"""Ticket codes: what a ticket's QR code holds, signed with Ed25519 so that a scanner holding only the
public key can tell a real ticket of its event from a forged one, offline.

A code is `LP1.<ticket id and event id, 32 bytes>.<signature, 64 bytes>`, each part base64url without
padding (134 characters: a version 7 QR code)."""

import base64
import binascii
from dataclasses import dataclass
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PREFIX = "LP1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ScannedCode:
    ticket_id: UUID
    event_id: UUID


class TicketSigner:
    def __init__(self, seed_b64: str) -> None:
        try:
            seed = _unb64(seed_b64)
        except (binascii.Error, ValueError):
            raise SystemExit("TICKET_SIGNING_KEY must be 32 bytes, base64url") from None
        if len(seed) != 32:
            raise SystemExit("TICKET_SIGNING_KEY must be 32 bytes, base64url")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key: Ed25519PublicKey = self._key.public_key()

    @property
    def public_key_b64(self) -> str:
        return _b64(self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, ticket_id: UUID, event_id: UUID) -> str:
        payload = ticket_id.bytes + event_id.bytes
        return f"{PREFIX}.{_b64(payload)}.{_b64(self._key.sign(payload))}"

    def verify(self, code: str) -> ScannedCode | None:
        """The ticket a code names, if this key signed it; None for anything else."""
        prefix, _, rest = code.strip().partition(".")
        payload_b64, _, signature_b64 = rest.partition(".")
        if prefix != PREFIX or len(code) > 200:
            return None
        try:
            payload, signature = _unb64(payload_b64), _unb64(signature_b64)
        except (binascii.Error, ValueError):
            return None
        if len(payload) != 32:
            return None
        try:
            self.public_key.verify(signature, payload)
        except InvalidSignature:
            return None
        return ScannedCode(UUID(bytes=payload[:16]), UUID(bytes=payload[16:]))
