"""The Envoy gateway (CONTRACT §2, §4, §7): CORS, routing, JSON errors (its own included), native gRPC
through it, the ticketing and recurrence routes, and health and reflection on every service."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus.recurrence.v1 import recurrence_pb2, recurrence_pb2_grpc
from localplus.ticketing.v1 import ticketing_pb2, ticketing_pb2_grpc
from localplus_common.paging import encode_page_token, request_scope
from localplus_common.services import SERVICES, Service
from localplus_dev.stack import Stack
from tests.support import User, add_city, create_event, create_user, event_body, iso

ORIGIN = "https://app.localplus.example"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_envoy_json_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """One of Envoy's own replies, mapped to JSON by local_reply_config."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


async def events_of(db: asyncpg.Pool, user: User) -> int:
    count: int = await db.fetchval("select count(*) from public.events where created_by = $1", user.id)
    return count


async def jwt_denied_count(stack: Stack) -> int:
    """Envoy's own count of requests jwt_authn refused: proves a refusal happened at the edge."""
    async with httpx.AsyncClient(timeout=5) as admin:
        stats = await admin.get(f"http://127.0.0.1:{stack.config.gateway.admin_port}/stats")
    match = re.search(r"^http\.gateway\.jwt_authn\.denied: (\d+)$", stats.text, re.MULTILINE)
    assert match, stats.text[:2000]
    return int(match[1])


