"""The floor under a GET (`make bench ARGS="--only floor"`): what a request costs when our own code does
nothing, set beside the real GET in the same run, so the limits of issue 12 can be read against what
no code of ours can go below on this machine.

  empty, direct        a grpc.aio server on uvloop with the services' server options, no interceptor,
                        whose GetEvent answers the bytes of a real event (bytes in, bytes out)
  empty, via Envoy     the same server behind an Envoy with nothing but its router: no transcoding, JWT,
                        CORS, Lua or access log
  get                   the real GET along each route, as the `get` scenario measures it

All gRPC load comes from h2load (`--grpc-client h2load`), so the floors and the real routes share a load
generator. Under the rows: each limit, the floor beneath it, and what that leaves for our own work.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from bench.load import GrpcWorkload, LoadResult
from bench.phase0 import SERVICE, GetEvent, published_events
from bench.runner import Context, Route, Row, format_row, measure
from localplus.events.v1 import events_pb2
from localplus_common.server import run as run_on_uvloop
from localplus_common.server import server_options
from localplus_dev.postgres import free_port
from localplus_dev.processes import venv_binary

# Issue 12's limits.
SERVICE_LIMIT_US = 400
STACK_LIMIT_US = 800
GATEWAY_SQL_LIMIT = 0.5
READY_TIMEOUT_S = 30.0
REAL_ROUTES = (Route.GRPC_DIRECT, Route.GRPC_GATEWAY, Route.JSON_GATEWAY, Route.SQL)


async def serve_empty(port: int, answer: bytes) -> None:
    """GetEvent answering `answer` to any request, on a bare grpc.aio server (the floor's service)."""

    async def get_event(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    method = grpc.unary_unary_rpc_method_handler(get_event)  # no (de)serializers: bytes in, bytes out
    service = SERVICE.removeprefix("/")
    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"GetEvent": method}),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def router_only_envoy(listen_port: int, upstream_port: int) -> dict[str, Any]:
    """An Envoy config proxying every request over HTTP/2 to 127.0.0.1:upstream_port, with no other filter."""
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "floor",
        "route_config": {
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    http2 = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    upstream = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}
    return {
        "static_resources": {
            "listeners": [
                {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "up",
                    "type": "STATIC",
                    "typed_extension_protocol_options": http2,
                    "load_assignment": {
                        "cluster_name": "up",
                        "endpoints": [{"lb_endpoints": [{"endpoint": upstream}]}],
                    },
                }
            ],
        }
    }


def _wait_answering(target: str, request: bytes, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with grpc.insecure_channel(target) as channel:
                channel.unary_unary(f"{SERVICE}/GetEvent")(request, timeout=1)
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers GetEvent on {target}") from None
            time.sleep(0.1)


@contextmanager
def floor_servers(answer: bytes, request: bytes) -> Iterator[tuple[int, int, int, int]]:
    """The empty server and its router-only Envoy: (server port, server pid, Envoy port, Envoy pid)."""
    server_port, envoy_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as scratch:
        answer_path, config_path = Path(scratch) / "answer", Path(scratch) / "envoy.json"
        answer_path.write_bytes(answer)
        config_path.write_text(json.dumps(router_only_envoy(envoy_port, server_port)))
        server = subprocess.Popen([sys.executable, "-m", "bench.floor", str(server_port), str(answer_path)])
        envoy_argv = [venv_binary("envoy"), "-c", str(config_path), "--log-level", "error", "--disable-hot-restart"]
        envoy = subprocess.Popen(envoy_argv, stdout=subprocess.DEVNULL)
        try:
            _wait_answering(f"127.0.0.1:{server_port}", request, server)
            _wait_answering(f"127.0.0.1:{envoy_port}", request, envoy)
            yield server_port, server.pid, envoy_port, envoy.pid
        finally:
            for process in (envoy, server):
                process.terminate()
                process.wait(timeout=10)


def run(context: Context) -> None:
    scenario = GetEvent()
    scenario.seed(context)
    scenario.check(context)
    event_id = str(published_events(context).event_ids[0])
    request = events_pb2.GetEventRequest(id=event_id).SerializeToString()
    with grpc.insecure_channel(context.endpoints.events_addr) as channel:
        answer = channel.unary_unary(f"{SERVICE}/GetEvent")(request, timeout=30)
    results: dict[str, LoadResult] = {}
    with floor_servers(answer, request) as (server_port, server_pid, envoy_port, envoy_pid):
        # The floor's server and Envoy stand in for the events service and the gateway in the CPU columns.
        floor_context = Context(
            context.endpoints, context.args, {**context.components, "events": server_pid, "envoy": envoy_pid}
        )
        for title, port in (("empty, direct", server_port), ("empty, via Envoy", envoy_port)):
            workload = GrpcWorkload(f"127.0.0.1:{port}", f"{SERVICE}/GetEvent", [(request, "")])
            results[title] = measure(workload, Route.GRPC_DIRECT, floor_context, scenario)
            print(format_row(Row("floor", Route.GRPC_DIRECT, results[title], title)), flush=True)
    for route in REAL_ROUTES:
        results[route.value] = measure(scenario.workload(route, context), route, context, scenario)
        print(format_row(Row("get", route, results[route.value], route.title)), flush=True)
    for line in verdict(results):
        print(f"{'':<9} {line}", flush=True)


def verdict(results: dict[str, LoadResult]) -> list[str]:
    """Each limit of issue 12 beside the floor under it, from this run's rows."""

    def cpu(title: str, component: str) -> float:
        return results[title].cpu_per_request().get(component, float("nan"))

    empty_direct, empty_behind = cpu("empty, direct", "svc"), cpu("empty, via Envoy", "svc")
    bare_envoy, sql_pg = cpu("empty, via Envoy", "envoy"), cpu(Route.SQL.value, "pg")
    stack_floor = bare_envoy + empty_behind + sql_pg
    json_gw, sql = results[Route.JSON_GATEWAY.value], results[Route.SQL.value]
    empty_rate = results["empty, via Envoy"].rate
    return [
        f"service CPU per GET: {cpu(Route.GRPC_DIRECT.value, 'svc'):,.0f} us direct, "
        f"{cpu(Route.JSON_GATEWAY.value, 'svc'):,.0f} us as JSON via the gateway (limit {SERVICE_LIMIT_US}); "
        f"an empty RPC alone costs {empty_direct:,.0f} us direct and {empty_behind:,.0f} us behind Envoy, "
        f"leaving {SERVICE_LIMIT_US - empty_direct:,.0f} and {SERVICE_LIMIT_US - empty_behind:,.0f} us for the "
        "token, the transaction, the query and the message",
        f"stack CPU per JSON GET: {json_gw.stack_cpu_per_request:,.0f} us (limit {STACK_LIMIT_US}); floor "
        f"{stack_floor:,.0f} us = router-only Envoy {bare_envoy:,.0f} + empty RPC behind it {empty_behind:,.0f} "
        f"+ Postgres of the bare query {sql_pg:,.0f}, before transcoding, JWT, CORS and any of our code",
        f"gateway/SQL req/s: {json_gw.rate / sql.rate:.2f} (limit {GATEWAY_SQL_LIMIT}); an empty RPC via the "
        f"router-only Envoy, which touches no database, runs at {empty_rate / sql.rate:.2f} of the bare query",
    ]


if __name__ == "__main__":
    run_on_uvloop(serve_empty(int(sys.argv[1]), Path(sys.argv[2]).read_bytes()))
