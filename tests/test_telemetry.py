"""Operability (README "Operability"): a request through the gateway is one JSON log line per hop (Envoy's
access log and the service's log) under one request id, which the error body returns and Postgres sees;
it moves the right Prometheus series; and, with OTLP on, it is one connected trace from the server span
down to its SQL statements, received by a real OTLP/HTTP endpoint in the test."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common import telemetry
from localplus_common.config import DEV_JWT_SECRET
from localplus_common.services import EVENTS, RECURRENCE
from localplus_dev.envoy import Gateway
from localplus_dev.postgres import free_port
from localplus_dev.processes import Supervisor
from localplus_dev.stack import Stack
from tests.service_process import running_service
from tests.stripe_support import awaiting_payment, deliver, payment_intent, stripe_event
from tests.support import User, create_event, create_user, event_body, registration_statuses
from tests.test_errors import error_info
from tests.ticketing_support import checkout, event_with_tickets, pay_at_stripe, reserve, wait_for_status

EVENTS_SERVICE = "localplus.events.v1.EventsService"


def _read_lines(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines()


async def json_lines(log: Path, request_id: str, wanted: int = 1) -> list[dict[str, Any]]:
    """The JSON lines of `log` with this request id, once there are `wanted` (each hop writes its line
    as the request ends, Envoy's access log a moment after the response)."""
    found: list[dict[str, Any]] = []
    for _ in range(100):
        lines = _read_lines(log)
        found = [json.loads(line) for line in lines if request_id in line and line.startswith("{")]
        if len(found) >= wanted:
            break
        await asyncio.sleep(0.05)
    return found


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the series `name{labels}` grew between two scrapes."""
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def moved_by(url: str, before: Samples, expected: float, name: str, **labels: str) -> float:
    """How much `name{labels}` grew since `before`, once it grew by `expected` (a counter moves just
    after the commit the client may already see) or after 10 s."""
    grown = 0.0
    for _ in range(100):
        grown = moved(before, await scrape(url), name, **labels)
        if grown >= expected:
            break
        await asyncio.sleep(0.1)
    return grown


def rpc(method: str, **labels: str) -> dict[str, str]:
    return {"grpc_type": "unary", "grpc_service": EVENTS_SERVICE, "grpc_method": method, **labels}


async def test_a_request_is_one_line_per_hop_under_one_request_id(
    api: httpx.AsyncClient, stack: Stack, user: User
) -> None:
    event = await create_event(api, user)
    response = await api.get(f"/api/events/{event['id']}", headers=user.headers)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]  # Envoy made it, and returns it on every response
    assert uuid.UUID(request_id)

    (envoy,) = await json_lines(stack.config.run_dir / "envoy.log", request_id)
    assert envoy["service"] == "envoy"
    assert envoy["path"] == f"/api/events/{event['id']}"
    assert envoy["grpc_method"] == f"/{EVENTS_SERVICE}/GetEvent"
    assert envoy["method"] == "GET"
    assert envoy["status"] == 200
    assert isinstance(envoy["duration_ms"], int)

    (line,) = await json_lines(stack.config.run_dir / "events.log", request_id)
    assert line["service"] == "events" and line["message"] == "request"
    assert line["method"] == f"/{EVENTS_SERVICE}/GetEvent"
    assert line["status"] == "OK"
    assert line["user_id"] == str(user.id)
    assert 0 < line["duration_ms"] < 60_000
    assert line["time"].endswith("+00:00")
    for hop in (envoy, line):
        assert user.token not in json.dumps(hop) and user.token.split(".")[1] not in json.dumps(hop)


def test_the_request_line_is_the_line_the_log_formatter_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request line is put together by hand (it is on every call's path): it is the JSON line the
    process's formatter writes for the same fields, key for key, escapes included."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(telemetry, "_access_log", None)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    telemetry.configure_logging("events")
    user_id = uuid.uuid4()
    for trace_id in ("", "4bf92f3577b34da6a3ce929d0e0e4736"):
        telemetry.log_request(
            "/p.S/M", grpc.StatusCode.NOT_FOUND, time.perf_counter() - 0.0123, 'a"b\\c', user_id, trace_id
        )
        fields = {"method": "/p.S/M", "status": "NOT_FOUND", "duration_ms": 0.0, "request_id": 'a"b\\c'}
        fields |= {"user_id": str(user_id)} | ({"trace_id": trace_id} if trace_id else {})
        telemetry.ACCESS_LOG.info("request", extra={"fields": fields})
    telemetry.log_request("/p.S/M", grpc.StatusCode.OK, time.perf_counter(), "r-1", None, "")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 5
    for written, formatted in (lines[0:2], lines[2:4]):
        assert 12 <= written["duration_ms"] < 1_000
        assert written["time"].endswith("+00:00")
        assert list(written) == list(formatted)
        assert {**written, "time": "", "duration_ms": 0} == {**formatted, "time": "", "duration_ms": 0}
    assert lines[4]["user_id"] is None and lines[4]["status"] == "OK"


async def test_an_error_body_carries_the_request_id_of_both_hops_lines(
    api: httpx.AsyncClient, stack: Stack, user: User
) -> None:
    response = await api.get(f"/api/events/{uuid.uuid4()}", headers=user.headers)
    assert response.status_code == 404, response.text
    request_id = error_info(response.json())["metadata"]["request_id"]
    assert request_id == response.headers["x-request-id"]
    (envoy,) = await json_lines(stack.config.run_dir / "envoy.log", request_id)
    assert envoy["status"] == 404
    (line,) = await json_lines(stack.config.run_dir / "events.log", request_id)
    assert line["status"] == "NOT_FOUND"


async def test_postgres_sees_the_request_id(api: httpx.AsyncClient, db: asyncpg.Pool, user: User) -> None:
    """The request's transaction has `localplus.request_id` set, and the moderation log keeps it with
    the change the request made."""
    event = await create_event(api, user)
    response = await api.post(f"/api/events/{event['id']}:submit", json={}, headers=user.headers)
    assert response.status_code == 200, response.text
    rows = await db.fetch(
        "select to_status, request_id from public.event_moderation_log where event_id = $1 order by id", event["id"]
    )
    created, submitted = rows
    assert submitted["to_status"] == "pending_review"
    assert submitted["request_id"] == response.headers["x-request-id"]
    assert created["request_id"] not in (None, submitted["request_id"])  # the create was another request
    # Outside a request there is none.
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("update public.events set status = 'cancelled' where id = $1", event["id"])
    last = await db.fetchrow(
        "select to_status, request_id from public.event_moderation_log where event_id = $1 order by id desc limit 1",
        event["id"],
    )
    assert last is not None and (last["to_status"], last["request_id"]) == ("cancelled", None)


async def test_a_request_moves_its_metrics(api: httpx.AsyncClient, stack: Stack, user: User, admin: User) -> None:
    metrics_url = stack.metrics_url("events")
    assert metrics_url is not None
    event = await create_event(api, user)
    before = await scrape(metrics_url)
    envoy_before = await scrape(stack.envoy_metrics_url)

    assert (await api.get(f"/api/events/{event['id']}", headers=user.headers)).status_code == 200
    assert (await api.get(f"/api/events/{uuid.uuid4()}", headers=user.headers)).status_code == 404
    submitted = await api.post(f"/api/events/{event['id']}:submit", json={}, headers=user.headers)
    assert submitted.status_code == 200, submitted.text
    approved = await api.post(f"/api/events/{event['id']}:approve", json={}, headers=admin.headers)
    assert approved.status_code == 200, approved.text
    registered = await api.post(f"/api/events/{event['id']}/participants", json={}, headers=admin.headers)
    assert registered.status_code == 200, registered.text

    after = await scrape(metrics_url)
    assert moved(before, after, "grpc_server_started_total", **rpc("GetEvent")) == 2
    assert moved(before, after, "grpc_server_handled_total", **rpc("GetEvent", grpc_code="OK")) == 1
    assert moved(before, after, "grpc_server_handled_total", **rpc("GetEvent", grpc_code="NOT_FOUND")) == 1
    assert moved(before, after, "grpc_server_handling_seconds_count", **rpc("GetEvent")) == 2
    assert moved(before, after, "grpc_server_handling_seconds_bucket", **rpc("GetEvent", le="+Inf")) == 2
    assert moved(before, after, "grpc_server_handled_total", **rpc("SubmitEvent", grpc_code="OK")) == 1
    assert moved(before, after, "localplus_moderation_decisions_total", action="submit") == 1
    assert moved(before, after, "localplus_moderation_decisions_total", action="approve") == 1
    assert moved(before, after, "localplus_registrations_total", status="going") == 1
    # Every one of those requests took a connection from the primary pool; none is held now.
    assert moved(before, after, "localplus_db_pool_acquire_seconds_count", pool="primary") >= 5
    assert after[("localplus_db_pool_waiting", frozenset({("pool", "primary")}))] == 0
    assert after[("localplus_db_pool_connections_in_use", frozenset({("pool", "primary")}))] == 0
    assert after[("localplus_db_pool_max_connections", frozenset({("pool", "primary")}))] > 0

    envoy_after = await scrape(stack.envoy_metrics_url)
    upstream = frozenset({("envoy_cluster_name", "events")})
    assert (
        envoy_after[("envoy_cluster_upstream_rq_total", upstream)]
        - envoy_before[("envoy_cluster_upstream_rq_total", upstream)]
        >= 5
    )


@contextlib.asynccontextmanager
async def failing_after(db: asyncpg.Pool, table: str, when: str) -> AsyncIterator[None]:
    """While inside, a transaction that writes a row of `table` matching `when` (SQL on `new`) fails
    there and rolls back whole (409 INJECTED_FAULT), after the work before it was done."""
    name = f"fault_{uuid.uuid4().hex[:12]}"
    await db.execute(
        f"create function public.{name}() returns trigger language plpgsql as $$ begin "
        "raise exception 'injected fault' using errcode = 'LP409', hint = 'INJECTED_FAULT'; end $$"
    )
    await db.execute(
        f"create trigger {name} after insert or update on public.{table} for each row when ({when}) "
        f"execute function public.{name}()"
    )
    try:
        yield
    finally:
        await db.execute(f"drop trigger {name} on public.{table}")
        await db.execute(f"drop function public.{name}()")


async def test_tickets_sold_count_each_ticket_of_a_paid_order_once(
    api: httpx.AsyncClient, db: asyncpg.Pool, stack: Stack
) -> None:
    """Free and paid at Stripe; a payment that fails half-way counts nothing, and a webhook delivered
    again after its success counts no ticket again."""
    metrics_url = stack.metrics_url("ticketing")
    assert metrics_url is not None
    sold = "localplus_tickets_sold_total"
    owner, buyer = await create_user(db), await create_user(db)

    # A free order of 3, whose first checkout fails after issuing the tickets (rolled back).
    _, free = await event_with_tickets(api, owner, price_minor=0, inventory=10)
    order = (await reserve(api, buyer, free["id"], quantity=3)).json()
    before = await scrape(metrics_url)
    async with failing_after(db, "tickets", f"new.order_id = '{order['id']}'"):
        failed = await checkout(api, buyer, order["id"])
    assert failed.status_code == 409, failed.text
    assert error_info(failed.json())["reason"] == "INJECTED_FAULT"
    assert moved(before, await scrape(metrics_url), sold, payment="free") == 0
    paid = await checkout(api, buyer, order["id"])
    assert paid.status_code == 200 and paid.json()["order"]["status"] == "ORDER_STATUS_PAID", paid.text
    assert (await checkout(api, buyer, order["id"])).status_code == 200  # again: already paid
    assert moved(before, await scrape(metrics_url), sold, payment="free") == 3

    # Paid at localstripe, whose webhook pays the order: 2 tickets.
    _, priced = await event_with_tickets(api, owner, price_minor=25_000, inventory=10)
    order = await awaiting_payment(api, buyer, priced["id"], quantity=2)
    before = await scrape(metrics_url)
    await pay_at_stripe(stack, order["payment_intent_id"])
    await wait_for_status(api, buyer, order["id"], "ORDER_STATUS_PAID")
    assert await moved_by(metrics_url, before, 2, sold, payment="stripe") == 2

    # A success event that fails half-way (Stripe sends it again), then succeeds, then comes once more.
    order = await awaiting_payment(api, buyer, priced["id"], quantity=4)
    event = stripe_event("payment_intent.succeeded", payment_intent(order))
    before = await scrape(metrics_url)
    async with failing_after(db, "tickets", f"new.order_id = '{order['id']}'"):
        failed = await deliver(api, event)
    assert failed.status_code == 409, failed.text
    processed = {"type": "payment_intent.succeeded"}
    after_failure = await scrape(metrics_url)
    assert moved(before, after_failure, sold, payment="stripe") == 0
    assert moved(before, after_failure, "localplus_webhooks_processed_total", **processed) == 0
    assert (await deliver(api, event)).status_code == 200
    assert (await deliver(api, event)).status_code == 200
    another = stripe_event("payment_intent.succeeded", payment_intent(order))  # Stripe's other event of it
    assert (await deliver(api, another)).status_code == 200
    after = await scrape(metrics_url)
    assert moved(before, after, sold, payment="stripe") == 4
    assert moved(before, after, "localplus_webhooks_processed_total", **processed) == 3
    tickets = await db.fetchval("select count(*) from public.tickets where order_id = $1", uuid.UUID(order["id"]))
    assert tickets == 4


async def test_waitlist_promotions_count_each_promotion_once_committed(
    api: httpx.AsyncClient, db: asyncpg.Pool, stack: Stack
) -> None:
    """A going person cancelling on a full event lets the first waitlisted one in (a cancellation that
    fails half-way lets no one in and counts nothing); a larger capacity lets the next one in."""
    metrics_url = stack.metrics_url("events")
    assert metrics_url is not None
    promotions = "localplus_waitlist_promotions_total"
    owner = await create_user(db)
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", capacity=1)
    url = f"/api/events/{event['id']}/participants"
    going, first, second, interested = [await create_user(db) for _ in range(4)]
    for person in (going, first, second):
        assert (await api.post(url, json={}, headers=person.headers)).status_code == 200
    status = {"status": "PARTICIPANT_STATUS_INTERESTED"}
    assert (await api.post(url, json=status, headers=interested.headers)).status_code == 200

    async def statuses() -> list[str]:
        return await registration_statuses(db, event["id"], [going, first, second])

    assert await statuses() == ["going", "waitlisted", "waitlisted"]
    before = await scrape(metrics_url)
    async with failing_after(db, "event_participants", f"new.user_id = '{first.id}' and new.status = 'going'"):
        failed = await api.delete(url, headers=going.headers)
    assert failed.status_code == 409, failed.text
    assert await statuses() == ["going", "waitlisted", "waitlisted"]
    assert moved(before, await scrape(metrics_url), promotions) == 0

    assert (await api.delete(url, headers=interested.headers)).status_code == 200  # frees no place
    assert (await api.delete(url, headers=going.headers)).status_code == 200
    assert await statuses() == ["cancelled", "going", "waitlisted"]
    assert moved(before, await scrape(metrics_url), promotions) == 1

    raised = await api.patch(
        f"/api/events/{event['id']}", params={"update_mask": "capacity"}, json={"capacity": 3}, headers=owner.headers
    )
    assert raised.status_code == 200, raised.text
    assert await statuses() == ["cancelled", "going", "going"]
    assert moved(before, await scrape(metrics_url), promotions) == 2


WORKERS, WORKER_POOL_MAX, CALLS = 2, 3, 16


async def test_with_workers_the_supervisor_serves_the_sum_of_their_metrics(
    api: httpx.AsyncClient, stack: Stack, user: User, tmp_path: Path
) -> None:
    """LOCALPLUS_WORKERS=2: one /metrics (the supervisor's) counts every call whichever worker served it,
    and the pools' gauges are the workers' sum."""
    event = await create_event(api, user)
    metrics_address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "events.log"
    env = {
        "DATABASE_URL": stack.database_url,
        "SUPABASE_JWT_SECRET": DEV_JWT_SECRET,
        "LOCALPLUS_WORKERS": str(WORKERS),
        "DB_POOL_MAX": str(WORKER_POOL_MAX),
        EVENTS.metrics_var: metrics_address,
        RECURRENCE.addr_var: stack.address(RECURRENCE.name),
    }
    with running_service(EVENTS, env, log) as address:
        url = f"http://{metrics_address}/metrics"
        primary = frozenset({("pool", "primary")})
        for _ in range(100):  # every worker serving, its pool published
            listening = [line for line in _read_lines(log) if "listening on" in line]
            before = await scrape(url)
            capped = before.get(("localplus_db_pool_max_connections", primary))
            if len(listening) == WORKERS and capped == WORKERS * WORKER_POOL_MAX:
                break
            await asyncio.sleep(0.1)
        assert before[("localplus_db_pool_max_connections", primary)] == WORKERS * WORKER_POOL_MAX
        assert "by the supervisor" in listening[0]

        # A connection each: the kernel spreads them over the workers (all on one: 1 in 2**15).
        channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(CALLS)
        ]
        try:
            request = events_pb2.GetEventRequest(id=event["id"])
            replies = await asyncio.gather(
                *(
                    events_pb2_grpc.EventsServiceStub(channel).GetEvent(request, metadata=user.metadata)
                    for channel in channels
                )
            )
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
        assert {reply.id for reply in replies} == {event["id"]}
        after = await scrape(url)
        assert moved(before, after, "grpc_server_handled_total", **rpc("GetEvent", grpc_code="OK")) == CALLS
        assert moved(before, after, "grpc_server_handling_seconds_count", **rpc("GetEvent")) == CALLS
        assert moved(before, after, "localplus_db_pool_acquire_seconds_count", pool="primary") >= CALLS
        assert after[("localplus_db_pool_waiting", primary)] == 0
        assert after[("localplus_db_pool_connections", primary)] >= WORKERS  # at least one each


# --- traces -------------------------------------------------------------------------------------------


class OtlpReceiver:
    """An OTLP/HTTP endpoint (POST /v1/traces, protobuf) that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, str]] = []
        spans, resources = self.spans, self.resources

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                assert self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf"
                request = ExportTraceServiceRequest.FromString(self.body())
                for resource_spans in request.resource_spans:
                    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            spans.append(span)
                            resources.append(attributes)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def body(self) -> bytes:
                """The request body: the services' exporter sends a content-length, Envoy's chunks."""
                if self.headers["content-length"] is not None:
                    return self.rfile.read(int(self.headers["content-length"]))
                assert self.headers["transfer-encoding"] == "chunked"
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def trace(self, trace_id: bytes) -> list[Span]:
        return [span for span in self.spans if span.trace_id == trace_id]


