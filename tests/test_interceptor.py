"""The services' shared RequestInterceptor on a real grpc.aio server: streaming methods get the same
identity check and error mapping as unary ones (a bad token is refused, an ApiError mid-stream
becomes its status, anything unexpected is INTERNAL without Python's words in it), and only a
database that cannot be reached is UNAVAILABLE."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.protobuf import wrappers_pb2
from google.rpc import error_details_pb2, status_pb2

from localplus_common.auth import TokenVerifier
from localplus_common.config import DEV_JWT_SECRET, Settings
from localplus_common.db import Database, current_identity
from localplus_common.errors import not_found
from localplus_common.server import RequestInterceptor
from localplus_dev.postgres import free_port
from localplus_dev.token import mint

Text = wrappers_pb2.StringValue
SERVICE = "localplus.probe.v1.ProbeService"
SECRET = "a detail only the server may know"


def _act_on(value: str) -> None:
    """What a probe does with a value: nothing, a deliberate error, or a crash."""
    if value == "api-error":
        raise not_found("no such thing")
    if value == "crash":
        raise RuntimeError(SECRET)


async def answers(request: Text, context: grpc.aio.ServicerContext) -> AsyncIterator[Text]:
    """unary_stream: the caller's role, then (unless the request fails) "done"."""
    yield Text(value=current_identity.get().role)
    _act_on(request.value)
    yield Text(value="done")


async def collect(requests: AsyncIterator[Text], context: grpc.aio.ServicerContext) -> Text:
    """stream_unary: the caller's role and every value sent."""
    values = []
    async for request in requests:
        _act_on(request.value)
        values.append(request.value)
    return Text(value=",".join([current_identity.get().role, *values]))


async def echo(requests: AsyncIterator[Text], context: grpc.aio.ServicerContext) -> AsyncIterator[Text]:
    """stream_stream: each value back, prefixed with the caller's role."""
    async for request in requests:
        _act_on(request.value)
        yield Text(value=f"{current_identity.get().role}:{request.value}")


