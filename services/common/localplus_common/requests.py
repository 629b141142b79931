"""Checks on request fields every service needs: ids and timestamps."""

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from google.protobuf import timestamp_pb2

from localplus_common.errors import invalid_argument


def parse_uuid(field: str, value: str) -> UUID:
    if not value:
        raise invalid_argument(field, f"{field} is required")
    try:
        return UUID(value)
    except ValueError:
        raise invalid_argument(field, f"{field} must be a UUID") from None


def optional_uuid(field: str, value: str) -> UUID | None:
    """An id the client may leave empty."""
    return parse_uuid(field, value) if value else None


def text(field: str, value: str) -> str:
    """A text field as given. Postgres cannot store NUL characters: refused here, naming the field."""
    if "\x00" in value:
        raise invalid_argument(field, f"{field} may not contain NUL characters")
    return value


def timestamp_or_none(message: Any, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime, or None when the client left it unset."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise invalid_argument(field, f"{field} is out of range") from None


def set_timestamp(message: Any, field: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, field).FromDatetime(value)