@contextlib.contextmanager
def traced_gateway(stack: Stack, tmp_path: Path, receiver: OtlpReceiver) -> Iterator[str]:
    """The events and recurrence services exporting their spans to `receiver` (every 50 ms), events
    calling that recurrence, behind an Envoy of their own that exports its spans there too."""
    env = {
        "DATABASE_URL": stack.database_url,
        "SUPABASE_JWT_SECRET": DEV_JWT_SECRET,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "RECURRENCE_JOB_SECONDS": "3600",
    }
    recurrence_env = {**env, EVENTS.addr_var: stack.address(EVENTS.name)}
    with running_service(RECURRENCE, recurrence_env, tmp_path / "recurrence.log") as recurrence:
        events_env = {**env, RECURRENCE.addr_var: recurrence}
        with running_service(EVENTS, events_env, tmp_path / "events.log") as events:
            addresses = {**stack.config.gateway.addresses, EVENTS.name: events, RECURRENCE.name: recurrence}
            settings = replace(
                stack.gateway.settings,
                gateway_port=free_port(),
                admin_port=free_port(),
                addresses=addresses,
                otlp_endpoint=receiver.url,
            )
            supervisor = Supervisor(tmp_path / "run")
            gateway = Gateway(tmp_path / "run", supervisor, settings)
            try:
                gateway.start()
                yield gateway.url
            finally:
                supervisor.stop_all()


