"""Server bootstrap shared by the three services: auth and error mapping in one interceptor,
health and reflection, graceful shutdown."""

import asyncio
import logging
import re
import signal
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
from localplus_common.db import Database, DatabaseUnavailable, create_pool, current_identity
from localplus_common.errors import (
    INTERNAL,
    REQUEST_ID_KEY,
    UNAVAILABLE,
    ApiError,
    from_database_error,
    invalid_argument,
)

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# What we accept as a caller's request id (Envoy sends a UUID); anything else is replaced, as it goes
# into the log.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Identify the caller once per call and map every failure to a deliberate status, for unary and
    streaming methods alike (streaming handlers are async generators and read their requests by
    iterating, not with `context.read()`)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier
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
                try:
                    self._identify(context)
                    return await unary_unary(decode(raw_request), context)
                except Exception as error:
                    await _abort(context, method, error)

            return grpc.unary_unary_rpc_method_handler(guarded_unary_unary, response_serializer=serialize)
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            async def guarded_unary_stream(raw_request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    self._identify(context)
                    async for response in unary_stream(decode(raw_request), context):
                        yield response
                except Exception as error:
                    await _abort(context, method, error)

            return grpc.unary_stream_rpc_method_handler(guarded_unary_stream, response_serializer=serialize)
        if handler.stream_unary is not None:
            stream_unary = handler.stream_unary

            async def guarded_stream_unary(
                raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
            ) -> Any:
                try:
                    self._identify(context)
                    return await stream_unary(decoded(raw_requests), context)
                except Exception as error:
                    await _abort(context, method, error)

            return grpc.stream_unary_rpc_method_handler(guarded_stream_unary, response_serializer=serialize)
        stream_stream = handler.stream_stream

        async def guarded_stream_stream(
            raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            try:
                self._identify(context)
                async for response in stream_stream(decoded(raw_requests), context):
                    yield response
            except Exception as error:
                await _abort(context, method, error)

        return grpc.stream_stream_rpc_method_handler(guarded_stream_stream, response_serializer=serialize)

    def _identify(self, context: grpc.aio.ServicerContext) -> None:
        current_identity.set(self._verifier.identify(bearer_from_metadata(context.invocation_metadata())))


def _request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's x-request-id (Envoy sets one on every request), or a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and REQUEST_ID.match(value):
            return value
    return str(uuid.uuid4())


async def _abort(context: grpc.aio.ServicerContext, method: str, error: Exception) -> None:
    """End the call with the status `error` deserves; the log keeps the detail under the request id
    the client gets back (looked up only here, so successful calls pay nothing for it)."""
    if isinstance(error, grpc.aio.AbortError):
        raise error  # the handler ended the call itself
    request_id = _request_id_of(context)
    if isinstance(error, ApiError):
        failure = error
    elif isinstance(error, asyncpg.PostgresError):
        failure = from_database_error(error)
        log.log(
            logging.ERROR if failure is INTERNAL else logging.WARNING,
            "request_id=%s %s: database refused: sqlstate %s, table %s, column %s, constraint %s: %s",
            request_id,
            method,
            error.sqlstate,
            getattr(error, "table_name", None),
            getattr(error, "column_name", None),
            getattr(error, "constraint_name", None),
            error.message,
        )
    elif isinstance(error, DatabaseUnavailable):
        log.error("request_id=%s %s: database unavailable", request_id, method, exc_info=error)
        failure = UNAVAILABLE
    else:
        log.error("request_id=%s %s: unexpected error", request_id, method, exc_info=error)
        failure = INTERNAL
    await context.abort(failure.code, failure.message, failure.trailing_metadata(request_id))


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's `serve(...)` to the end on uvloop's event loop: in `make bench` it took a third
    less of the events service's CPU per GET than asyncio's own loop (README, Benchmarks)."""
    uvloop.run(main)


Register = Callable[[grpc.aio.Server, Database, Settings], None]
Background = Callable[[Database], Coroutine[Any, Any, None]]


async def serve(
    address: str, service_names: list[str], register: Register, background: Background | None = None
) -> None:
    """Start a service on `address` and run until SIGTERM or SIGINT, with `background` (a loop of the
    service's own, e.g. expiring holds) beside it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    pool = await create_pool(settings)
    replica_pool = await create_pool(settings, settings.database_read_url) if settings.database_read_url else None
    server = grpc.aio.server(
        interceptors=[RequestInterceptor(TokenVerifier(settings))],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Envoy forwards the whole original URL as a header (x-envoy-original-path) and allows
            # up to 60 KiB of headers; grpc's 8 KiB default turned long URLs into random 429s.
            ("grpc.max_metadata_size", 64 * 1024),
            ("grpc.absolute_max_metadata_size", 96 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    register(server, Database(pool, replica_pool), settings)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in [*service_names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    await server.start()
    log.info("%s listening on %s", ", ".join(service_names), address)
    task = asyncio.create_task(background(Database(pool))) if background is not None else None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if task is not None:
        task.cancel()
    for name in [*service_names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace=5)
    await pool.close()
    if replica_pool is not None:
        await replica_pool.close()
