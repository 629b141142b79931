"""Checks on request fields every service needs: ids and timestamps."""

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from google.protobuf import timestamp_pb2

from localplus_common.errors import invalid_argument

# Every timestamp the API accepts lies in [EARLIEST_TIMESTAMP, LATEST_TIMESTAMP): wide enough for any
# real event or query, and safely inside what Postgres, Python and protobuf can all represent (asyncpg
# writes Python's datetime.min/max as -infinity/infinity).
EARLIEST_TIMESTAMP = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(2200, 1, 1, tzinfo=UTC)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def etag_condition(etag: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The version a write is conditional on: the request's `etag`, or the `If-Match` header of an HTTP
    client (the gateway passes headers on as metadata) as `"3"`, `W/"3"` or `3`; `*` names no version.
    Both given, naming different versions: a 400 rather than a guess which one was meant."""
    header = next((value for key, value in metadata or () if key == "if-match" and isinstance(value, str)), "")
    version = header.strip().removeprefix("W/").strip('"')
    if version == "*":
        version = ""
    if etag and version and etag != version:
        raise invalid_argument("etag", "etag and If-Match name different versions; send one of them")
    return etag or version


def text(field: str, value: str) -> str:
    """A text field as given. Postgres cannot store NUL characters: refused here, naming the field."""
    if "\x00" in value:
        raise invalid_argument(field, f"{field} may not contain NUL characters")
    return value


def timestamp_or_none(message: Any, field: str, name: str = "") -> datetime | None:
    """A Timestamp field as an aware datetime, or None when the client left it unset. `name` is the
    field's path in the request for errors (default: `field`), e.g. `ticket_type.sales_ends_at`."""
    if not message.HasField(field):
        return None
    return timestamp_value(getattr(message, field), name or field)


def timestamp_value(stamp: timestamp_pb2.Timestamp, name: str) -> datetime:
    """A Timestamp (e.g. an element of a repeated field) as an aware datetime in the accepted range."""
    try:
        value = stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        value = None
    if value is None or not EARLIEST_TIMESTAMP <= value < LATEST_TIMESTAMP:
        raise invalid_argument(
            name, f"{name} must be from {EARLIEST_TIMESTAMP:%Y-%m-%d} up to {LATEST_TIMESTAMP:%Y-%m-%d} (UTC)"
        )
    return value


def set_timestamp(message: Any, field: str, value: datetime | None) -> None:
    """What Timestamp.FromDatetime writes (a naive value taken as UTC), several times faster: it is
    called for every timestamp of every row a response carries."""
    if value is not None:
        since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - UNIX_EPOCH
        stamp = getattr(message, field)
        stamp.seconds = since.days * 86_400 + since.seconds
        stamp.nanos = since.microseconds * 1_000