def traceparent() -> tuple[bytes, bytes, dict[str, str]]:
    """A client's trace id and span id, and the header that names them."""
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id.hex()}-{span_id.hex()}-01"}


async def spans_of(receiver: OtlpReceiver, trace_id: bytes, servers: int) -> list[Span]:
    """The trace's spans once `servers` server spans arrived (a server span ends after its children;
    Envoy sends its spans every 5 s, or once it has 5)."""
    spans: list[Span] = []
    for _ in range(300):
        spans = receiver.trace(trace_id)
        if sum(span.kind == Span.SPAN_KIND_SERVER for span in spans) >= servers:
            break
        await asyncio.sleep(0.05)
    return spans


def assert_under(span: Span, ancestor: Span, spans: list[Span]) -> None:
    """`span` hangs off `ancestor`, directly or through other spans of the trace."""
    by_id = {s.span_id: s for s in spans}
    parent = by_id.get(span.parent_span_id)
    while parent is not None and parent is not ancestor:
        parent = by_id.get(parent.parent_span_id)
    assert parent is ancestor, f"{span.name} is not under {ancestor.name}"


def statements_of(spans: list[Span]) -> str:
    return " ".join(
        attribute.value.string_value
        for span in spans
        for attribute in span.attributes
        if attribute.key == "db.statement"
    )


