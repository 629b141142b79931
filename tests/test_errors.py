"""What clients see when something fails: a stable message of ours, an ErrorInfo reason (and the
field, where there is one) and a request id, never Postgres's own words; the service's log keeps
the detail under the same request id (CONTRACT §4)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_dev.stack import Stack
from tests.support import User, create_event, create_user, event_body, service_role_token

# Postgres's wording, and the names of our tables: none of it may reach a client.
POSTGRES_WORDS = ("null value", "violates", "relation", "constraint", "event_saves", "byte sequence", "UTF8", "0x00")


def details_of(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [d for d in body.get("details", []) if d.get("@type", "").endswith(f"google.rpc.{kind}")]


def error_info(body: dict[str, Any]) -> dict[str, Any]:
    infos = details_of(body, "ErrorInfo")
    assert len(infos) == 1, body
    return infos[0]


def violated_fields(body: dict[str, Any]) -> list[str]:
    return [v["field"] for d in details_of(body, "BadRequest") for v in d.get("field_violations", [])]


def assert_no_postgres_words(body: dict[str, Any]) -> None:
    text = str(body)
    assert not any(word in text for word in POSTGRES_WORDS), body


async def log_lines_with(stack: Stack, service: str, needle: str) -> list[str]:
    """The lines of a service's log (its stdout and stderr, under the stack's run dir) containing `needle`."""
    log = stack.config.run_dir / f"{service}.log"
    for _ in range(50):  # the service writes its log line as it answers; give it a moment to land
        lines = [line for line in log.read_text(errors="replace").splitlines() if needle in line]
        if lines:
            return lines
        await asyncio.sleep(0.05)
    return []


async def test_a_not_null_violation_is_a_stable_400_naming_the_field(api: httpx.AsyncClient, user: User) -> None:
    """A service_role caller has no user id, so saving "my" event breaks event_saves.user_id not null."""
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    backend = {"authorization": f"Bearer {service_role_token()}"}
    response = await api.put(f"/api/me/saved-events/{event['id']}", headers=backend)
    assert response.status_code == 400, response.text
    body = response.json()
    assert_no_postgres_words(body)
    assert body["message"] == "user_id is required"
    assert error_info(body)["reason"] == "INVALID_ARGUMENT"
    assert violated_fields(body) == ["user_id"]


async def test_the_request_id_in_an_error_matches_the_services_log(
    api: httpx.AsyncClient, user: User, stack: Stack
) -> None:
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    token = service_role_token()
    response = await api.put(f"/api/me/saved-events/{event['id']}", headers={"authorization": f"Bearer {token}"})
    request_id = error_info(response.json())["metadata"]["request_id"]
    assert request_id
    assert response.headers["x-request-id"] == request_id, "the trailer reaches JSON clients as a header"
    lines = await log_lines_with(stack, "events", request_id)
    assert lines, f"no line of the events log names request {request_id}"
    # The detail stays on the server: the sqlstate and Postgres's own message, but never the token.
    assert any("23502" in line and "null value" in line for line in lines), lines
    log = (stack.config.run_dir / "events.log").read_text(errors="replace")
    assert token not in log and token.split(".")[2] not in log


async def test_a_nul_in_text_is_a_400_naming_the_field(api: httpx.AsyncClient, user: User) -> None:
    response = await api.post("/api/events", json=event_body(title="Jazz\u0000night"), headers=user.headers)
    assert response.status_code == 400, response.text
    body = response.json()
    assert_no_postgres_words(body)
    assert error_info(body)["reason"] == "INVALID_ARGUMENT"
    assert violated_fields(body) == ["title"]


async def test_a_data_exception_without_a_field_still_hides_postgres(api: httpx.AsyncClient, user: User) -> None:
    """The ticketing service passes a NUL straight to Postgres (22021): a stable message, no field to name."""
    event = await create_event(api, user)
    response = await api.post(
        f"/api/events/{event['id']}/ticket-types",
        json={"name": "G\u0000A", "currency": "THB", "inventory": 5},
        headers=user.headers,
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert_no_postgres_words(body)
    assert error_info(body)["reason"] == "INVALID_ARGUMENT"
    assert error_info(body)["metadata"]["request_id"]


async def test_a_token_whose_user_was_deleted_is_a_401_not_a_missing_reference(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    """The token is still validly signed, but names no user: creating, registering and saving say so,
    where they said "created_by does not exist"; naming someone else who does not exist stays a 400."""
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    gone = await create_user(db)
    await db.execute("delete from auth.users where id = $1", gone.id)
    for response in (
        await api.post("/api/events", json=event_body(), headers=gone.headers),
        await api.post(f"/api/events/{event['id']}/participants", json={}, headers=gone.headers),
        await api.put(f"/api/me/saved-events/{event['id']}", headers=gone.headers),
    ):
        assert response.status_code == 401, response.text
        body = response.json()
        assert error_info(body)["reason"] == "UNAUTHENTICATED"
        assert body["message"] == "the token's user does not exist; sign in again"
    granted = await api.post(
        f"/api/events/{event['id']}/permissions",
        json={"user_id": str(gone.id), "role": "EVENT_ROLE_EDITOR"},
        headers=user.headers,
    )
    assert granted.status_code == 400, granted.text
    assert violated_fields(granted.json()) == ["permission.user_id"]


async def test_our_own_trigger_messages_still_reach_the_client(api: httpx.AsyncClient, user: User) -> None:
    """events_before_write RAISEs words written for partners; those are kept."""
    event = await create_event(api, user)
    response = await api.patch(
        f"/api/events/{event['id']}", json={"status": "EVENT_STATUS_PUBLISHED"}, headers=user.headers
    )
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["message"] == "only platform admins publish events; submit it for review instead"
    assert error_info(body)["reason"] == "PERMISSION_DENIED"


def grpc_error_details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, dict[str, str]]:
    trailers = {key: value for key, value in error.trailing_metadata() or ()}
    info = error_details_pb2.ErrorInfo()
    for detail in status_pb2.Status.FromString(trailers["grpc-status-details-bin"]).details:
        if detail.Unpack(info):
            break
    return info, {key: value for key, value in trailers.items() if isinstance(value, str)}


@pytest.mark.parametrize("sent", [True, False], ids=["x-request-id-sent", "none-sent"])
async def test_grpc_errors_carry_the_request_id(events_channel: grpc.aio.Channel, sent: bool) -> None:
    """The caller's x-request-id (Envoy sets one) is used, else the service makes one; it comes back in
    ErrorInfo and as trailing metadata."""
    request_id = f"test-{uuid.uuid4()}"
    metadata = [("x-request-id", request_id)] if sent else []
    stub = events_pb2_grpc.EventsServiceStub(events_channel)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetEvent(events_pb2.GetEventRequest(id=str(uuid.uuid4())), metadata=metadata)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    info, trailers = grpc_error_details(missing.value)
    assert info.metadata["request_id"] == trailers["x-request-id"]
    if sent:
        assert info.metadata["request_id"] == request_id
    else:
        assert uuid.UUID(info.metadata["request_id"])


async def test_an_unusable_request_id_is_replaced(events_channel: grpc.aio.Channel) -> None:
    """What clients send is not trusted as is: it lands in the log."""
    stub = events_pb2_grpc.EventsServiceStub(events_channel)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetEvent(
            events_pb2.GetEventRequest(id=str(uuid.uuid4())),
            metadata=[("x-request-id", "spaces; and=more " + "x" * 300)],
        )
    info, _ = grpc_error_details(missing.value)
    assert uuid.UUID(info.metadata["request_id"])
