"""What telemetry costs on the read path (`make bench ARGS="--only telemetry"`): the `get` scenario (GET
/api/events/{id} through the gateway, and GetEvent straight to the service) with the events service
restarted in each mode, in one run:

  off             no metrics (EVENTS_METRICS_ADDR=off), no traces; the request log line stays
  no-log          as off, and LOG_LEVEL=WARNING drops the request log line too
  metrics         the default: Prometheus metrics, the request log line
  metrics+traces  as metrics, and every request traced (server span + a span per SQL statement) and
                  exported by OTLP/HTTP to a sink in this process, which decodes and counts the spans
  traces 10%      as metrics+traces, one request in ten sampled (OTEL_TRACES_SAMPLER=parentbased_traceidratio)

Envoy's access log is on in every mode. With --rounds N the modes are measured N times, interleaved,
and the best kept. Ratios compare each mode with `off`.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.harness import BenchStack
from bench.load import LoadResult
from bench.phase0 import GetEvent
from bench.runner import Context, Route, Row, format_row, measure
from localplus_common.services import EVENTS

ROUTES = (Route.JSON_GATEWAY, Route.GRPC_DIRECT)


class SpanSink:
    """An OTLP/HTTP endpoint that counts the spans it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                sink.spans += sum(len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def modes(sink: SpanSink) -> dict[str, dict[str, str]]:
    """Each mode's settings over the events service's usual environment."""
    off = {EVENTS.metrics_var: "off"}
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_MAX_QUEUE_SIZE": "65536"}
    return {
        "off": off,
        "no-log": {**off, "LOG_LEVEL": "WARNING"},
        "metrics": {},
        "metrics+traces": traced,
        "traces 10%": {**traced, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    }


def run(bench_stack: BenchStack, context: Context) -> None:
    scenario = GetEvent()
    scenario.seed(context)
    sink = SpanSink()
    best: dict[tuple[str, Route], LoadResult] = {}
    try:
        settings = modes(sink)
        for _ in range(max(1, context.args.rounds)):
            for mode, overrides in settings.items():
                bench_stack.stack.restart_service(EVENTS.name, overrides)
                context.components = bench_stack.component_pids()
                scenario.check(context)
                for route in ROUTES:
                    result = measure(scenario.workload(route, context), route, context, scenario)
                    if (mode, route) not in best or result.rate > best[mode, route].rate:
                        best[mode, route] = result
    finally:
        bench_stack.stack.restart_service(EVENTS.name)
        context.components = bench_stack.component_pids()
        sink.close()
    for (mode, route), result in best.items():
        print(format_row(Row("telemetry", route, result, f"{mode} {route.value}")), flush=True)
    for route in ROUTES:
        base = best["off", route]
        rates, costs = [], []
        for mode in settings:
            result = best[mode, route]
            rates.append(f"{mode} {result.rate / base.rate:.2f}")
            base_svc, svc = base.cpu_per_request().get("svc"), result.cpu_per_request().get("svc")
            if base_svc and svc:
                costs.append(f"{mode} {svc / base_svc:.2f} ({svc - base_svc:+.0f} us)")
        print(f"{'':<9} {route.value} vs off, req/s: {' | '.join(rates)}")
        print(f"{'':<9} {route.value} vs off, events CPU/req: {' | '.join(costs)}")
    print(f"{'':<9} spans received by the OTLP sink: {sink.spans:,}", flush=True)
