"""Paging every list needs (AIP-158): page sizes, opaque page tokens and keyset positions.

A page token is the keyset position after the last row of a page, as url-safe base64 JSON, so
rows added between pages are never repeated or skipped."""

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import asyncpg

from localplus_common.errors import invalid_argument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    """What a list request asks for: a checked page size and the client's page token."""

    size: int
    token: str


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def page_request(page_size: int, page_token: str) -> PageRequest:
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise invalid_argument("page_size", f"page_size must be between 0 and {MAX_PAGE_SIZE}")
    return PageRequest(page_size or DEFAULT_PAGE_SIZE, page_token)


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


def time_keyset(token: str, time_key: str, id_key: str) -> tuple[datetime, UUID] | None:
    """The (timestamp, id) position a page token stands for; None on the first page."""
    position = decode_page_token(token)
    if position is None:
        return None
    return token_datetime(position, time_key), token_uuid(position, id_key)


def time_page_token(rows: Sequence[asyncpg.Record], limit: int, time_key: str, id_key: str) -> str:
    """The token for the page after `rows` (ordered by `time_key`, `id_key`); empty on the last page."""
    if len(rows) < limit:
        return ""
    last = rows[-1]
    return encode_page_token({time_key: last[time_key].isoformat(), id_key: str(last[id_key])})


def time_page(rows: list[asyncpg.Record], limit: int, time_key: str, id_key: str) -> Page[asyncpg.Record]:
    return Page(rows, time_page_token(rows, limit, time_key, id_key))
