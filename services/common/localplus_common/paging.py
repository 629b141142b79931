"""Paging every list needs (AIP-158): page sizes, opaque page tokens and keyset positions.

A page token is the keyset position after the last row of a page (the sort key of that row), as
url-safe base64 JSON, so rows added or removed between pages are neither repeated nor skipped. It also
holds a digest of the request's other parameters (its scope): a token sent with different filters is
a 400 naming page_token, not a page of another list (AIP-158); only page_size may change."""

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import asyncpg
from google.protobuf.message import Message

from localplus_common.errors import invalid_argument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

T = TypeVar("T")
# A list's sort key: each column, in order, with how to read its value back from a token (a bad
# value raises ValueError or TypeError).
Keyset = Mapping[str, Callable[[Any], Any]]
# Where a token holds its scope, beside the keyset columns.
SCOPE = "scope"


@dataclass(frozen=True)
class PageRequest:
    """What a list request asks for: a checked page size, the client's page token and the scope that
    token must have been issued for (request_scope)."""

    size: int
    token: str
    scope: str = ""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def page_request(request: Message, max_size: int = MAX_PAGE_SIZE, default_size: int = DEFAULT_PAGE_SIZE) -> PageRequest:
    """The page a list request (any message with page_size and page_token) asks for."""
    # Every list request has both fields; Message itself does not declare them.
    page_size: int = getattr(request, "page_size")  # noqa: B009
    if page_size < 0 or page_size > max_size:
        raise invalid_argument("page_size", f"page_size must be between 0 and {max_size}")
    token: str = getattr(request, "page_token")  # noqa: B009
    return PageRequest(page_size or min(default_size, max_size), token, request_scope(request))


def request_scope(request: Message) -> str:
    """A digest of the list and every parameter of `request` but page_size and page_token: what its
    page tokens are good for. Path parameters (an event's id) count too."""
    others = type(request)()
    others.CopyFrom(request)
    others.ClearField("page_size")
    others.ClearField("page_token")
    digest = hashlib.sha256(
        request.DESCRIPTOR.full_name.encode() + b"\0" + others.SerializeToString(deterministic=True)
    )
    return base64.urlsafe_b64encode(digest.digest()[:12]).decode()


def encode_page_token(position: dict[str, Any], scope: str) -> str:
    raw = json.dumps({**position, SCOPE: scope}, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> dict[str, Any] | None:
    """The keyset position a page token stands for, its scope not yet checked (check_scope); None for
    the first page."""
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise invalid_argument("page_token", "page_token is not valid") from None
    if not isinstance(position, dict):
        raise invalid_argument("page_token", "page_token is not valid")
    return position


def check_scope(position: Mapping[str, Any], page: PageRequest) -> None:
    """The token was issued for this request's parameters (checked once its position reads well)."""
    if position.get(SCOPE) != page.scope:
        raise invalid_argument(
            "page_token",
            "page_token belongs to a request with other parameters: send the same ones as the request "
            "that returned it (only page_size may change)",
        )


# How keyset values come back from a token.


def int32_value(value: Any) -> int:
    if type(value) is not int or not -(2**31) <= value < 2**31:
        raise ValueError(value)
    return value


def int64_value(value: Any) -> int:
    if type(value) is not int or not -(2**63) <= value < 2**63:
        raise ValueError(value)
    return value


def text_value(value: Any) -> str:
    if type(value) is not str:
        raise ValueError(value)
    return value


def time_value(value: Any) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(value)
    return moment.astimezone(UTC)


def uuid_value(value: Any) -> UUID:
    return UUID(str(value))


def encode_keyset(row: asyncpg.Record, keyset: Keyset, scope: str) -> str:
    return encode_page_token({column: row[column] for column in keyset}, scope)


def token_value(position: Mapping[str, Any], key: str, parse: Callable[[Any], T]) -> T:
    """One value of a decoded page token; a missing or malformed one makes the token invalid."""
    try:
        return parse(position[key])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise invalid_argument("page_token", "page_token is not valid") from None


def decode_keyset(page: PageRequest, keyset: Keyset) -> list[Any] | None:
    """The sort key the page's token holds, column by column; None for the first page."""
    position = decode_page_token(page.token)
    if position is None:
        return None
    values = [token_value(position, column, parse) for column, parse in keyset.items()]
    check_scope(position, page)
    return values


def page_of(rows: list[asyncpg.Record], page: PageRequest, keyset: Keyset) -> Page[asyncpg.Record]:
    """The page in `rows`, fetched with a limit of `page.size + 1`: an extra row means another page follows."""
    if len(rows) <= page.size:
        return Page(rows, "")
    return Page(rows[: page.size], encode_keyset(rows[page.size - 1], keyset, page.scope))