async def file_error(request: Text, context: grpc.aio.ServicerContext) -> Text:
    """unary: an OSError that is not about the database (zoneinfo's "File name too long" once was)."""
    raise OSError(36, "File name too long")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[RequestInterceptor(TokenVerifier(Settings.from_env()))])
    # A database nobody listens for: min_size=0 makes the pool connect only when asked.
    unreachable = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", min_size=0)
    assert unreachable is not None
    db = Database(unreachable)

    async def query(request: Text, context: grpc.aio.ServicerContext) -> Text:
        """unary: a use case's transaction on the unreachable database."""
        return Text(value=str(await db.run(lambda conn: conn.fetchval("select 1"))))

    handlers = {
        "Answers": grpc.unary_stream_rpc_method_handler(answers, Text.FromString, Text.SerializeToString),
        "Collect": grpc.stream_unary_rpc_method_handler(collect, Text.FromString, Text.SerializeToString),
        "Echo": grpc.stream_stream_rpc_method_handler(echo, Text.FromString, Text.SerializeToString),
        "FileError": grpc.unary_unary_rpc_method_handler(file_error, Text.FromString, Text.SerializeToString),
        "Query": grpc.unary_unary_rpc_method_handler(query, Text.FromString, Text.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as client:
        yield client
    await server.stop(grace=None)
    await unreachable.close()


def signed_in() -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {mint(None, DEV_JWT_SECRET, role='service_role')}")]


BAD_TOKEN = [("authorization", "Bearer not-a-jwt")]


def answers_call(channel: grpc.aio.Channel) -> grpc.aio.UnaryStreamMultiCallable:
    return channel.unary_stream(
        f"/{SERVICE}/Answers", request_serializer=Text.SerializeToString, response_deserializer=Text.FromString
    )


def collect_call(channel: grpc.aio.Channel) -> grpc.aio.StreamUnaryMultiCallable:
    return channel.stream_unary(
        f"/{SERVICE}/Collect", request_serializer=Text.SerializeToString, response_deserializer=Text.FromString
    )


def echo_call(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamMultiCallable:
    return channel.stream_stream(
        f"/{SERVICE}/Echo", request_serializer=Text.SerializeToString, response_deserializer=Text.FromString
    )


def texts(*values: str) -> list[Text]:
    return [Text(value=value) for value in values]


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason in the status details the interceptor attaches."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


async def test_streams_run_as_the_verified_caller(channel: grpc.aio.Channel) -> None:
    assert [m.value async for m in answers_call(channel)(Text(), metadata=signed_in())] == ["service_role", "done"]
    assert [m.value async for m in answers_call(channel)(Text())] == ["anon", "done"]
    collected = await collect_call(channel)(iter(texts("a", "b")), metadata=signed_in())
    assert collected.value == "service_role,a,b"
    echoed = [m.value async for m in echo_call(channel)(iter(texts("a", "b")), metadata=signed_in())]
    assert echoed == ["service_role:a", "service_role:b"]


async def test_a_bad_token_is_unauthenticated_on_every_kind_of_stream(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unary_stream:
        [m async for m in answers_call(channel)(Text(), metadata=BAD_TOKEN)]
    with pytest.raises(grpc.aio.AioRpcError) as stream_unary:
        await collect_call(channel)(iter(texts("a")), metadata=BAD_TOKEN)
    with pytest.raises(grpc.aio.AioRpcError) as stream_stream:
        [m async for m in echo_call(channel)(iter(texts("a")), metadata=BAD_TOKEN)]
    for refused in (unary_stream, stream_unary, stream_stream):
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
        assert error_reason(refused.value) == "UNAUTHENTICATED"


async def test_an_api_error_mid_stream_becomes_its_status(channel: grpc.aio.Channel) -> None:
    received: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as unary_stream:
        async for message in answers_call(channel)(Text(value="api-error"), metadata=signed_in()):
            received.append(message.value)
    assert received == ["service_role"], "the messages before the error arrive"
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as stream_stream:
        async for message in echo_call(channel)(iter(texts("a", "api-error", "b")), metadata=signed_in()):
            received.append(message.value)
    assert received == ["service_role:a"]
    with pytest.raises(grpc.aio.AioRpcError) as stream_unary:
        await collect_call(channel)(iter(texts("a", "api-error")), metadata=signed_in())
    for failed in (unary_stream, stream_stream, stream_unary):
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND, failed.value
        assert failed.value.details() == "no such thing"
        assert error_reason(failed.value) == "NOT_FOUND"


async def test_an_unexpected_exception_mid_stream_is_internal_without_python_words(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unary_stream:
        [m async for m in answers_call(channel)(Text(value="crash"), metadata=signed_in())]
    with pytest.raises(grpc.aio.AioRpcError) as stream_stream:
        [m async for m in echo_call(channel)(iter(texts("crash")), metadata=signed_in())]
    with pytest.raises(grpc.aio.AioRpcError) as stream_unary:
        await collect_call(channel)(iter(texts("crash")), metadata=signed_in())
    for crashed in (unary_stream, stream_stream, stream_unary):
        assert crashed.value.code() == grpc.StatusCode.INTERNAL, crashed.value
        details = crashed.value.details() or ""
        assert details and "RuntimeError" not in details and SECRET not in details, details


async def test_an_undecodable_message_in_a_stream_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    raw = channel.stream_stream(f"/{SERVICE}/Echo")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        [m async for m in raw(iter([b"\xff\xff\xff"]), metadata=signed_in())]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value


def unary_call(channel: grpc.aio.Channel, name: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        f"/{SERVICE}/{name}", request_serializer=Text.SerializeToString, response_deserializer=Text.FromString
    )


async def test_an_unreachable_database_is_unavailable(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await unary_call(channel, "Query")(Text())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
    assert error_reason(refused.value) == "UNAVAILABLE"


async def test_an_os_error_elsewhere_is_not_an_outage(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as crashed:
        await unary_call(channel, "FileError")(Text())
    assert crashed.value.code() == grpc.StatusCode.INTERNAL, crashed.value
    assert "File name too long" not in (crashed.value.details() or "")
