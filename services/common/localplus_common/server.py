"""Server bootstrap shared by the three services: auth and error mapping in one interceptor,
health and reflection, worker processes, graceful drain on SIGTERM."""

import asyncio
import logging
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
import grpc
import uvloop
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from localplus_common.auth import TokenVerifier, bearer_from_metadata
from localplus_common.config import Settings
from localplus_common.db import Database, DatabaseUnavailable, create_pool, current_identity, current_request_id
from localplus_common.errors import (
    INTERNAL,
    REQUEST_ID_KEY,
    UNAVAILABLE,
    ApiError,
    from_database_error,
    invalid_argument,
)
from localplus_common.services import SERVICES
from localplus_common.telemetry import (
    MethodMetrics,
    configure_logging,
    current_trace_id,
    log_request,
    metrics_address,
    metrics_served_by_supervisor,
    publish_pools,
    start_metrics_server,
    start_tracing,
    tracing_interceptor,
    watch_pools,
    workers_metrics,
)
from localplus_common.workers import is_worker, stop_when_orphaned, supervise

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# What we accept as a caller's request id (Envoy sends a UUID); anything else is replaced, as it goes
# into the log.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Clients balancing on their own (localplus_common.calls) resolve the name again when a connection ends:
# ending each one after 5 minutes (with GOAWAY; calls in flight, streams too, are left to finish) lets
# them find pods added meanwhile.
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000


class _Call:
    """One call being served: when it started, its request id, and the status it ends with."""

    __slots__ = ("code", "request_id", "started")

    def __init__(self, request_id: str) -> None:
        self.started = time.perf_counter()
        self.request_id = request_id
        # Until the handler returns or fails: an async generator closed early, or the task cancelled,
        # means the client went away.
        self.code = grpc.StatusCode.CANCELLED


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Identify the caller once per call and map every failure to a deliberate status, for unary and
    streaming methods alike (streaming handlers are async generators and read their requests by
    iterating, not with `context.read()`); count the call, and write its one log line.

    `metrics`: record the grpc_server_* series (off when the service serves no /metrics); `tracing`:
    an OpenTelemetry interceptor runs outside this one, so the log line names the trace."""

    def __init__(self, verifier: TokenVerifier, *, metrics: bool = True, tracing: bool = False) -> None:
        self._verifier = verifier
        self._metrics = metrics
        self._tracing = tracing
        # The wrapped handler of each method, built on its first call rather than on every call.
        self._guarded: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method in self._guarded:
            return self._guarded[method]
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith("/grpc."):
            return handler
        self._guarded[method] = self._guard(method, handler)
        return self._guarded[method]

    def _guard(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        # Requests are decoded here rather than by grpc, so a malformed message is a clear
        # INVALID_ARGUMENT instead of UNKNOWN with a Python class name in it.
        deserialize = handler.request_deserializer
        metrics = (
            MethodMetrics(method, handler.request_streaming, handler.response_streaming) if self._metrics else None
        )
        tracing = self._tracing

        def begin(context: grpc.aio.ServicerContext) -> _Call:
            if metrics is not None:
                metrics.started()
            call = _Call(_request_id_of(context))
            current_request_id.set(call.request_id)
            return call

        def end(call: _Call) -> None:
            if metrics is not None:
                metrics.handled(call.code, time.perf_counter() - call.started)
            identity = current_identity.get(None)
            user_id = None if identity is None else identity.user_id
            trace_id = current_trace_id() if tracing else ""
            log_request(method, call.code, call.started, call.request_id, user_id, trace_id)

        def decode(raw_request: bytes) -> Any:
            try:
                return deserialize(raw_request)
            except (DecodeError, ValueError):
                raise invalid_argument("", "the request message could not be decoded") from None

        async def decoded(raw_requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
            async for raw_request in raw_requests:
                yield decode(raw_request)

        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            async def guarded_unary_unary(raw_request: bytes, context: grpc.aio.ServicerContext) -> Any:
                call = begin(context)
                try:
                    self._identify(context)
                    response = await unary_unary(decode(raw_request), context)
                    call.code = grpc.StatusCode.OK
                    return response
                except Exception as error:
                    await _abort(context, method, error, call)
                finally:
                    end(call)

            return grpc.unary_unary_rpc_method_handler(guarded_unary_unary, response_serializer=serialize)
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            async def guarded_unary_stream(raw_request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                call = begin(context)
                try:
                    self._identify(context)
                    async for response in unary_stream(decode(raw_request), context):
                        yield response
                    call.code = grpc.StatusCode.OK
                except Exception as error:
                    await _abort(context, method, error, call)
                finally:
                    end(call)

            return grpc.unary_stream_rpc_method_handler(guarded_unary_stream, response_serializer=serialize)
        if handler.stream_unary is not None:
            stream_unary = handler.stream_unary

            async def guarded_stream_unary(
                raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
            ) -> Any:
                call = begin(context)
                try:
                    self._identify(context)
                    response = await stream_unary(decoded(raw_requests), context)
                    call.code = grpc.StatusCode.OK
                    return response
                except Exception as error:
                    await _abort(context, method, error, call)
                finally:
                    end(call)

            return grpc.stream_unary_rpc_method_handler(guarded_stream_unary, response_serializer=serialize)
        stream_stream = handler.stream_stream

        async def guarded_stream_stream(
            raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            call = begin(context)
            try:
                self._identify(context)
                async for response in stream_stream(decoded(raw_requests), context):
                    yield response
                call.code = grpc.StatusCode.OK
            except Exception as error:
                await _abort(context, method, error, call)
            finally:
                end(call)

        return grpc.stream_stream_rpc_method_handler(guarded_stream_stream, response_serializer=serialize)

    def _identify(self, context: grpc.aio.ServicerContext) -> None:
        current_identity.set(self._verifier.identify(bearer_from_metadata(context.invocation_metadata())))


def _request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's x-request-id (Envoy sets one on every request), or a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and REQUEST_ID.match(value):
            return value
    return str(uuid.uuid4())


async def _abort(context: grpc.aio.ServicerContext, method: str, error: Exception, call: _Call) -> None:
    """End the call with the status `error` deserves; the log keeps the detail under the request id
    the client gets back."""
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        call.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
        raise error  # the handler ended the call itself
    where = {"method": method, "request_id": call.request_id}
    if isinstance(error, ApiError):
        failure = error
    elif isinstance(error, asyncpg.PostgresError):
        failure = from_database_error(error)
        log.log(
            logging.ERROR if failure is INTERNAL else logging.WARNING,
            "database refused: sqlstate %s, table %s, column %s, constraint %s: %s",
            error.sqlstate,
            getattr(error, "table_name", None),
            getattr(error, "column_name", None),
            getattr(error, "constraint_name", None),
            error.message,
            extra={"fields": where},
        )
    elif isinstance(error, DatabaseUnavailable):
        log.error("database unavailable", exc_info=error, extra={"fields": where})
        failure = UNAVAILABLE
    else:
        log.error("unexpected error", exc_info=error, extra={"fields": where})
        failure = INTERNAL
    call.code = failure.code
    await context.abort(failure.code, failure.message, failure.trailing_metadata(call.request_id))


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's `serve(...)` to the end on uvloop's event loop: in `make bench` it took a third
    less of the events service's CPU per GET than asyncio's own loop (README, Benchmarks)."""
    uvloop.run(main)


