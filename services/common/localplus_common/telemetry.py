"""What a service tells the people who run it (README "Operability"): Prometheus metrics on its own HTTP
port, one JSON log line per request, and OpenTelemetry traces exported by OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set (nothing of OpenTelemetry is loaded otherwise).

RPC metrics follow the grpc-ecosystem names (`grpc_server_started_total`, `grpc_server_handled_total`,
`grpc_server_handling_seconds`), so the usual gRPC dashboards work unchanged.

With several worker processes (LOCALPLUS_WORKERS) the supervisor serves /metrics for all of them, in
prometheus-client's multiprocess mode: each worker writes its values to memory-mapped files in a directory
the supervisor gives it (PROMETHEUS_MULTIPROC_DIR), and a scrape sums them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _json_string  # json.dumps' own, for one string
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from localplus_common.services import Service

if TYPE_CHECKING:
    import asyncpg
    from opentelemetry.sdk.trace import TracerProvider

# `*_created` series double every counter and histogram and no dashboard reads them.
disable_created_metrics()

RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", RPC_LABELS)
HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, whatever their status.", (*RPC_LABELS, "grpc_code")
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "How long the server took to answer RPCs, from the request to the status.",
    RPC_LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Set by a supervisor in its workers' environment (prometheus-client reads it when it is imported).
MULTIPROCESS_VAR = "PROMETHEUS_MULTIPROC_DIR"
# With several workers: the sum of theirs.
POOL_WAITING = Gauge(
    "localplus_db_pool_waiting",
    "Requests waiting for a pooled database connection.",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_ACQUIRE = Histogram(
    "localplus_db_pool_acquire_seconds",
    "How long a request waited for a pooled database connection.",
    ["pool"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)
# What the services did, counted after the transaction that did it committed.
REGISTRATIONS = Counter("localplus_registrations_total", "Registrations made, by the status they got.", ["status"])
MODERATION_DECISIONS = Counter(
    "localplus_moderation_decisions_total", "Lifecycle and moderation transitions of events.", ["action"]
)
WEBHOOKS = Counter(
    "localplus_webhooks_processed_total", "Stripe webhooks verified and applied (a repeat changes nothing).", ["type"]
)
TICKETS_SOLD = Counter(
    "localplus_tickets_sold_total", "Tickets issued to orders paid, by how: free, or at Stripe.", ["payment"]
)
WAITLIST_PROMOTIONS = Counter(
    "localplus_waitlist_promotions_total", "Waitlisted registrations moved to going as places came free."
)

ACCESS_LOG = logging.getLogger("localplus.access")
# Whether this process traces (start_tracing), so calls to other services carry the trace on.
_tracing = False
GRPC_TYPES = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}


def metrics_address(service: Service, env: Mapping[str, str] = os.environ) -> str | None:
    """Where `service` serves /metrics (`<NAME>_METRICS_ADDR`, default 127.0.0.1:91xx); None for `off`,
    which also stops recording the RPC metrics."""
    address = env.get(service.metrics_var) or service.default_metrics_addr
    return None if address == "off" else address


def start_metrics_server(address: str, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve `registry`'s text format at http://<address>/metrics, from a daemon thread."""
    host, _, port = address.rpartition(":")
    try:
        start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
    except OSError as error:
        raise SystemExit(f"cannot serve metrics on {address}: {error}") from None


def metrics_served_by_supervisor() -> bool:
    """Whether this process records into the files of a supervisor that serves them (workers_metrics)."""
    return MULTIPROCESS_VAR in os.environ


@contextmanager
def workers_metrics(address: str | None) -> Iterator[dict[str, str]]:
    """For a supervisor: serve its workers' metrics, summed, at http://<address>/metrics, from a fresh
    directory of theirs (removed after); answers the setting for their environment ({} when off)."""
    if address is None:
        yield {}
        return
    directory = tempfile.mkdtemp(prefix="localplus-metrics-")
    try:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        start_metrics_server(address, registry)
        yield {MULTIPROCESS_VAR: directory}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


POOL_SERIES = (
    ("localplus_db_pool_connections_in_use", "Pooled database connections lent out."),
    ("localplus_db_pool_connections", "Open pooled database connections."),
    ("localplus_db_pool_max_connections", "The pool's connection cap."),
)
# The same series as gauges, for workers (publish_pools); in no registry of this process.
WORKER_POOL_GAUGES = [
    Gauge(name, description, ["pool"], registry=None, multiprocess_mode="livesum") for name, description in POOL_SERIES
]


def _pool_readings(pool: asyncpg.Pool) -> tuple[int, int, int]:
    """In use, open, cap: POOL_SERIES's order."""
    return pool.get_size() - pool.get_idle_size(), pool.get_size(), pool.get_max_size()


class PoolCollector(Collector):
    """Connections of each pool, read when scraped (asyncpg counts them; nothing to do per request)."""

    def __init__(self, pools: Mapping[str, asyncpg.Pool]) -> None:
        self._pools = pools

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families = [GaugeMetricFamily(name, description, labels=["pool"]) for name, description in POOL_SERIES]
        for name, pool in self._pools.items():
            for family, value in zip(families, _pool_readings(pool), strict=True):
                family.add_metric([name], value)
        return families


def watch_pools(pools: Mapping[str, asyncpg.Pool]) -> None:
    REGISTRY.register(PoolCollector(pools))