# CORS


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/events"),
        ("GET", "/api/events"),
        ("PATCH", "/api/events/00000000-0000-4000-8000-000000000001"),
        ("DELETE", "/api/events/00000000-0000-4000-8000-000000000001"),
        ("POST", "/api/events/00000000-0000-4000-8000-000000000001/ticket-types"),
        ("GET", "/api/events/00000000-0000-4000-8000-000000000001/occurrences"),
        ("PATCH", "/api/cities"),  # a method the path has not: the request itself is a 405
    ],
)
async def test_cors_preflight_is_answered(api: httpx.AsyncClient, method: str, path: str) -> None:
    response = await api.options(
        path,
        headers={
            "origin": ORIGIN,
            "access-control-request-method": method,
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert 200 <= response.status_code < 300, f"{response.status_code}: {response.text}"
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert method in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers


async def test_cors_headers_on_answers_and_on_errors(api: httpx.AsyncClient) -> None:
    """A browser may read the JSON of an error only if the error carries CORS headers too."""
    listed = await api.get("/api/events", headers={"origin": ORIGIN})
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == ORIGIN

    refused = await api.post("/api/events", json=event_body(), headers={"origin": ORIGIN})
    assert_envoy_json_error(refused, 401, "UNAUTHENTICATED")
    assert refused.headers["access-control-allow-origin"] == ORIGIN

    missing = await api.get("/api/events/00000000-0000-4000-8000-000000000001", headers={"origin": ORIGIN})
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == ORIGIN


async def test_cors_lets_a_browser_read_and_revalidate_a_feed(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """A page that fetches a calendar feed may read its ETag and Last-Modified (without
    access-control-expose-headers a browser hides them from scripts) and send If-None-Match with it."""
    slug = await add_city(db, f"cors-{uuid4().hex[:12]}")
    path = f"/api/cities/{slug}/calendar.ics"
    feed = await api.get(path, headers={"origin": ORIGIN})
    assert feed.status_code == 200, feed.text
    assert feed.headers["access-control-allow-origin"] == ORIGIN
    exposed = {name.strip() for name in feed.headers["access-control-expose-headers"].lower().split(",")}
    assert {"etag", "last-modified", "x-request-id"} <= exposed, exposed
    assert feed.headers["etag"]
    preflight = await api.options(
        path,
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "GET",
            "access-control-request-headers": "if-none-match",
        },
    )
    assert 200 <= preflight.status_code < 300, preflight.text
    assert "if-none-match" in preflight.headers["access-control-allow-headers"].lower()
    again = await api.get(path, headers={"origin": ORIGIN, "if-none-match": feed.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["access-control-allow-origin"] == ORIGIN


async def test_a_page_on_another_origin_may_read_the_openapi_document(api: httpx.AsyncClient) -> None:
    """An API explorer or client generator served from another origin fetches /api/openapi.json; Envoy
    answers it from a file, where the CORS filter adds nothing, so the route adds what it would."""
    document = await api.get("/api/openapi.json", headers={"origin": ORIGIN})
    assert document.status_code == 200
    assert document.headers["access-control-allow-origin"] == ORIGIN
    assert "origin" in document.headers["vary"].lower()
    without_origin = await api.get("/api/openapi.json")
    assert "access-control-allow-origin" not in without_origin.headers


# Routing and Envoy's own errors


async def test_healthz(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/nope"),
        ("GET", "/nope"),
        ("GET", "/api/events/00000000-0000-4000-8000-000000000001/nope"),
        ("PATCH", "/api/nope"),
    ],
)
async def test_unknown_route_is_404_json(api: httpx.AsyncClient, user: User, method: str, path: str) -> None:
    response = await api.request(method, path, headers=user.headers)
    assert_envoy_json_error(response, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/api/cities", "GET"),
        ("DELETE", "/api/me/tickets", "GET"),
        ("DELETE", "/api/events", "GET, POST"),
        ("POST", "/api/events/00000000-0000-4000-8000-000000000001", "DELETE, GET, PATCH, PUT"),
        ("POST", "/api/events/00000000-0000-4000-8000-000000000001/occurrences", "GET"),
        ("GET", "/api/events/00000000-0000-4000-8000-000000000001:submit", "POST"),
        ("PUT", "/api/cities/bangkok/calendar.ics", "GET"),
        # The transcoder binds GET only, and Envoy would send a HEAD the GET's body (README "Gateway").
        ("HEAD", "/api/cities/bangkok/calendar.ics", "GET"),
    ],
)
async def test_a_known_path_with_another_method_is_405_with_allow(
    api: httpx.AsyncClient, user: User, method: str, path: str, allowed: str
) -> None:
    """The path exists, the method is not one of its bindings (the protos' http rules): 405 with the
    path's methods in Allow and the usual JSON error, readable cross-origin."""
    response = await api.request(method, path, headers={**user.headers, "origin": ORIGIN})
    if method == "HEAD":  # no body
        assert response.status_code == 405
    else:
        assert_envoy_json_error(response, 405, "UNIMPLEMENTED")
    assert response.headers["allow"] == allowed
    assert response.headers["access-control-allow-origin"] == ORIGIN
    same_origin = await api.request(method, path, headers=user.headers)
    assert same_origin.status_code == 405
    assert "access-control-allow-origin" not in same_origin.headers


@pytest.mark.parametrize(
    "path",
    [
        "/api/events",
        "/api/events/00000000-0000-4000-8000-000000000001",
        "/api/events/00000000-0000-4000-8000-000000000001/ticket-types",
        "/api/events/00000000-0000-4000-8000-000000000001/occurrences",
    ],
)
async def test_unknown_query_parameter_is_400_json(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path, params={"sort": "newest"})
    body = assert_envoy_json_error(response, 400, "INVALID_ARGUMENT")
    assert "sort" in body["message"]


async def test_jwt_errors_are_json(api: httpx.AsyncClient, user: User) -> None:
    missing = await api.post("/api/events", json=event_body())
    assert_envoy_json_error(missing, 401, "UNAUTHENTICATED")
    garbage = await api.get("/api/events", headers={"authorization": "Bearer garbage"})
    assert_envoy_json_error(garbage, 401, "UNAUTHENTICATED")


async def test_upstream_errors_are_json_with_error_details(api: httpx.AsyncClient, user: User) -> None:
    """The transcoder renders the services' rich errors (CONTRACT §7: error_details.proto in the descriptor)."""
    response = await api.post("/api/events", json=event_body(title=""), headers=user.headers)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == 3
    assert body["message"] == "title is required"
    types = {detail["@type"] for detail in body["details"]}
    assert types == {"type.googleapis.com/google.rpc.ErrorInfo", "type.googleapis.com/google.rpc.BadRequest"}
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["reason"] == "INVALID_ARGUMENT"
    assert info["domain"] == "localplus.app"


@pytest.mark.parametrize("header", ["pw!3", "a~b", "x-trace-bin", "grpc-timeout"])
async def test_json_headers_that_grpc_metadata_cannot_carry_are_dropped(
    api: httpx.AsyncClient, user: User, header: str
) -> None:
    """Found by fuzzing: a header named with characters gRPC refuses, a `-bin` one that is not base64, and
    gRPC's own `grpc-*` reached the services as metadata, which answered INTERNAL (500)."""
    read = await api.get("/api/cities", headers={header: "!!not base64, nor a timeout"})
    assert read.status_code == 200, read.text
    write = await api.post("/api/events", json=event_body(), headers={**user.headers, header: "!!"})
    assert write.status_code == 200, write.text


# Native gRPC through the gateway


async def test_grpc_write_through_gateway_needs_a_token_at_the_edge(
    stack: Stack, gateway_channel: grpc.aio.Channel, db: asyncpg.Pool, user: User
) -> None:
    """CONTRACT §7: jwt rules on gRPC method paths, so a native client cannot write through :8080 without a
    token. Envoy itself refuses (its jwt_authn.denied counter moves), not only the service behind it."""
    stub = events_pb2_grpc.EventsServiceStub(gateway_channel)
    event = events_pb2.Event(title="Sneaky", timezone="Asia/Bangkok")
    event.starts_at.FromDatetime(parse_time(event_body()["starts_at"]))
    event.ends_at.FromDatetime(parse_time(event_body()["ends_at"]))
    before, denied_before = await events_of(db, user), await jwt_denied_count(stack)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateEvent(events_pb2.CreateEventRequest(event=event))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await jwt_denied_count(stack) > denied_before
    assert await events_of(db, user) == before

    created = await stub.CreateEvent(events_pb2.CreateEventRequest(event=event), metadata=user.metadata)
    assert created.created_by == str(user.id)
    assert await events_of(db, user) == before + 1


async def test_grpc_read_through_gateway_works_anonymously(
    api: httpx.AsyncClient, gateway_channel: grpc.aio.Channel, user: User
) -> None:
    created = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", capacity=12)
    events = events_pb2_grpc.EventsServiceStub(gateway_channel)
    event = await events.GetEvent(events_pb2.GetEventRequest(id=created["id"]))
    assert event.id == created["id"]
    assert event.capacity == 12
    listed = await events.ListEvents(events_pb2.ListEventsRequest(page_size=1))
    assert len(listed.events) <= 1

    ticketing = ticketing_pb2_grpc.TicketingServiceStub(gateway_channel)
    types = await ticketing.ListTicketTypes(ticketing_pb2.ListTicketTypesRequest(event_id=created["id"]))
    assert list(types.ticket_types) == []
    recurrence = recurrence_pb2_grpc.RecurrenceServiceStub(gateway_channel)
    occurrences = await recurrence.ListOccurrences(recurrence_pb2.ListOccurrencesRequest(event_id=created["id"]))
    assert [o.event_id for o in occurrences.occurrences] == [created["id"]]


async def test_unknown_grpc_method_through_gateway_is_unimplemented(gateway_channel: grpc.aio.Channel) -> None:
    call = gateway_channel.unary_unary("/localplus.events.v1.EventsService/DropEverything")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(b"")
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


# Health and reflection on each service's own address


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
async def test_health_and_reflection_on_each_service(stack: Stack, service: Service) -> None:
    """Also checks the list's names: each service serves health and reflection under its listed name."""
    full_name = service.grpc_service
    async with grpc.aio.insecure_channel(stack.address(service.name)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", full_name):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=full_name),
        ]
        replies = [reply async for reply in reflection.ServerReflectionInfo(iter(requests), timeout=5)]
    assert len(replies) == 2
    listed = {s.name for s in replies[0].list_services_response.service}
    assert {full_name, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in replies[1].file_descriptor_response.file_descriptor_proto
    ]
    package = full_name.rsplit(".", 1)[0]
    service_file = next(f for f in files if f.package == package)
    assert full_name.rsplit(".", 1)[1] in [s.name for s in service_file.service]


# Ticketing and recurrence routes through the gateway


async def test_ticket_types_through_the_gateway(api: httpx.AsyncClient, db: asyncpg.Pool, user: User) -> None:
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    url = f"/api/events/{event['id']}/ticket-types"
    editor, viewer = await create_user(db), await create_user(db)
    for person, role in ((editor, "EVENT_ROLE_EDITOR"), (viewer, "EVENT_ROLE_VIEWER")):
        granted = await api.post(
            f"/api/events/{event['id']}/permissions",
            json={"user_id": str(person.id), "role": role},
            headers=user.headers,
        )
        assert granted.status_code == 200, granted.text

    # More than 2^31 satang, to show the int64 survives as an exact JSON string.
    body = {"name": "Early bird", "currency": "THB", "inventory": 50, "price_minor": 99_999_999_999}
    created = await api.post(url, json=body, headers=editor.headers)
    assert created.status_code == 200, created.text
    ticket_type = created.json()
    assert ticket_type["price_minor"] == "99999999999"  # int64 prints as a string (CONTRACT §7)
    assert ticket_type["inventory"] == 50  # int32 stays a number
    assert ticket_type["available"] == 50 and ticket_type["sold"] == 0
    assert ticket_type["currency"] == "THB"
    assert ticket_type["event_id"] == event["id"]
    assert ticket_type["name"] == "Early bird"

    cheap = await api.post(url, json={**body, "name": "Door", "price_minor": "150000"}, headers=user.headers)
    assert cheap.status_code == 200, cheap.text
    assert cheap.json()["price_minor"] == "150000"

    listed = await api.get(url)  # anonymous: the event is published
    assert listed.status_code == 200, listed.text
    by_name = {t["name"]: t for t in listed.json()["ticket_types"]}
    assert by_name.keys() == {"Early bird", "Door"}
    assert by_name["Early bird"] == ticket_type

    viewer_try = await api.post(url, json={**body, "name": "Nope"}, headers=viewer.headers)
    assert viewer_try.status_code == 403, viewer_try.text
    anonymous_try = await api.post(url, json={**body, "name": "Nope"})
    assert_envoy_json_error(anonymous_try, 401, "UNAUTHENTICATED")
    count = await db.fetchval("select count(*) from public.ticket_types where event_id = $1", event["id"])
    assert count == 2


async def test_ticket_types_of_a_draft_are_hidden_from_others(
    api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    draft = await create_event(api, user)
    url = f"/api/events/{draft['id']}/ticket-types"
    assert (await api.get(url, headers=user.headers)).status_code == 200
    assert (await api.get(url)).status_code == 404
    refused = await api.post(url, json={"name": "GA", "currency": "THB", "inventory": 5}, headers=other_user.headers)
    assert refused.status_code == 404, refused.text


async def test_ticket_type_bounds_are_accepted_and_defaults_filled(api: httpx.AsyncClient, user: User) -> None:
    """The validation refuses only what the table would: its limits themselves are fine."""
    event = await create_event(api, user)
    url = f"/api/events/{event['id']}/ticket-types"
    base = {"name": "GA", "currency": "THB", "inventory": 5}
    largest = {
        "name": "n" * 100,
        "description": "d" * 2000,
        "price_minor": "100000000000",
        "inventory": 1_000_000,
        "min_per_order": 100,
        "max_per_order": 100,
    }
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (largest, largest),
        ({"price_minor": "0", "inventory": 0}, {"price_minor": "0", "inventory": 0, "available": 0}),
        ({}, {"min_per_order": 1, "max_per_order": 10}),
        ({"min_per_order": 20}, {"min_per_order": 20, "max_per_order": 20}),
        ({"max_per_order": 1}, {"min_per_order": 1, "max_per_order": 1}),
    ]
    for fields, expected in cases:
        created = await api.post(url, json={**base, **fields}, headers=user.headers)
        assert created.status_code == 200, (fields, created.text)
        assert expected.items() <= created.json().items(), created.json()


async def test_ticket_type_output_only_fields_are_ignored(api: httpx.AsyncClient, user: User) -> None:
    """AIP-203: what the server computes (and the id it assigns) cannot be set by a client."""
    event, other = await create_event(api, user), await create_event(api, user)
    given_id = "00000000-0000-4000-8000-00000000beef"
    body = {
        "name": "GA",
        "currency": "THB",
        "inventory": 8,
        "id": given_id,
        "event_id": other["id"],
        "sold": 5,
        "available": 1,
    }
    created = await api.post(f"/api/events/{event['id']}/ticket-types", json=body, headers=user.headers)
    assert created.status_code == 200, created.text
    ticket_type = created.json()
    assert ticket_type["id"] != given_id
    assert ticket_type["event_id"] == event["id"]
    assert (ticket_type["sold"], ticket_type["available"]) == (0, 8)


async def walk_pages(
    api: httpx.AsyncClient,
    url: str,
    page_size: int,
    headers: dict[str, str] | None = None,
    after_first_page: Callable[[], Awaitable[None]] | None = None,
) -> list[list[str]]:
    """The ticket type ids of every page, following next_page_token to the end."""
    pages: list[list[str]] = []
    token = ""
    while True:
        response = await api.get(url, params={"page_size": page_size, "page_token": token}, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([ticket_type["id"] for ticket_type in body["ticket_types"]])
        token = body["next_page_token"]
        if not token:
            return pages
        assert len(pages) < 100, "paging does not end"
        if after_first_page is not None and len(pages) == 1:
            await after_first_page()


async def test_ticket_type_pages_cover_each_once(api: httpx.AsyncClient, db: asyncpg.Pool, user: User) -> None:
    """Keyset pages over (sort_order, created_at, id): every ticket type exactly once and in list order,
    with ties on sort_order and on created_at, and with ticket types added between pages."""
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    url = f"/api/events/{event['id']}/ticket-types"

    async def add(name: str, sort_order: int, hidden: bool = False) -> None:
        body = {"name": name, "currency": "THB", "inventory": 5, "sort_order": sort_order, "hidden": hidden}
        created = await api.post(url, json=body, headers=user.headers)
        assert created.status_code == 200, created.text

    for number, sort_order in enumerate([2, 1, 1, 3, 2, 1, 0]):
        await add(f"Type {number}", sort_order)
    await add("Staff", 1, hidden=True)
    # Equal in sort_order and created_at: only the id orders these.
    await db.execute(
        """
        insert into public.ticket_types (event_id, name, currency, inventory, sort_order, created_at)
        select $1, 'Twin ' || n, 'THB', 5, 1, '2030-01-01T00:00:00Z' from generate_series(1, 3) n
        """,
        UUID(event["id"]),
    )

    async def in_list_order(*, hidden: bool) -> list[str]:
        rows = await db.fetch(
            """
            select id from public.ticket_types where event_id = $1 and (not hidden or $2)
            order by sort_order, created_at, id
            """,
            UUID(event["id"]),
            hidden,
        )
        return [str(row["id"]) for row in rows]

    everyone = await in_list_order(hidden=False)
    anonymous = await walk_pages(api, url, 3)
    assert [len(page) for page in anonymous] == [3, 3, 3, 1]
    assert [item for page in anonymous for item in page] == everyone
    editors = await in_list_order(hidden=True)
    assert await walk_pages(api, url, 11, headers=user.headers) == [editors]  # one full page, no empty one after

    async def add_before_and_after_the_position() -> None:
        await add("Added first in the list", -1)
        await add("Added last in the list", 99)

    pages = await walk_pages(api, url, 2, headers=user.headers, after_first_page=add_before_and_after_the_position)
    seen = [item for page in pages for item in page]
    now = await in_list_order(hidden=True)
    assert len(now) == len(editors) + 2
    assert now[0] not in editors and now[-1] not in editors
    assert seen == now[1:], "pages skipped or repeated a ticket type, or left the list order"


async def test_ticket_type_page_sizes(api: httpx.AsyncClient, db: asyncpg.Pool, user: User) -> None:
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    url = f"/api/events/{event['id']}/ticket-types"
    await db.execute(
        """
        insert into public.ticket_types (event_id, name, currency, inventory, sort_order)
        select $1, 'Type ' || n, 'THB', 5, n from generate_series(1, 101) n
        """,
        UUID(event["id"]),
    )

    def names(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        return [ticket_type["name"] for ticket_type in response.json()["ticket_types"]]

    first = await api.get(url)
    assert names(first) == [f"Type {n}" for n in range(1, 21)]  # the default page size is 20
    largest = await api.get(url, params={"page_size": 100})
    assert names(largest) == [f"Type {n}" for n in range(1, 101)]
    rest = await api.get(url, params={"page_size": 1, "page_token": largest.json()["next_page_token"]})
    assert names(rest) == ["Type 101"]
    assert rest.json()["next_page_token"] == ""  # the last page fills its size: no empty page after it
    too_many = await api.get(url, params={"page_size": 101})
    assert too_many.status_code == 400, too_many.text


async def test_occurrences_of_a_one_off_event(api: httpx.AsyncClient, user: User) -> None:
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", capacity=30)
    url = f"/api/events/{event['id']}/occurrences"
    starts, ends = parse_time(event["starts_at"]), parse_time(event["ends_at"])

    everything = await api.get(url)
    assert everything.status_code == 200, everything.text
    occurrences = everything.json()["occurrences"]
    assert len(occurrences) == 1
    (occurrence,) = occurrences
    assert occurrence["event_id"] == event["id"]
    assert occurrence["id"]
    assert parse_time(occurrence["starts_at"]) == starts
    assert parse_time(occurrence["ends_at"]) == ends
    assert parse_time(occurrence["original_starts_at"]) == starts
    assert occurrence["status"] == "OCCURRENCE_STATUS_SCHEDULED"
    assert occurrence["capacity"] == 30

    hour = timedelta(hours=1)
    windows = {
        (starts - hour, starts + hour): 1,  # contains the start
        (starts, starts + hour): 1,  # [start, end): the start itself is inside
        (starts - 2 * hour, starts): 0,  # ends exactly at the start
        (starts + hour, starts + 48 * hour): 0,  # after the start (even though the event is still on)
        (starts - 48 * hour, starts - hour): 0,  # before
    }
    for (start, end), expected in windows.items():
        filtered = await api.get(url, params={"start": iso(start), "end": iso(end)})
        assert filtered.status_code == 200, filtered.text
        assert len(filtered.json()["occurrences"]) == expected, (start, end, filtered.json())
    only_start = await api.get(url, params={"start": iso(starts + hour)})
    assert only_start.json()["occurrences"] == []
    only_end = await api.get(url, params={"end": iso(starts + hour)})
    assert len(only_end.json()["occurrences"]) == 1


async def test_occurrence_pages(api: httpx.AsyncClient, user: User) -> None:
    """One occurrence today, but paged like a series: a token resumes strictly after (starts_at, id)."""
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    url = f"/api/events/{event['id']}/occurrences"
    for params in ({}, {"page_size": 1}):
        page = await api.get(url, params=params)
        assert page.status_code == 200, page.text
        assert [o["id"] for o in page.json()["occurrences"]] == [event["id"]]
        assert page.json()["next_page_token"] == ""

    starts = parse_time(event["starts_at"])
    lowest, highest = "00000000-0000-4000-8000-000000000000", "ffffffff-ffff-4fff-bfff-ffffffffffff"
    positions = [
        (starts - timedelta(microseconds=1), highest, 1),
        (starts, lowest, 1),  # the same start: the id decides
        (starts, event["id"], 0),  # the occurrence itself was the last one seen
        (starts, highest, 0),
        (starts + timedelta(microseconds=1), lowest, 0),
    ]
    scope = request_scope(recurrence_pb2.ListOccurrencesRequest(event_id=event["id"]))
    for starts_at, last_id, expected in positions:
        token = encode_page_token({"starts_at": iso(starts_at), "id": last_id}, scope)
        page = await api.get(url, params={"page_size": 1, "page_token": token})
        assert page.status_code == 200, page.text
        assert len(page.json()["occurrences"]) == expected, (starts_at, last_id)


async def test_occurrences_follow_event_visibility(api: httpx.AsyncClient, user: User, other_user: User) -> None:
    draft = await create_event(api, user)
    url = f"/api/events/{draft['id']}/occurrences"
    assert len((await api.get(url, headers=user.headers)).json()["occurrences"]) == 1
    assert (await api.get(url)).status_code == 404
    assert (await api.get(url, headers=other_user.headers)).status_code == 404
