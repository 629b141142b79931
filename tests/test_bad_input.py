"""Bad input never yields a 500 and never writes anything (CONTRACT §3, §4, §7).

Each case asserts the exact status, a JSON body naming the code and a message (the transcoder's
upstream errors as `{"code": 3, "message": ..., "details": [...]}`, Envoy's own as
`{"code": "UNAUTHENTICATED", "message": ..., "status": 401}`), and that the caller's footprint in
the database (events, their versions, ticket types, participants, permissions) did not change.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import asyncpg
import grpc
import httpx
import jwt
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jwt.utils import base64url_encode

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus.recurrence.v1 import recurrence_pb2, recurrence_pb2_grpc
from localplus.ticketing.v1 import ticketing_pb2, ticketing_pb2_grpc
from localplus_common.config import DEV_JWT_SECRET, Settings
from localplus_common.db import create_pool
from localplus_common.paging import encode_page_token
from localplus_dev.stack import Stack
from localplus_dev.token import mint
from tests.support import User, create_event, create_user, event_body

MIB = 1024 * 1024
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
# What an error message must never show: internals instead of a deliberate answer.
LEAKS = ("Traceback", "<class", "Exception", "internal error")


# Tokens: everything but "owner" and "none" is a token that must be refused, never read as anonymous.


def token_for(kind: str, user: User) -> str | None:
    now = int(time.time())
    claims = {"sub": str(user.id), "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600}
    if kind == "owner":
        return user.token
    if kind == "none":
        return None
    if kind == "alg_none":
        return jwt.encode(claims, "", algorithm="none")
    if kind == "alg_none_signed":  # an alg:none header glued to a real signature
        header = base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
        _, payload, signature = user.token.split(".")
        return f"{header}.{payload}.{signature}"
    if kind == "expired":
        return mint(user.id, DEV_JWT_SECRET, expires_in=-120)
    if kind == "wrong_audience":
        return mint(user.id, DEV_JWT_SECRET, audience="someone-else")
    if kind == "wrong_secret":
        return mint(user.id, "another-secret-that-is-at-least-32-characters-long")
    if kind == "garbage":
        return "not-a-jwt"
    if kind == "anon_role":  # well signed, but for a role no token may carry (CONTRACT §3)
        return jwt.encode(claims | {"role": "anon"}, DEV_JWT_SECRET, algorithm="HS256")
    raise AssertionError(kind)


def authorization(kind: str, user: User) -> str | None:
    if kind == "not_bearer":
        return f"Basic {user.token}"
    token = token_for(kind, user)
    return None if token is None else f"Bearer {token}"


def auth_headers(kind: str, user: User) -> dict[str, str]:
    value = authorization(kind, user)
    return {} if value is None else {"authorization": value}


def auth_metadata(kind: str, user: User) -> list[tuple[str, str]]:
    value = authorization(kind, user)
    return [] if value is None else [("authorization", value)]


BAD_TOKENS = ["alg_none", "alg_none_signed", "expired", "wrong_audience", "wrong_secret", "garbage", "anon_role"]


# What a caller has written, so "nothing written" can be checked after every refused request.


async def footprint(db: asyncpg.Pool, user: User) -> tuple[int, ...]:
    row = await db.fetchrow(
        """
        with mine as (select id, version from public.events where created_by = $1)
        select (select count(*) from mine),
               (select coalesce(sum(version), 0) from mine),
               (select count(*) from public.ticket_types where event_id in (select id from mine)),
               (select count(*) from public.event_participants
                 where user_id = $1 or event_id in (select id from mine)),
               (select count(*) from public.event_permissions
                 where user_id = $1 or event_id in (select id from mine))
        """,
        user.id,
    )
    assert row is not None
    return tuple(int(value) for value in row)


def assert_json_error(response: httpx.Response, status: int | tuple[int, ...], code: str, field_name: str = "") -> None:
    """A deliberate JSON error: the exact status, `code` (number or name) and a message."""
    allowed = status if isinstance(status, tuple) else (status,)
    assert response.status_code in allowed, f"{response.status_code}: {response.text[:500]}"
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert "code" in body and "message" in body, body
    name = CODE_NAMES.get(body["code"]) if isinstance(body["code"], int) else body["code"]
    assert name == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert not any(leak in body["message"] for leak in LEAKS), body
    if isinstance(body["code"], int):
        # From a service: ErrorInfo always, BadRequest naming the field where there is one.
        details = body.get("details") or []
        assert any(d.get("@type", "").endswith("google.rpc.ErrorInfo") for d in details), body
        if field_name:
            violations = [
                v["field"]
                for d in details
                if d.get("@type", "").endswith("google.rpc.BadRequest")
                for v in d.get("field_violations", [])
            ]
            assert field_name in violations, body
    else:
        assert body.get("status") == response.status_code, body


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # `{event_id}`: an event the caller owns
    status: int | tuple[int, ...]
    code: str
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] = field(default_factory=dict)
    auth: str = "owner"
    field: str = ""


def event_with(**overrides: Any) -> dict[str, Any]:
    return event_body(**overrides)


def event_without(name: str) -> dict[str, Any]:
    body = event_body()
    del body[name]
    return body


START = event_body()["starts_at"]
# A page token's position in a list of ticket types or occurrences, and ways to spoil it.
GOOD_POSITION = {"sort_order": 0, "created_at": START, "starts_at": START, "id": "00000000-0000-4000-8000-000000000001"}
BAD_POSITIONS: dict[str, dict[str, Any]] = {
    "id-not-a-uuid": {"id": "x"},
    "id-a-number": {"id": 7},
    "time-not-a-time": {"created_at": "soon", "starts_at": "soon"},
    "time-a-number": {"created_at": 7, "starts_at": 7},
    "time-without-offset": {"created_at": "2030-01-01T00:00:00", "starts_at": "2030-01-01T00:00:00"},
    "time-beyond-year-9999": {"created_at": "9999-12-31T23:00:00-05:00", "starts_at": "9999-12-31T23:00:00-05:00"},
    "sort-order-over-int32": {"sort_order": 2**31},
    "sort-order-a-string": {"sort_order": "1"},
}
NOT_FOUND_ID = "00000000-0000-4000-8000-00000000dead"

# A ticket type out of bounds: (case, fields that spoil a valid one, the field at fault).
TICKET_TYPE_BOUNDS: list[tuple[str, dict[str, Any], str]] = [
    ("negative-price", {"price_minor": "-100"}, "price_minor"),
    ("price-over-limit", {"price_minor": "100000000001"}, "price_minor"),
    ("blank-name", {"name": "   "}, "name"),
    ("name-101-chars", {"name": "n" * 101}, "name"),
    ("name-with-nul", {"name": "G\u0000A"}, "name"),
    ("description-2001-chars", {"description": "d" * 2001}, "description"),
    ("currency-with-digit", {"currency": "T1B"}, "currency"),
    ("currency-four-letters", {"currency": "THBX"}, "currency"),
    ("negative-inventory", {"inventory": -1}, "inventory"),
    ("inventory-over-limit", {"inventory": 1_000_001}, "inventory"),
    ("negative-min-per-order", {"min_per_order": -1}, "min_per_order"),
    ("min-per-order-over-limit", {"min_per_order": 101}, "min_per_order"),
    ("max-below-min-per-order", {"min_per_order": 5, "max_per_order": 4}, "max_per_order"),
    ("max-per-order-over-limit", {"max_per_order": 101}, "max_per_order"),
    (
        "sales-end-before-start",
        {"sales_starts_at": "2030-02-01T00:00:00Z", "sales_ends_at": "2030-01-01T00:00:00Z"},
        "sales_ends_at",
    ),
    (
        "sales-end-at-start",
        {"sales_starts_at": "2030-01-01T00:00:00Z", "sales_ends_at": "2030-01-01T00:00:00Z"},
        "sales_ends_at",
    ),
    ("bad-occurrence-id", {"occurrence_id": "first"}, "occurrence_id"),
]

CASES = [
    # Malformed and mistyped JSON: the transcoder answers before any service sees it.
    Case("malformed-json", "POST", "/api/events", 400, "INVALID_ARGUMENT", content=b'{"title": "x",'),
    Case("json-array-body", "POST", "/api/events", 400, "INVALID_ARGUMENT", content=b"[1, 2]"),
    Case("json-string-body", "POST", "/api/events", 400, "INVALID_ARGUMENT", content=b'"an event"'),
    Case("invalid-utf8-body", "POST", "/api/events", 400, "INVALID_ARGUMENT", content=b'{"title": "\xff\xfe"}'),
    Case("lone-surrogate", "POST", "/api/events", 400, "INVALID_ARGUMENT", content=b'{"title": "\\ud800"}'),
    Case("title-number", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(title=123)),
    Case("capacity-string", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(capacity="lots")),
    Case("capacity-fraction", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(capacity=1.5)),
    Case("capacity-over-int32", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(capacity=2**40)),
    Case("starts-at-not-a-time", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(starts_at="tomorrow")),
    Case("unknown-enum-name", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(status="EVENT_STATUS_X")),
    Case(
        "unknown-enum-name-patch",
        "PATCH",
        "/api/events/{event_id}",
        400,
        "INVALID_ARGUMENT",
        json={"visibility": "EVENT_VISIBILITY_SECRET"},
    ),
    Case(
        "unknown-enum-name-participant",
        "POST",
        "/api/events/{event_id}/participants",
        400,
        "INVALID_ARGUMENT",
        json={"status": "PARTICIPANT_STATUS_MAYBE"},
    ),
    # Proto3 JSON accepts enum numbers; one with no name must be refused, not crash the service.
    Case(
        "undefined-enum-number",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(visibility=99),
    ),
    Case(
        "undefined-enum-number-status",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(status=42),
    ),
    Case(
        "undefined-enum-number-participant",
        "POST",
        "/api/events/{event_id}/participants",
        400,
        "INVALID_ARGUMENT",
        json={"status": 42},
    ),
    Case(
        "undefined-enum-number-role",
        "POST",
        "/api/events/{event_id}/permissions",
        400,
        "INVALID_ARGUMENT",
        json={"user_id": NOT_FOUND_ID, "role": 42},
    ),
    # Unknown query parameters, on reads and on writes (a valid body is not written).
    Case("unknown-query-param-list", "GET", "/api/events", 400, "INVALID_ARGUMENT", params={"colour": "red"}),
    Case(
        "unknown-query-param-create",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_body(),
        params={"dry_run": "true"},
    ),
    # Field checks by the events service.
    Case("missing-title", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_without("title"), field="title"),
    Case("blank-title", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(title="   "), field="title"),
    Case("empty-body", "POST", "/api/events", 400, "INVALID_ARGUMENT", content=b"{}", field="title"),
    Case(
        "missing-starts-at",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_without("starts_at"),
        field="starts_at",
    ),
    Case(
        "end-before-start",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(ends_at="2020-01-01T00:00:00Z"),
        field="ends_at",
    ),
    Case(
        "end-equals-start",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(ends_at=START),
        field="ends_at",
    ),
    Case(
        "end-before-start-patch",
        "PATCH",
        "/api/events/{event_id}",
        400,
        "INVALID_ARGUMENT",
        json={"ends_at": "2020-01-01T00:00:00Z"},
        field="ends_at",
    ),
    Case(
        "unknown-timezone",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(timezone="Mars/Olympus"),
        field="timezone",
    ),
    Case(
        "offset-not-a-timezone",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(timezone="+07:00"),
        field="timezone",
    ),
    Case(
        "missing-timezone",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_without("timezone"),
        field="timezone",
    ),
    Case(
        "latitude-out-of-range",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(latitude=91.0),
        field="latitude",
    ),
    Case(
        "longitude-out-of-range",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(longitude=-180.5),
        field="longitude",
    ),
    Case("latitude-nan", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(latitude="NaN")),
    Case("latitude-alone", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_without("longitude")),
    Case(
        "capacity-zero", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(capacity=0), field="capacity"
    ),
    Case(
        "capacity-negative",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(capacity=-3),
        field="capacity",
    ),
    Case(
        "capacity-zero-patch",
        "PATCH",
        "/api/events/{event_id}",
        400,
        "INVALID_ARGUMENT",
        json={"capacity": 0},
        field="capacity",
    ),
    Case(
        "capacity-over-limit",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(capacity=2_000_000),
        field="capacity",
    ),
    Case("too-many-tags", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(tags=["t"] * 21)),
    Case("bad-business-id", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(business_id="acme")),
    # NUL bytes: Postgres cannot store them in text; a clear 400, not a database crash.
    Case("nul-in-title", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(title="Jazz\u0000night")),
    Case("nul-in-tag", "POST", "/api/events", 400, "INVALID_ARGUMENT", json=event_with(tags=["ja\u0000zz"])),
    Case(
        "nul-in-timezone",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(timezone="Asia/Bangkok\u0000"),
        field="timezone",
    ),
    Case("nul-in-page-token", "GET", "/api/events", 400, "INVALID_ARGUMENT", params={"page_token": "a\u0000b"}),
    # Big strings: the gateway caps JSON bodies at 1 MiB (413); below that the database's length checks answer.
    Case("title-1mb", "POST", "/api/events", 413, "RESOURCE_EXHAUSTED", json=event_with(title="x" * MIB)),
    Case("description-1mb", "POST", "/api/events", 413, "RESOURCE_EXHAUSTED", json=event_with(description="é" * MIB)),
    Case(
        "title-500kb",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(title="x" * 500_000),
        field="title",
    ),
    Case(
        "title-1mb-patch",
        "PATCH",
        "/api/events/{event_id}",
        413,
        "RESOURCE_EXHAUSTED",
        json={"title": "x" * MIB},
    ),
    Case(
        "description-500kb-patch",
        "PATCH",
        "/api/events/{event_id}",
        400,
        "INVALID_ARGUMENT",
        json={"description": "d" * 500_000},
        field="description",
    ),
    # Time zones that are not names at all: a clear 400, never the file system's error (once a 503).
    Case(
        "timezone-10000-chars",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(timezone="A" * 10_000),
        field="timezone",
    ),
    Case(
        "timezone-a-directory",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(timezone="America"),
        field="timezone",
    ),
    Case(
        "timezone-long-patch",
        "PATCH",
        "/api/events/{event_id}",
        400,
        "INVALID_ARGUMENT",
        json={"timezone": "Asia/" + "B" * 5_000},
        field="timezone",
    ),
    # Timestamps outside 1900-01-01..2200-01-01, wherever the API takes one (asyncpg stores year 1 and
    # 9999-12-31 as -infinity and infinity).
    Case(
        "starts-at-year-1",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(starts_at="0001-01-01T00:00:00Z"),
        field="starts_at",
    ),
    Case(
        "starts-at-1899",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(starts_at="1899-12-31T23:59:59Z"),
        field="starts_at",
    ),
    Case(
        "ends-at-9999",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(ends_at="9999-12-31T23:59:59.999999Z"),
        field="ends_at",
    ),
    Case(
        "ends-at-2200-patch",
        "PATCH",
        "/api/events/{event_id}",
        400,
        "INVALID_ARGUMENT",
        json={"ends_at": "2200-01-01T00:00:00Z"},
        field="ends_at",
    ),
    Case(
        "registration-closes-9999",
        "POST",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        json=event_with(registration_closes_at="9999-12-31T23:59:59Z"),
        field="registration_closes_at",
    ),
    Case(
        "permission-expires-9999",
        "POST",
        "/api/events/{event_id}/permissions",
        400,
        "INVALID_ARGUMENT",
        json={"user_id": NOT_FOUND_ID, "role": "EVENT_ROLE_VIEWER", "expires_at": "9999-12-31T00:00:00Z"},
        field="permission.expires_at",
    ),
    # A grant names the body's fields as `permission.*` whatever is wrong with them (it named the same
    # field `user_id` or `permission.user_id`, `expires_at` or `permission.expires_at`, by the check).
    Case(
        "permission-expired-already",
        "POST",
        "/api/events/{event_id}/permissions",
        400,
        "INVALID_ARGUMENT",
        json={"user_id": NOT_FOUND_ID, "role": "EVENT_ROLE_VIEWER", "expires_at": "2001-01-01T00:00:00Z"},
        field="permission.expires_at",
    ),
    Case(
        "permission-for-nobody",
        "POST",
        "/api/events/{event_id}/permissions",
        400,
        "INVALID_ARGUMENT",
        json={"user_id": NOT_FOUND_ID, "role": "EVENT_ROLE_VIEWER"},
        field="permission.user_id",
    ),
    Case(
        "permission-without-role",
        "POST",
        "/api/events/{event_id}/permissions",
        400,
        "INVALID_ARGUMENT",
        json={"user_id": NOT_FOUND_ID},
        field="permission.role",
    ),
    Case(
        "ticket-sales-start-year-1",
        "POST",
        "/api/events/{event_id}/ticket-types",
        400,
        "INVALID_ARGUMENT",
        json={"name": "GA", "currency": "THB", "inventory": 5, "sales_starts_at": "0001-01-01T00:00:00Z"},
        field="ticket_type.sales_starts_at",
    ),
    Case(
        "search-starts-after-year-1",
        "GET",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        params={"starts_after": "0001-01-01T00:00:00Z"},
        field="starts_after",
    ),
    Case(
        "occurrences-end-9999",
        "GET",
        "/api/events/{event_id}/occurrences",
        400,
        "INVALID_ARGUMENT",
        params={"start": "2030-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"},
        field="end",
    ),
    # Ids.
    Case("bad-uuid-get", "GET", "/api/events/not-a-uuid", 400, "INVALID_ARGUMENT", auth="none", field="id"),
    Case(
        "bad-uuid-patch",
        "PATCH",
        "/api/events/not-a-uuid",
        400,
        "INVALID_ARGUMENT",
        json={"title": "x"},
        field="event.id",
    ),
    Case("bad-uuid-delete", "DELETE", "/api/events/12345", 400, "INVALID_ARGUMENT", field="id"),
    Case(
        "bad-uuid-ticket-types",
        "POST",
        "/api/events/zzz/ticket-types",
        400,
        "INVALID_ARGUMENT",
        json={"name": "GA", "currency": "THB", "inventory": 5},
        field="event_id",
    ),
    Case("bad-uuid-occurrences", "GET", "/api/events/zzz/occurrences", 400, "INVALID_ARGUMENT", field="event_id"),
    Case(
        "bad-uuid-participant",
        "POST",
        "/api/events/{event_id}/participants",
        400,
        "INVALID_ARGUMENT",
        json={"user_id": "somebody"},
        field="user_id",
    ),
    Case(
        "bad-uuid-permission",
        "POST",
        "/api/events/{event_id}/permissions",
        400,
        "INVALID_ARGUMENT",
        json={"user_id": "somebody", "role": "EVENT_ROLE_EDITOR"},
        field="permission.user_id",
    ),
    Case("unknown-event-get", "GET", f"/api/events/{NOT_FOUND_ID}", 404, "NOT_FOUND"),
    Case("unknown-event-patch", "PATCH", f"/api/events/{NOT_FOUND_ID}", 404, "NOT_FOUND", json={"title": "x"}),
    Case(
        "body-id-differs-from-path-patch",
        "PATCH",
        "/api/events/{event_id}",
        400,
        "INVALID_ARGUMENT",
        json={"id": NOT_FOUND_ID, "title": "Hijacked"},
    ),
    Case(
        "body-id-differs-from-path-put",
        "PUT",
        "/api/events/{event_id}",
        400,
        "INVALID_ARGUMENT",
        json=event_with(id=NOT_FOUND_ID, title="Hijacked"),
    ),
    Case(
        "unknown-update-mask-path",
        "PATCH",
        "/api/events/{event_id}",
        400,
        "INVALID_ARGUMENT",
        json={"title": "x"},
        params={"update_mask": "title,colour"},
        field="update_mask",
    ),
    # Paging.
    Case(
        "page-size-1e9", "GET", "/api/events", 400, "INVALID_ARGUMENT", params={"page_size": 10**9}, field="page_size"
    ),
    Case(
        "page-size-negative", "GET", "/api/events", 400, "INVALID_ARGUMENT", params={"page_size": -1}, field="page_size"
    ),
    Case("page-size-over-int32", "GET", "/api/events", 400, "INVALID_ARGUMENT", params={"page_size": 10**12}),
    Case("page-size-word", "GET", "/api/events", 400, "INVALID_ARGUMENT", params={"page_size": "many"}),
    Case(
        "page-token-garbage",
        "GET",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        params={"page_token": "garbage!!"},
        field="page_token",
    ),
    Case(
        "page-token-wrong-shape",
        "GET",
        "/api/events",
        400,
        "INVALID_ARGUMENT",
        params={"page_token": "eyJ4IjoxfQ"},  # base64 of {"x":1}
        field="page_token",
    ),
    Case(
        "page-token-participants",
        "GET",
        "/api/events/{event_id}/participants",
        400,
        "INVALID_ARGUMENT",
        params={"page_token": "WzEsMl0"},  # base64 of [1,2]
        field="page_token",
    ),
    # Other services' fields.
    Case(
        "ticket-type-currency-name",
        "POST",
        "/api/events/{event_id}/ticket-types",
        400,
        "INVALID_ARGUMENT",
        json={"name": "GA", "currency": "baht", "inventory": 5},
        field="ticket_type.currency",
    ),
    Case(
        "ticket-type-no-such-currency",
        "POST",
        "/api/events/{event_id}/ticket-types",
        400,
        "INVALID_ARGUMENT",
        json={"name": "GA", "currency": "XYZ", "inventory": 5},
        field="ticket_type.currency",
    ),
    # Every bound of a ticket type gets a 400 naming its field, before the table's CHECKs see it.
    *(
        Case(
            f"ticket-type-{name}",
            "POST",
            "/api/events/{event_id}/ticket-types",
            400,
            "INVALID_ARGUMENT",
            json={"name": "GA", "currency": "THB", "inventory": 5, **fields},
            field=f"ticket_type.{field_at_fault}",
        )
        for name, fields, field_at_fault in TICKET_TYPE_BOUNDS
    ),
    Case(
        "ticket-type-price-word",
        "POST",
        "/api/events/{event_id}/ticket-types",
        400,
        "INVALID_ARGUMENT",
        json={"name": "GA", "currency": "THB", "inventory": 5, "price_minor": "free"},
    ),
    Case(
        "ticket-type-missing-name",
        "POST",
        "/api/events/{event_id}/ticket-types",
        400,
        "INVALID_ARGUMENT",
        json={"currency": "THB", "inventory": 5},
        field="ticket_type.name",
    ),
    # Pages of ticket types and occurrences (AIP-158).
    *(
        case
        for path in ("/api/events/{event_id}/ticket-types", "/api/events/{event_id}/occurrences")
        for kind in [path.rsplit("/", 1)[1]]
        for case in (
            Case(
                f"{kind}-page-size-101",
                "GET",
                path,
                400,
                "INVALID_ARGUMENT",
                params={"page_size": 101},
                field="page_size",
            ),
            Case(
                f"{kind}-page-size-negative",
                "GET",
                path,
                400,
                "INVALID_ARGUMENT",
                params={"page_size": -1},
                field="page_size",
            ),
            Case(
                f"{kind}-page-token-garbage",
                "GET",
                path,
                400,
                "INVALID_ARGUMENT",
                params={"page_token": "garbage!!"},
                field="page_token",
            ),
            Case(
                f"{kind}-page-token-wrong-shape",
                "GET",
                path,
                400,
                "INVALID_ARGUMENT",
                params={"page_token": encode_page_token({"x": 1}, "")},
                field="page_token",
            ),
            *(
                Case(
                    f"{kind}-page-token-{name}",
                    "GET",
                    path,
                    400,
                    "INVALID_ARGUMENT",
                    params={"page_token": encode_page_token({**GOOD_POSITION, **change}, "")},
                    field="page_token",
                )
                for name, change in BAD_POSITIONS.items()
                if kind == "ticket-types" or "sort_order" not in change
            ),
        )
    ),
    Case(
        "occurrences-end-before-start",
        "GET",
        "/api/events/{event_id}/occurrences",
        400,
        "INVALID_ARGUMENT",
        params={"start": "2030-02-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
        field="end",
    ),
    Case(
        "occurrences-start-not-a-time",
        "GET",
        "/api/events/{event_id}/occurrences",
        400,
        "INVALID_ARGUMENT",
        params={"start": "yesterday"},
    ),
    # Tokens: refused at the edge (401; 403 for another audience), on writes and on public reads alike.
    Case("no-token-create", "POST", "/api/events", 401, "UNAUTHENTICATED", json=event_body(), auth="none"),
    Case("no-token-patch", "PATCH", "/api/events/{event_id}", 401, "UNAUTHENTICATED", json={"title": "x"}, auth="none"),
    *(
        Case(
            f"{kind}-create",
            "POST",
            "/api/events",
            403 if kind == "wrong_audience" else 401,
            "PERMISSION_DENIED" if kind == "wrong_audience" else "UNAUTHENTICATED",
            json=event_body(),
            auth=kind,
        )
        for kind in BAD_TOKENS
    ),
    *(
        Case(
            f"{kind}-list",
            "GET",
            "/api/events",
            403 if kind == "wrong_audience" else 401,
            "PERMISSION_DENIED" if kind == "wrong_audience" else "UNAUTHENTICATED",
            auth=kind,
        )
        for kind in BAD_TOKENS
    ),
    Case(
        "expired-ticket-type",
        "POST",
        "/api/events/{event_id}/ticket-types",
        401,
        "UNAUTHENTICATED",
        json={"name": "GA", "currency": "THB", "inventory": 5},
        auth="expired",
    ),
    Case("alg-none-occurrences", "GET", "/api/events/{event_id}/occurrences", 401, "UNAUTHENTICATED", auth="alg_none"),
]


@pytest.fixture
async def owned_event(api: httpx.AsyncClient, user: User) -> dict[str, Any]:
    return await create_event(api, user, status="EVENT_STATUS_PUBLISHED")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_bad_json_request_is_a_clear_4xx_and_writes_nothing(
    case: Case, api: httpx.AsyncClient, db: asyncpg.Pool, user: User, owned_event: dict[str, Any]
) -> None:
    before = await footprint(db, user)
    headers = auth_headers(case.auth, user)
    if case.content is not None:
        headers["content-type"] = "application/json"
    response = await api.request(
        case.method,
        case.path.format(event_id=owned_event["id"]),
        params=case.params,
        json=case.json,
        content=case.content,
        headers=headers,
    )
    assert_json_error(response, case.status, case.code, case.field)
    assert await footprint(db, user) == before, "a refused request changed the database"


def assert_long_url_refusal(response: httpx.Response) -> None:
    assert response.status_code in (400, 414, 431), f"{response.status_code}: {response.text[:300]}"
    code = {400: "INVALID_ARGUMENT", 414: "INVALID_ARGUMENT", 431: "RESOURCE_EXHAUSTED"}[response.status_code]
    assert_json_error(response, response.status_code, code)


@pytest.mark.parametrize("length", [12_000, 20_000, 40_000])
async def test_long_urls_get_a_deterministic_non_retryable_4xx(
    length: int, api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    """A URL within Envoy's 60 KiB header limit must be judged like any other bad input (400), or refused
    by the gateway (414/431): never 429, which tells clients to retry later, and never at random."""
    before = await footprint(db, user)
    for _ in range(5):
        assert_long_url_refusal(await api.get("/api/events", params={"page_token": "x" * length}))
        assert_long_url_refusal(
            await api.patch(f"/api/events/{'a' * length}", json={"title": "x"}, headers=user.headers)
        )
    assert await footprint(db, user) == before


async def test_huge_header_is_refused_by_the_gateway(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/events", headers={"x-padding": "p" * MIB})
    assert_json_error(response, 431, "RESOURCE_EXHAUSTED")


# Native gRPC.


def grpc_event(title: str = "Jazz over gRPC") -> events_pb2.Event:
    now = int(time.time())
    event = events_pb2.Event(title=title, timezone="Asia/Bangkok")
    event.starts_at.CopyFrom(timestamp_pb2.Timestamp(seconds=now + 86_400))
    event.ends_at.CopyFrom(timestamp_pb2.Timestamp(seconds=now + 90_000))
    return event


def assert_grpc_error(error: grpc.aio.AioRpcError, code: grpc.StatusCode) -> None:
    assert error.code() == code, f"{error.code()}: {error.details()}"
    details = error.details() or ""
    assert details, "no message"
    assert not any(leak in details for leak in LEAKS), details


async def test_grpc_write_through_the_gateway_without_token_is_unauthenticated(
    gateway_channel: grpc.aio.Channel, db: asyncpg.Pool, user: User, owned_event: dict[str, Any]
) -> None:
    before = await footprint(db, user)
    events = events_pb2_grpc.EventsServiceStub(gateway_channel)
    ticketing = ticketing_pb2_grpc.TicketingServiceStub(gateway_channel)
    changed = grpc_event("Renamed without a token")
    changed.id = owned_event["id"]
    ticket_type = ticketing_pb2.TicketType(name="GA", currency="THB", inventory=5)
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: events.CreateEvent(events_pb2.CreateEventRequest(event=grpc_event())),
        lambda: events.UpdateEvent(events_pb2.UpdateEventRequest(event=changed)),
        lambda: events.DeleteEvent(events_pb2.DeleteEventRequest(id=owned_event["id"])),
        lambda: events.CreateParticipant(events_pb2.CreateParticipantRequest(event_id=owned_event["id"])),
        lambda: ticketing.CreateTicketType(
            ticketing_pb2.CreateTicketTypeRequest(event_id=owned_event["id"], ticket_type=ticket_type)
        ),
    ]
    for attempt in attempts:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await attempt()
        assert_grpc_error(refused.value, grpc.StatusCode.UNAUTHENTICATED)
    assert await footprint(db, user) == before


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_grpc_through_the_gateway_with_a_bad_token_is_refused(
    kind: str, gateway_channel: grpc.aio.Channel, db: asyncpg.Pool, user: User
) -> None:
    before = await footprint(db, user)
    expected = grpc.StatusCode.PERMISSION_DENIED if kind == "wrong_audience" else grpc.StatusCode.UNAUTHENTICATED
    stub = events_pb2_grpc.EventsServiceStub(gateway_channel)
    with pytest.raises(grpc.aio.AioRpcError) as write:
        await stub.CreateEvent(events_pb2.CreateEventRequest(event=grpc_event()), metadata=auth_metadata(kind, user))
    assert_grpc_error(write.value, expected)
    with pytest.raises(grpc.aio.AioRpcError) as read:
        await stub.ListEvents(events_pb2.ListEventsRequest(), metadata=auth_metadata(kind, user))
    assert_grpc_error(read.value, expected)
    assert await footprint(db, user) == before


@pytest.mark.parametrize("kind", [*BAD_TOKENS, "not_bearer"])
@pytest.mark.parametrize("service", ["events", "ticketing", "recurrence"])
async def test_services_verify_tokens_themselves(
    service: str, kind: str, stack: Stack, db: asyncpg.Pool, user: User, owned_event: dict[str, Any]
) -> None:
    """Internal callers reach the services without Envoy: a bad token is UNAUTHENTICATED there too, on
    writes and on reads that would accept an anonymous caller."""
    before = await footprint(db, user)
    metadata = auth_metadata(kind, user)
    event_id = owned_event["id"]
    async with grpc.aio.insecure_channel(stack.address(service)) as channel:
        calls: list[Callable[[], Awaitable[Any]]]
        if service == "events":
            events = events_pb2_grpc.EventsServiceStub(channel)
            calls = [
                lambda: events.CreateEvent(events_pb2.CreateEventRequest(event=grpc_event()), metadata=metadata),
                lambda: events.ListEvents(events_pb2.ListEventsRequest(), metadata=metadata),
                lambda: events.GetEvent(events_pb2.GetEventRequest(id=event_id), metadata=metadata),
            ]
        elif service == "ticketing":
            ticketing = ticketing_pb2_grpc.TicketingServiceStub(channel)
            wanted = ticketing_pb2.TicketType(name="GA", currency="THB", inventory=5)
            calls = [
                lambda: ticketing.CreateTicketType(
                    ticketing_pb2.CreateTicketTypeRequest(event_id=event_id, ticket_type=wanted), metadata=metadata
                ),
                lambda: ticketing.ListTicketTypes(
                    ticketing_pb2.ListTicketTypesRequest(event_id=event_id), metadata=metadata
                ),
            ]
        else:
            recurrence = recurrence_pb2_grpc.RecurrenceServiceStub(channel)
            calls = [
                lambda: recurrence.ListOccurrences(
                    recurrence_pb2.ListOccurrencesRequest(event_id=event_id), metadata=metadata
                )
            ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call()
            assert_grpc_error(refused.value, grpc.StatusCode.UNAUTHENTICATED)
    assert await footprint(db, user) == before


async def test_grpc_direct_without_token_may_read_but_not_write(
    events_channel: grpc.aio.Channel, db: asyncpg.Pool, user: User
) -> None:
    before = await footprint(db, user)
    stub = events_pb2_grpc.EventsServiceStub(events_channel)
    await stub.ListEvents(events_pb2.ListEventsRequest(page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateEvent(events_pb2.CreateEventRequest(event=grpc_event()))
    assert_grpc_error(refused.value, grpc.StatusCode.UNAUTHENTICATED)
    assert await footprint(db, user) == before


@pytest.mark.parametrize("target", ["direct", "gateway"])
async def test_grpc_big_and_odd_values(
    target: str,
    events_channel: grpc.aio.Channel,
    gateway_channel: grpc.aio.Channel,
    db: asyncpg.Pool,
    user: User,
) -> None:
    before = await footprint(db, user)
    stub = events_pb2_grpc.EventsServiceStub(events_channel if target == "direct" else gateway_channel)
    cases: list[tuple[events_pb2.Event, grpc.StatusCode]] = [
        (grpc_event("x" * MIB), grpc.StatusCode.INVALID_ARGUMENT),  # the database's length check
        (grpc_event("x" * (5 * MIB)), grpc.StatusCode.RESOURCE_EXHAUSTED),  # over gRPC's 4 MiB message limit
        (grpc_event("nul\u0000byte"), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    out_of_range = grpc_event()
    out_of_range.starts_at.seconds = 10**12  # past year 9999
    cases.append((out_of_range, grpc.StatusCode.INVALID_ARGUMENT))
    bad_nanos = grpc_event()
    bad_nanos.starts_at.nanos = -5
    cases.append((bad_nanos, grpc.StatusCode.INVALID_ARGUMENT))
    for event, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateEvent(events_pb2.CreateEventRequest(event=event), metadata=user.metadata)
        assert_grpc_error(refused.value, code)
    with pytest.raises(grpc.aio.AioRpcError) as paging:
        await stub.ListEvents(events_pb2.ListEventsRequest(page_size=10**9))
    assert_grpc_error(paging.value, grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.aio.AioRpcError) as nul_id:
        await stub.GetEvent(events_pb2.GetEventRequest(id="a\u0000b"))
    assert_grpc_error(nul_id.value, grpc.StatusCode.INVALID_ARGUMENT)
    assert await footprint(db, user) == before


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a google.rpc.BadRequest in the error's details names."""
    status = rpc_status.from_call(cast(grpc.Call, error))
    assert status is not None, error
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields += [violation.field for violation in bad_request.field_violations]
    return fields