async def publish_pools(pools: Mapping[str, asyncpg.Pool], every_s: float = 1.0) -> None:
    """A worker's pools, written for its supervisor's scrapes every `every_s` (the supervisor cannot read
    them when scraped, as PoolCollector does)."""
    while True:
        for name, pool in pools.items():
            for gauge, value in zip(WORKER_POOL_GAUGES, _pool_readings(pool), strict=True):
                gauge.labels(name).set(value)
        await asyncio.sleep(every_s)


class PoolMetrics:
    """Waiting for a connection of one pool: how many wait now, and how long each waited."""

    def __init__(self, name: str) -> None:
        self.waiting = POOL_WAITING.labels(name)
        self.acquire = POOL_ACQUIRE.labels(name)


class MethodMetrics:
    """One RPC method's metric series, bound to their labels once (binding costs more than counting)."""

    def __init__(self, method: str, request_streaming: bool, response_streaming: bool) -> None:
        service, _, name = method.lstrip("/").partition("/")
        self._labels = (GRPC_TYPES[request_streaming, response_streaming], service, name)
        self._started = STARTED.labels(*self._labels)
        self._handling = HANDLING.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def started(self) -> None:
        self._started.inc()

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        self._handling.observe(seconds)
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = HANDLED.labels(*self._labels, code.name)
        counter.inc()


class JsonFormatter(logging.Formatter):
    """Every log line as one JSON object: time, level, service, logger, message, and the record's `fields`
    (the request line's method, status, duration, request id and user id). Never pass a token or card
    data in a message or field."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _iso_time(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class _AccessLog:
    """Request lines, the JSON line JsonFormatter writes, put together here and written straight to the
    process's log handler: through `Logger.info` (a LogRecord, the handler chain, a dict for json.dumps)
    a line took ~75 µs of the events service's ~610 µs of CPU per GET (README, Benchmarks)."""

    def __init__(self, handler: logging.StreamHandler[Any], service: str) -> None:
        self._handler = handler
        self._constant = (
            f'"level": "INFO", "service": {_json_string(service)}, "logger": {_json_string(ACCESS_LOG.name)}, '
            '"message": "request"'
        )

    def write(
        self, method: str, status: str, duration_ms: float, request_id: str, user_id: str | None, trace_id: str
    ) -> None:
        user = "null" if user_id is None else _json_string(user_id)
        trace = f', "trace_id": {_json_string(trace_id)}' if trace_id else ""
        line = (
            f'{{"time": "{_iso_time(time.time())}", {self._constant}, "method": {_json_string(method)}, '
            f'"status": "{status}", "duration_ms": {duration_ms!r}, "request_id": {_json_string(request_id)}, '
            f'"user_id": {user}{trace}}}\n'
        )
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(line)
            handler.stream.flush()
        finally:
            handler.release()


_access_log: _AccessLog | None = None


def configure_logging(service: str) -> None:
    """JSON lines on stdout for the whole process (LOG_LEVEL, default INFO; WARNING drops request lines)."""
    global _access_log
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL") or logging.INFO)
    _access_log = _AccessLog(handler, service)


def log_request(
    method: str, code: grpc.StatusCode, started: float, request_id: str, user_id: object, trace_id: str
) -> None:
    """The one line of a request, written when it ends (once configure_logging has set where)."""
    if _access_log is None or not ACCESS_LOG.isEnabledFor(logging.INFO):
        return
    duration_ms = round((time.perf_counter() - started) * 1e3, 3)
    _access_log.write(method, code.name, duration_ms, request_id, None if user_id is None else str(user_id), trace_id)


def start_tracing(service: str, env: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set: a tracer provider exporting spans by OTLP/HTTP (protobuf) in
    batches (the standard OTEL_* variables tune it), and a span per SQL statement (asyncpg). Else None
    and nothing of OpenTelemetry is imported."""
    global _tracing
    if not env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    _tracing = True
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service}))
    provider.add_span_processor(_claims_redactor())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    return provider


# The request context statement (localplus_common.db.request_context) carries the caller's JWT claims as a
# literal: never exported.
CLAIMS_LITERAL = re.compile(r"(set_config\('request\.jwt\.claims', )E?'(?:[^']|'')*'")
STATEMENT_ATTRIBUTES = ("db.statement", "db.query.text")


def _claims_redactor() -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class ClaimsRedactor(SpanProcessor):
        """Replaces the claims in a SQL span's statement before any exporter sees the span."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            for key in STATEMENT_ATTRIBUTES:
                statement = (span.attributes or {}).get(key)
                if isinstance(statement, str) and "request.jwt.claims" in statement:
                    span.set_attribute(key, CLAIMS_LITERAL.sub(r"\1'<claims>'", statement))

    return ClaimsRedactor()


def tracing_interceptor(provider: TracerProvider) -> grpc.aio.ServerInterceptor:
    """A server span per RPC (health checks aside), continuing the caller's W3C `traceparent`."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(
        tracer_provider=provider, filter_=filters.negate(filters.health_check())
    )
    return interceptor


def trace_context() -> list[tuple[str, str]]:
    """The current trace as W3C `traceparent` (and `tracestate`) metadata for a call to another service,
    whose server span then continues it; nothing when this process does not trace."""
    if not _tracing:
        return []
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def current_trace_id() -> str:
    """The current span's trace id (hex), for the request's log line; "" outside a trace."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""
