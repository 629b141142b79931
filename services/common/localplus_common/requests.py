"""Checks on request fields every service needs: ids, page sizes and page tokens (AIP-158)."""

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from google.protobuf import timestamp_pb2

from localplus_common.errors import invalid_argument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def parse_uuid(field: str, value: str) -> UUID:
    if not value:
        raise invalid_argument(field, f"{field} is required")
    try:
        return UUID(value)
    except ValueError:
        raise invalid_argument(field, f"{field} must be a UUID") from None


def page_size(value: int) -> int:
    if value < 0 or value > MAX_PAGE_SIZE:
        raise invalid_argument("page_size", f"page_size must be between 0 and {MAX_PAGE_SIZE}")
    return value or DEFAULT_PAGE_SIZE


def encode_page_token(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> dict[str, Any] | None:
    """The keyset position a page token stands for; None for the first page."""
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise invalid_argument("page_token", "page_token is not valid") from None
    if not isinstance(position, dict):
        raise invalid_argument("page_token", "page_token is not valid")
    return position


def token_datetime(position: dict[str, Any], key: str) -> datetime:
    try:
        return datetime.fromisoformat(str(position[key]))
    except (KeyError, ValueError):
        raise invalid_argument("page_token", "page_token is not valid") from None


def token_uuid(position: dict[str, Any], key: str) -> UUID:
    try:
        return UUID(str(position[key]))
    except (KeyError, ValueError):
        raise invalid_argument("page_token", "page_token is not valid") from None


def timestamp_or_none(message: Any, field: str, name: str = "") -> datetime | None:
    """A Timestamp field as an aware datetime, or None when the client left it unset. `name` is
    the field's path in the request for errors (default: `field`), e.g. `ticket_type.sales_ends_at`."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        name = name or field
        raise invalid_argument(name, f"{name} is out of range") from None


def set_timestamp(message: Any, field: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, field).FromDatetime(value)