async def test_a_request_through_the_gateway_is_one_connected_trace(
    api: httpx.AsyncClient, stack: Stack, user: User, tmp_path: Path
) -> None:
    event = await create_event(api, user)
    receiver = OtlpReceiver()
    try:
        with traced_gateway(stack, tmp_path, receiver) as url:
            trace_id, client_span, header = traceparent()
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                response = await client.get(f"/api/events/{event['id']}", headers={**user.headers, **header})
                assert response.status_code == 200, response.text
                spans = await spans_of(receiver, trace_id, servers=2)
                (line,) = await json_lines(tmp_path / "events.log", response.headers["x-request-id"])

                # A create with a recurrence: events calls recurrence, whose span joins the same trace.
                trace_id2, _, header2 = traceparent()
                body = event_body(recurrence={"rrule": "FREQ=DAILY;COUNT=3"})
                created = await client.post("/api/events", json=body, headers={**user.headers, **header2})
                assert created.status_code == 200, created.text
                spans2 = await spans_of(receiver, trace_id2, servers=3)
    finally:
        receiver.close()

    names = [span.name for span in spans]
    (envoy,) = [
        span for span in spans if span.kind == Span.SPAN_KIND_SERVER and span.name != f"/{EVENTS_SERVICE}/GetEvent"
    ]
    assert envoy.parent_span_id == client_span, f"Envoy continues the caller's traceparent: {names}"
    (server,) = [span for span in spans if span.name == f"/{EVENTS_SERVICE}/GetEvent"]
    assert server.parent_span_id == envoy.span_id, "the service continues Envoy's span"
    sql = [span for span in spans if span.kind == Span.SPAN_KIND_CLIENT]
    # GetEvent is one statement (Database.read): the caller's claims travel as a parameter, never exported.
    assert len(sql) == 1, [span.name for span in spans]
    assert_under(sql[0], server, spans)
    assert "localplus_private.read_event(" in statements_of(sql)
    assert str(user.id) not in " ".join(str(span) for span in spans)
    assert line["trace_id"] == trace_id.hex(), "the request's log line names its trace"

    (create,) = [span for span in spans2 if span.name == f"/{EVENTS_SERVICE}/CreateEvent"]
    called = [span for span in spans2 if span.name.startswith("/localplus.recurrence.")]
    assert called, [span.name for span in spans2]
    for span in called:
        assert_under(span, create, spans2)
    # A transaction's request context (Database.run) is exported without the caller's claims.
    statements = statements_of([span for span in spans2 if span.kind == Span.SPAN_KIND_CLIENT])
    assert "set_config('localplus.request_id'" in statements and "into public.events" in statements
    assert "set_config('request.jwt.claims', '<claims>'" in statements
    assert str(user.id) not in " ".join(str(span) for span in spans2)
    assert {resource.get("service.name") for resource in receiver.resources} == {"gateway", "events", "recurrence"}
    assert not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"), "the session's stack runs without tracing"


async def test_the_stats_listener_serves_envoys_prometheus_stats_and_nothing_else(stack: Stack, tmp_path: Path) -> None:
    """In a container the admin (127.0.0.1 only) cannot be scraped: ENVOY_STATS_PORT serves its stats."""
    settings = replace(stack.gateway.settings, gateway_port=free_port(), admin_port=free_port(), stats_port=free_port())
    supervisor = Supervisor(tmp_path / "run")
    gateway = Gateway(tmp_path / "run", supervisor, settings)
    try:
        gateway.start()
        stats = f"http://127.0.0.1:{settings.stats_port}"
        samples = await scrape(f"{stats}/stats/prometheus")
        assert any(name.startswith("envoy_cluster_upstream_rq") for name, _ in samples)
        async with httpx.AsyncClient(base_url=stats, timeout=10) as client:
            for method, path in [("GET", "/stats"), ("POST", "/quitquitquit"), ("POST", "/stats/prometheus")]:
                assert (await client.request(method, path)).status_code == 404, path
        assert gateway.child is not None and gateway.child.alive
    finally:
        supervisor.stop_all()
