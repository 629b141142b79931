"""Paging every list needs (AIP-158): page sizes, opaque page tokens and keyset positions.

A page token is the keyset position after the last row of a page (the sort key of that row), as
url-safe base64 JSON, so rows added or removed between pages are neither repeated nor skipped."""

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import asyncpg

from localplus_common.errors import invalid_argument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

T = TypeVar("T")
# A list's sort key: each column, in order, with how to read its value back from a token (a bad
# value raises ValueError or TypeError).
Keyset = Mapping[str, Callable[[Any], Any]]


@dataclass(frozen=True)
class PageRequest:
    """What a list request asks for: a checked page size and the client's page token."""

    size: int
    token: str


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def page_request(page_size: int, page_token: str, max_size: int = MAX_PAGE_SIZE) -> PageRequest:
    if page_size < 0 or page_size > max_size:
        raise invalid_argument("page_size", f"page_size must be between 0 and {max_size}")
    return PageRequest(page_size or min(DEFAULT_PAGE_SIZE, max_size), page_token)


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


def encode_keyset(row: asyncpg.Record, keyset: Keyset) -> str:
    return encode_page_token({column: row[column] for column in keyset})


def token_value(position: Mapping[str, Any], key: str, parse: Callable[[Any], T]) -> T:
    """One value of a decoded page token; a missing or malformed one makes the token invalid."""
    try:
        return parse(position[key])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise invalid_argument("page_token", "page_token is not valid") from None


def decode_keyset(token: str, keyset: Keyset) -> list[Any] | None:
    """The sort key a page token holds, column by column; None for the first page."""
    position = decode_page_token(token)
    if position is None:
        return None
    return [token_value(position, column, parse) for column, parse in keyset.items()]


def page_of(rows: list[asyncpg.Record], size: int, keyset: Keyset) -> Page[asyncpg.Record]:
    """The page in `rows`, fetched with a limit of `size + 1`: an extra row means another page follows."""
    if len(rows) <= size:
        return Page(rows, "")
    return Page(rows[:size], encode_keyset(rows[size - 1], keyset))