async def test_grpc_times_out_of_range_name_the_field(
    gateway_channel: grpc.aio.Channel, db: asyncpg.Pool, user: User, owned_event: dict[str, Any]
) -> None:
    """Timestamps JSON cannot even express (past year 9999, negative nanos) are a 400 naming the field."""
    before = await footprint(db, user)
    ticketing = ticketing_pb2_grpc.TicketingServiceStub(gateway_channel)
    recurrence = recurrence_pb2_grpc.RecurrenceServiceStub(gateway_channel)
    for field_name, seconds, nanos in (("sales_starts_at", 10**12, 0), ("sales_ends_at", 0, -5)):
        wanted = ticketing_pb2.TicketType(name="GA", currency="THB", inventory=5)
        getattr(wanted, field_name).CopyFrom(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
        request = ticketing_pb2.CreateTicketTypeRequest(event_id=owned_event["id"], ticket_type=wanted)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ticketing.CreateTicketType(request, metadata=user.metadata)
        assert_grpc_error(refused.value, grpc.StatusCode.INVALID_ARGUMENT)
        assert violated_fields(refused.value) == [f"ticket_type.{field_name}"]
    listing = recurrence_pb2.ListOccurrencesRequest(
        event_id=owned_event["id"], start=timestamp_pb2.Timestamp(seconds=-(10**12))
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await recurrence.ListOccurrences(listing, metadata=user.metadata)
    assert_grpc_error(refused.value, grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(refused.value) == ["start"]
    assert await footprint(db, user) == before


@pytest.mark.parametrize("target", ["direct", "gateway"])
async def test_grpc_undefined_enum_number_is_invalid_argument(
    target: str,
    events_channel: grpc.aio.Channel,
    gateway_channel: grpc.aio.Channel,
    db: asyncpg.Pool,
    user: User,
) -> None:
    """Proto3 enums are open: a client may send a number the service has no name for."""
    before = await footprint(db, user)
    stub = events_pb2_grpc.EventsServiceStub(events_channel if target == "direct" else gateway_channel)
    event = grpc_event()
    event.visibility = cast(events_pb2.EventVisibility, 99)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateEvent(events_pb2.CreateEventRequest(event=event), metadata=user.metadata)
    assert_grpc_error(refused.value, grpc.StatusCode.INVALID_ARGUMENT)
    assert await footprint(db, user) == before


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (payloads under 128 bytes)."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


@pytest.mark.parametrize("target", ["direct", "gateway"])
@pytest.mark.parametrize(
    "payload",
    [
        _field(1, _field(4, b"\xff\xfe")),  # CreateEventRequest.event.title with invalid UTF-8
        b"\xff\xff\xff",  # not a protobuf message at all
    ],
    ids=["invalid-utf8-string", "corrupt-wire-format"],
)
async def test_grpc_request_that_does_not_parse_is_invalid_argument(
    target: str,
    payload: bytes,
    events_channel: grpc.aio.Channel,
    gateway_channel: grpc.aio.Channel,
    db: asyncpg.Pool,
    user: User,
) -> None:
    """A hand-rolled client's undecodable message is the client's mistake: INVALID_ARGUMENT, not UNKNOWN
    with a Python class name in the message."""
    before = await footprint(db, user)
    channel = events_channel if target == "direct" else gateway_channel
    create = channel.unary_unary("/localplus.events.v1.EventsService/CreateEvent")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create(payload, metadata=user.metadata)
    assert_grpc_error(refused.value, grpc.StatusCode.INVALID_ARGUMENT)
    assert await footprint(db, user) == before


@pytest.mark.parametrize(
    "claims",
    [{"sub": "owner"}, {"app_metadata": {"role": "admin"}}],
    ids=["as-the-owner", "as-an-admin"],
)
async def test_a_token_for_role_anon_never_reads_as_its_other_claims(
    api: httpx.AsyncClient, user: User, claims: dict[str, Any]
) -> None:
    """Tokens carry role authenticated or service_role (CONTRACT §3). One signed for role anon naming the
    owner (or an admin) ran as `anon` with those claims, which the policies read: it saw the owner's draft."""
    draft = await create_event(api, user)
    now = int(time.time())
    forged = {"role": "anon", "aud": "authenticated", "iat": now, "exp": now + 3600}
    forged |= {"sub": str(user.id)} if claims.get("sub") == "owner" else claims
    token = jwt.encode(forged, DEV_JWT_SECRET, algorithm="HS256")
    response = await api.get(f"/api/events/{draft['id']}", headers={"authorization": f"Bearer {token}"})
    assert_json_error(response, 401, "UNAUTHENTICATED")
    assert (await api.get(f"/api/events/{draft['id']}", headers=user.headers)).status_code == 200


async def test_refused_tokens_never_act_as_anonymous(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User, owned_event: dict[str, Any]
) -> None:
    """A published public event is readable anonymously; the same read with a bad token is refused."""
    assert (await api.get(f"/api/events/{owned_event['id']}")).status_code == 200
    for kind in BAD_TOKENS:
        response = await api.get(f"/api/events/{owned_event['id']}", headers=auth_headers(kind, user))
        assert response.status_code in (401, 403), (kind, response.status_code, response.text)
    other = await create_user(db)
    assert (await api.get(f"/api/events/{owned_event['id']}", headers=other.headers)).status_code == 200


OUT_OF_RANGE_TIMES = [
    ("starts_at", "-infinity"),
    ("ends_at", "infinity"),
    ("ends_at", "20000-01-01T00:00:00Z"),  # past Python's year 9999
    ("starts_at", "4713-01-01T00:00:00Z BC"),  # before Python's year 1
    ("registration_closes_at", "infinity"),
]


@pytest.mark.parametrize(("column", "stored"), OUT_OF_RANGE_TIMES)
async def test_no_writer_can_store_a_time_the_api_would_refuse(
    column: str, stored: str, db: asyncpg.Pool, owned_event: dict[str, Any]
) -> None:
    """Not SQL, not Supabase's REST, not a backend connection: the table's CHECK holds times to
    1900..2200 like the API, so no reader meets ±infinity or a year Python cannot hold."""
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            f"update public.events set {column} = $2::text::timestamptz where id = $1", owned_event["id"], stored
        )


@pytest.mark.parametrize("stored", sorted({stored for _, stored in OUT_OF_RANGE_TIMES}))
async def test_the_services_read_any_stored_time_as_an_aware_datetime(stack: Stack, stored: str) -> None:
    """Rows older than those CHECKs (validated only where the data allows) may still hold such times:
    the services' pool reads them clamped to Python's range, comparable with other times."""
    pool = await create_pool(replace(Settings.from_env(), database_url=stack.database_url, db_pool_max=1))
    try:
        value = await pool.fetchval("select $1::text::timestamptz", stored)
    finally:
        await pool.close()
    assert value.tzinfo is not None
    assert value.year in (1, 9999)
