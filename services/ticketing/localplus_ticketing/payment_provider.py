"""Stripe, as the ticketing service uses it (the `stripe` package, async over httpx). Every write
carries an idempotency key derived from our own ids, so a retry after a timeout or a crash never
charges or refunds twice. localstripe stands in for Stripe in dev mode and in the tests."""

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import grpc
import stripe
from stripe._base_address import BaseAddresses

from localplus_common.errors import ApiError, invalid_argument
from localplus_ticketing.settings import TicketingSettings

log = logging.getLogger(__name__)
# How far a webhook's signed timestamp may lag (Stripe's default): older deliveries are replays.
WEBHOOK_TOLERANCE_S = 300

PROVIDER_UNAVAILABLE = ApiError(
    grpc.StatusCode.UNAVAILABLE, "the payment provider did not answer; try again", "PAYMENT_PROVIDER_UNAVAILABLE"
)


NOT_AN_EVENT = invalid_argument("payload", "the webhook body is not a Stripe event")
# The fields of an event's object that its handling reads besides `id`: amounts, and the rest's types.
SUBJECT_AMOUNTS = ("amount", "amount_received", "amount_total", "amount_refunded")
SUBJECT_FIELDS: dict[str, type] = {
    "metadata": dict,
    "currency": str,
    "payment_intent": str,
    "payment_status": str,
    "client_reference_id": str,
}


