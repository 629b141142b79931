"""Server bootstrap shared by the three services: auth and error mapping in one interceptor,
health and reflection, graceful shutdown."""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from localplus_common.auth import TokenVerifier, bearer_from_metadata
from localplus_common.config import Settings
from localplus_common.db import Database, create_pool, current_identity
from localplus_common.errors import UNAVAILABLE, ApiError, from_database_error, invalid_argument

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Identify the caller once per call and map every failure to a deliberate status."""

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
        if handler is None or handler.unary_unary is None or method.startswith("/grpc."):
            return handler
        self._guarded[method] = self._guard(method, handler)
        return self._guarded[method]

    def _guard(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behavior = handler.unary_unary
        deserialize = handler.request_deserializer
        verifier = self._verifier

        async def guarded(raw_request: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                # Decoded here rather than by grpc, so a malformed message is a clear
                # INVALID_ARGUMENT instead of UNKNOWN with a Python class name in it.
                try:
                    request = deserialize(raw_request)
                except (DecodeError, ValueError):
                    raise invalid_argument("", "the request message could not be decoded") from None
                identity = verifier.identify(bearer_from_metadata(context.invocation_metadata()))
                current_identity.set(identity)
                return await behavior(request, context)
            except ApiError as error:
                failure = error
            except asyncpg.PostgresError as error:
                failure = from_database_error(error)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                log.exception("database unreachable in %s", method)
                failure = UNAVAILABLE
            except Exception:
                log.exception("unexpected error in %s", method)
                failure = ApiError(grpc.StatusCode.INTERNAL, "internal error")
            await context.abort_with_status(failure.to_status())

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=None, response_serializer=handler.response_serializer
        )


Register = Callable[[grpc.aio.Server, Database, Settings], None]


async def serve(address: str, service_names: list[str], register: Register) -> None:
    """Start a service on `address` and run until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    pool = await create_pool(settings)
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
    register(server, Database(pool), settings)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in [*service_names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    await server.start()
    log.info("%s listening on %s", ", ".join(service_names), address)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for name in [*service_names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace=5)
    await pool.close()
