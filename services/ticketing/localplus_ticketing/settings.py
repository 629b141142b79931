"""The ticketing service's own settings (CONTRACT §2): Stripe, the key that signs ticket codes, how long a
reservation holds its tickets. Dev mode (LOCALPLUS_ENV=dev) falls back to localstripe and a published
signing key; anywhere else a missing one stops the service at start, naming it."""

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from localplus_common.config import dev_mode, exit_if_missing
from localplus_ticketing.codes import TicketSigner

DEV_STRIPE_API_KEY = "sk_test_localplus"
DEV_STRIPE_API_BASE = "http://127.0.0.1:8420"
DEV_STRIPE_WEBHOOK_SECRET = "whsec_localplus"
# A published Ed25519 seed (32 bytes, base64url): tickets signed with it are worthless outside dev mode.
DEV_TICKET_SIGNING_KEY = base64.urlsafe_b64encode(b"localplus-dev-ticket-signing-key").decode().rstrip("=")
DEFAULT_HOLD_MINUTES = 10


@dataclass(frozen=True)
class TicketingSettings:
    stripe_api_key: str
    stripe_api_base: str  # "" for Stripe itself
    stripe_webhook_secret: str
    ticket_signing_key: str  # Ed25519 seed, base64url
    hold: timedelta
    # How often unpaid orders past their hold are expired (holds stop counting the moment they expire).
    sweep_every: timedelta

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "TicketingSettings":
        dev = dev_mode(env)
        api_key = env.get("STRIPE_API_KEY") or (DEV_STRIPE_API_KEY if dev else "")
        webhook_secret = env.get("STRIPE_WEBHOOK_SECRET") or (DEV_STRIPE_WEBHOOK_SECRET if dev else "")
        signing_key = env.get("TICKET_SIGNING_KEY") or (DEV_TICKET_SIGNING_KEY if dev else "")
        exit_if_missing(
            {
                "STRIPE_API_KEY": api_key,
                "STRIPE_WEBHOOK_SECRET": webhook_secret,
                "TICKET_SIGNING_KEY": signing_key,
            }
        )
        TicketSigner(signing_key)  # a malformed key stops the service here too, before it connects anywhere
        return cls(
            stripe_api_key=api_key,
            stripe_api_base=env.get("STRIPE_API_BASE") or (DEV_STRIPE_API_BASE if dev else ""),
            stripe_webhook_secret=webhook_secret,
            ticket_signing_key=signing_key,
            hold=timedelta(minutes=float(env.get("ORDER_HOLD_MINUTES") or DEFAULT_HOLD_MINUTES)),
            sweep_every=timedelta(seconds=float(env.get("ORDER_SWEEP_SECONDS") or 30)),
        )
