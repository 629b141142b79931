"""Service-to-service channels balance per call (localplus_common.calls): a name that resolves to two
addresses, as a headless Service's name resolves to its pods, gets calls spread over both with the
channels' round_robin policy, where gRPC's default (pick_first) sends every call to the first.

The name is answered by a minimal DNS server of the test's own (gRPC's c-ares resolver takes a DNS
server in the target's authority: `dns://<server>/<name>:<port>`), and the two backends are real gRPC
servers on 127.0.0.1 and 127.0.0.2 that count the calls they get."""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from localplus_common.calls import CHANNEL_OPTIONS, channel_to
from localplus_dev.postgres import free_port

BACKENDS = ("127.0.0.1", "127.0.0.2")
CALLS = 40


def serve_dns(addresses: tuple[str, ...]) -> tuple[int, Callable[[], None]]:
    """A UDP DNS server answering every A query with `addresses` (TTL 5 s, as CoreDNS's default)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stopped = threading.Event()

    def answer() -> None:
        while not stopped.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            end = 12
            while query[end]:
                end += query[end] + 1
            question = query[12 : end + 5]
            (qtype,) = struct.unpack(">H", query[end + 1 : end + 3])
            records = addresses if qtype == 1 else ()
            header = struct.pack(">HHHHHH", struct.unpack(">H", query[:2])[0], 0x8180, 1, len(records), 0, 0)
            body = b"".join(
                b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(address) for address in records
            )
            sock.sendto(header + question + body, peer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()

    def stop() -> None:
        stopped.set()
        thread.join()
        sock.close()

    port: int = sock.getsockname()[1]
    return port, stop


class Tally(grpc.ServerInterceptor):
    def __init__(self, counts: Counter[str], name: str) -> None:
        self.counts, self.name = counts, name

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        self.counts[self.name] += 1
        return continuation(handler_call_details)


@pytest.fixture
def backends() -> Iterator[tuple[str, Counter[str]]]:
    """`<name>:<port>` of the two backends, resolved by the test's DNS server, and their call counts."""
    counts: Counter[str] = Counter()
    port = free_port()
    servers = []
    for address in BACKENDS:
        server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[Tally(counts, address)])
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        assert server.add_insecure_port(f"{address}:{port}") == port
        server.start()
        servers.append(server)
    dns_port, stop_dns = serve_dns(BACKENDS)
    try:
        yield f"dns://127.0.0.1:{dns_port}/events.localplus.test:{port}", counts
    finally:
        stop_dns()
        for server in servers:
            server.stop(None)


def call_many(target: str, options: list[tuple[str, str | int]]) -> None:
    with grpc.insecure_channel(target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(CALLS):
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)


def test_round_robin_spreads_calls_over_every_address(backends: tuple[str, Counter[str]]) -> None:
    target, counts = backends
    call_many(target, list(CHANNEL_OPTIONS))
    assert set(counts) == set(BACKENDS)
    assert min(counts.values()) >= CALLS // 4, counts  # round robin: about half each


def test_without_it_one_address_gets_every_call(backends: tuple[str, Counter[str]]) -> None:
    target, counts = backends
    call_many(target, [])
    assert sorted(counts.values()) == [CALLS], counts


async def test_service_channels_reach_local_addresses(backends: tuple[str, Counter[str]]) -> None:
    """The services' channels (`dns:///<host>:<port>`, the options above) also take the plain
    127.0.0.1 addresses of `make up` and the tests."""
    target, counts = backends
    port = target.rsplit(":", 1)[1]
    channel = channel_to(f"127.0.0.1:{port}")
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        await channel.close()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert counts == {"127.0.0.1": 1}