def _is_amount(value: object) -> bool:
    """A whole number of minor units; as digits too (localstripe keeps an update's form value as sent)."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())


def _is_stripe_event(event: dict[str, Any]) -> bool:
    """Whether a signed body has the shape of a Stripe event as far as its handling reads it: the
    signature proves who sent it, not that it is well formed (a 500 for a body Stripe never sends)."""
    subject = event["data"].get("object") if isinstance(event.get("data"), dict) else None
    if not (isinstance(event.get("id"), str) and event["id"] and isinstance(event.get("type"), str)):
        return False
    if not (isinstance(subject, dict) and isinstance(subject.get("id"), str)):
        return False
    return all(subject.get(name) is None or _is_amount(subject[name]) for name in SUBJECT_AMOUNTS) and all(
        subject.get(name) is None or isinstance(subject[name], kind) for name, kind in SUBJECT_FIELDS.items()
    )


@dataclass(frozen=True)
class Checkout:
    """What the buyer pays with: a PaymentIntent's client secret or a Checkout Session's page."""

    payment_intent_id: str = ""
    client_secret: str = ""
    checkout_session_id: str = ""
    checkout_url: str = ""


@dataclass(frozen=True)
class IntentState:
    """A PaymentIntent as Stripe has it: its status, and what it took (amount_received) in which currency."""

    status: str
    amount: int
    currency: str


@dataclass(frozen=True)
class LineItem:
    name: str
    unit_amount: int
    quantity: int


class PaymentProvider:
    def __init__(self, settings: TicketingSettings) -> None:
        base: BaseAddresses = {"api": settings.stripe_api_base} if settings.stripe_api_base else {}
        client = stripe.HTTPXClient()
        self._client = stripe.StripeClient(settings.stripe_api_key, base_addresses=base, http_client=client)
        self._webhook_secret = settings.stripe_webhook_secret

    async def payment_intent(self, order_id: UUID, amount: int, currency: str) -> Checkout:
        intent = await self._call(
            self._client.v1.payment_intents.create_async,
            {
                "amount": amount,
                "currency": currency.lower(),
                "payment_method_types": ["card"],
                "metadata": {"order_id": str(order_id)},
            },
            f"order-{order_id}-payment-intent",
        )
        return Checkout(payment_intent_id=intent.id, client_secret=intent.client_secret or "")

    async def promotion_payment_intent(
        self, promotion_id: UUID, amount: int, currency: str, draft_version: datetime
    ) -> Checkout:
        """The PaymentIntent for a promotion's budget (its metadata names the promotion, for the webhook),
        one per version of the draft (its `updated_at`)."""
        intent = await self._call(
            self._client.v1.payment_intents.create_async,
            {
                "amount": amount,
                "currency": currency.lower(),
                "payment_method_types": ["card"],
                "metadata": {"promotion_id": str(promotion_id)},
            },
            # Checkouts of one version share one PaymentIntent. Every change of the draft makes a new
            # version, so one that follows a checkout that found the draft changed (and cancelled its
            # PaymentIntent) does not get the cancelled PaymentIntent back, even for the same budget.
            f"promotion-{promotion_id}-payment-intent-{draft_version.isoformat()}",
        )
        return Checkout(payment_intent_id=intent.id, client_secret=intent.client_secret or "")

    async def checkout_session(
        self, order_id: UUID, items: list[LineItem], currency: str, success_url: str, cancel_url: str
    ) -> Checkout:
        session = await self._call(
            self._client.v1.checkout.sessions.create_async,
            {
                "mode": "payment",
                "client_reference_id": str(order_id),
                "success_url": success_url,
                "cancel_url": cancel_url,
                "line_items": [
                    {
                        "quantity": item.quantity,
                        "price_data": {
                            "currency": currency.lower(),
                            "unit_amount": item.unit_amount,
                            "product_data": {"name": item.name},
                        },
                    }
                    for item in items
                ],
                "metadata": {"order_id": str(order_id)},
                "payment_intent_data": {"metadata": {"order_id": str(order_id)}},
            },
            f"order-{order_id}-checkout-session",
        )
        return Checkout(checkout_session_id=session.id, checkout_url=session.url or "")

    async def cancel_payment_intent(self, payment_intent_id: str) -> None:
        """Best effort, so that a buyer cannot pay for an order that is gone; a payment that got
        through anyway is refunded when its webhook arrives."""
        try:
            await self._client.v1.payment_intents.cancel_async(
                payment_intent_id, options={"idempotency_key": f"{payment_intent_id}-cancel"}
            )
        except stripe.StripeError as error:
            log.warning("could not cancel %s: %s", payment_intent_id, error.user_message or error)

    async def refund(self, refund_id: UUID, payment_intent_id: str, amount: int) -> str:
        """Refund `amount` of a payment, once per refund id. Stripe keeps idempotency keys for 24 hours
        (localstripe not at all), so a refund already made under this id, found by its metadata, is
        answered as it is: a retry days after a crash between refunding and recording never refunds twice."""
        try:
            made = await self._client.v1.refunds.list_async({"payment_intent": payment_intent_id, "limit": 100})
            async for existing in made.auto_paging_iter():
                if (existing.to_dict().get("metadata") or {}).get("refund_id") == str(refund_id):
                    return str(existing.id)
        except stripe.StripeError as error:
            log.warning("could not list the refunds of %s: %s", payment_intent_id, error)
            raise PROVIDER_UNAVAILABLE from None
        refund = await self._call(
            self._client.v1.refunds.create_async,
            {"payment_intent": payment_intent_id, "amount": amount, "metadata": {"refund_id": str(refund_id)}},
            f"refund-{refund_id}",
        )
        return str(refund.id)

    async def payment_intent_state(self, payment_intent_id: str) -> IntentState:
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(payment_intent_id)
        except stripe.StripeError as error:
            log.warning("could not read %s: %s", payment_intent_id, error)
            raise PROVIDER_UNAVAILABLE from None
        # What it took; localstripe leaves amount_received out (its amount is what it took).
        received = getattr(intent, "amount_received", None) or intent.amount
        return IntentState(str(intent.status), int(received or 0), str(intent.currency))

    def verified_event(self, payload: bytes, signature: str) -> dict[str, Any]:
        """The event Stripe signed, or a 400 for a forged, altered or replayed delivery."""
        try:
            event = stripe.Webhook.construct_event(payload, signature, self._webhook_secret, WEBHOOK_TOLERANCE_S)
        except stripe.SignatureVerificationError:
            raise invalid_argument("stripe-signature", "the webhook signature is not valid") from None
        # Not JSON, or JSON but not an object (stripe reads a list or a string with `.get`).
        except (ValueError, TypeError, AttributeError):
            raise NOT_AN_EVENT from None
        result: dict[str, Any] = event.to_dict()
        if not _is_stripe_event(result):
            raise NOT_AN_EVENT
        return result

    async def _call(self, create: Any, params: dict[str, Any], idempotency_key: str) -> Any:
        try:
            return await create(params, options={"idempotency_key": idempotency_key})
        except stripe.StripeError as error:
            log.warning("stripe refused %s: %s", idempotency_key, error)
            raise PROVIDER_UNAVAILABLE from None