def server_options() -> list[tuple[str, int]]:
    """Every service's grpc.aio server options (bench.floor's empty server takes them too)."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Envoy forwards the whole original URL as a header (x-envoy-original-path) and allows
        # up to 60 KiB of headers; grpc's 8 KiB default turned long URLs into random 429s.
        ("grpc.max_metadata_size", 64 * 1024),
        ("grpc.absolute_max_metadata_size", 96 * 1024),
        # Workers share the port; a lone process must find it free (a clash is an error, not a silent
        # share with a stale process).
        ("grpc.so_reuseport", 1 if is_worker() else 0),
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
    ]


Register = Callable[[grpc.aio.Server, Database, Settings], None]
Background = Callable[[Database], Coroutine[Any, Any, None]]


async def serve(
    address: str, service_names: list[str], register: Register, background: Background | None = None
) -> None:
    """Start a service on `address` and run until SIGTERM or SIGINT, with `background` (a loop of the
    service's own, e.g. expiring holds) beside it."""
    (service,) = (service for service in SERVICES if service.grpc_service in service_names)
    configure_logging(service.name)
    settings = Settings.from_env()
    if settings.workers > 1 and not is_worker():
        # The port of /metrics is one: the supervisor serves it, summing what its workers record.
        with workers_metrics(metrics_address(service)) as metrics_env:
            code = await supervise(settings.workers, {service.metrics_var: "off", **metrics_env})
        if code:
            raise SystemExit(code)
        return
    # From before the server starts: a signal while it starts (a rolling update's quick stop) stops it
    # the same way, once it is up, rather than killing it.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_at = metrics_address(service)
    supervised_metrics = is_worker() and metrics_served_by_supervisor()
    tracer_provider = start_tracing(service.name)
    pool = await create_pool(settings)
    replica_pool = await create_pool(settings, settings.database_read_url) if settings.database_read_url else None
    pools = {"primary": pool} | ({"replica": replica_pool} if replica_pool else {})
    publishing = asyncio.create_task(publish_pools(pools)) if supervised_metrics else None
    if publishing is None:
        watch_pools(pools)
    if metrics_at is not None:
        start_metrics_server(metrics_at)
    interceptors: list[grpc.aio.ServerInterceptor] = (
        [] if tracer_provider is None else [tracing_interceptor(tracer_provider)]
    )
    interceptors.append(
        RequestInterceptor(
            TokenVerifier(settings),
            metrics=metrics_at is not None or supervised_metrics,
            tracing=tracer_provider is not None,
        )
    )
    server = grpc.aio.server(interceptors=interceptors, options=server_options())
    register(server, Database(pool, replica_pool), settings)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in [*service_names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    await server.start()
    log.info(
        "%s listening on %s; metrics %s; traces %s",
        ", ".join(service_names),
        address,
        f"http://{metrics_at}/metrics" if metrics_at else "by the supervisor" if supervised_metrics else "off",
        "exported by OTLP" if tracer_provider else "off",
    )
    task = asyncio.create_task(background(Database(pool))) if background is not None else None

    orphan_watch = asyncio.create_task(stop_when_orphaned(stop.set)) if is_worker() else None
    await stop.wait()
    if orphan_watch is not None:
        orphan_watch.cancel()
    if task is not None:
        task.cancel()
    if publishing is not None:
        publishing.cancel()
    # Drain: NOT_SERVING first (every name, for good) while calls are still taken, so that probes and
    # health-checking clients move on; then no new calls or connections, and those in flight may finish.
    await health_servicer.enter_graceful_shutdown()
    log.info(
        "draining: NOT_SERVING for %gs, then %gs for calls in flight", settings.drain_seconds, settings.grace_seconds
    )
    await asyncio.sleep(settings.drain_seconds)
    await server.stop(grace=settings.grace_seconds)
    await pool.close()
    if replica_pool is not None:
        await replica_pool.close()
    if tracer_provider is not None:
        tracer_provider.shutdown()  # sends the spans still buffered
