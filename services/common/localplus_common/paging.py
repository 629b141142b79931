"""Keyset page tokens (AIP-158) for any list: a token holds the sort key of the last item of a
page, so items added or removed between pages are neither repeated nor skipped."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.errors import invalid_argument
from localplus_common.requests import decode_page_token, encode_page_token

# A list's sort key: each column, in order, with how to read its value back from a token (a bad
# value raises ValueError or TypeError).
Keyset = Mapping[str, Callable[[Any], Any]]


@dataclass(frozen=True)
class Page:
    rows: list[asyncpg.Record]
    next_page_token: str


def int32_value(value: Any) -> int:
    if type(value) is not int or not -(2**31) <= value < 2**31:
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


def decode_keyset(token: str, keyset: Keyset) -> list[Any] | None:
    """The sort key a page token holds, column by column; None for the first page."""
    position = decode_page_token(token)
    if position is None:
        return None
    try:
        return [parse(position[column]) for column, parse in keyset.items()]
    except (KeyError, TypeError, ValueError, OverflowError):
        raise invalid_argument("page_token", "page_token is not valid") from None


def page_of(rows: list[asyncpg.Record], size: int, keyset: Keyset) -> Page:
    """The page in `rows`, fetched with a limit of `size + 1`: an extra row means another page follows."""
    if len(rows) <= size:
        return Page(rows, "")
    return Page(rows[:size], encode_keyset(rows[size - 1], keyset))
