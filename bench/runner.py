"""Scenarios, the routes a request can take, running them, and the printed table.

A scenario module (bench.phase0 now, a Phase 1 search module later) subclasses `Scenario`: it seeds
what it needs once and returns, per route, a `Workload`. The runner measures each route with the
configured load generator and prints one table with the ratios between routes of the same scenario.
"""

from __future__ import annotations

import argparse
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from bench.harness import Endpoints
from bench.load import GrpcWorkload, HttpWorkload, LoadResult, Workload, run_h2load, run_python_load, run_wrk


class Route(Enum):
    """How a request reaches the data. Values are the names used by --only."""

    JSON_GATEWAY = "json-gw"
    GRPC_DIRECT = "grpc"
    GRPC_GATEWAY = "grpc-gw"
    SQL = "sql"

    @property
    def title(self) -> str:
        return {
            Route.JSON_GATEWAY: "JSON via gateway",
            Route.GRPC_DIRECT: "gRPC direct",
            Route.GRPC_GATEWAY: "gRPC via gateway",
            Route.SQL: "SQL + RLS context",
        }[self]


# Ratios printed under each scenario: (numerator, denominator, label).
RATIOS = [
    (Route.JSON_GATEWAY, Route.GRPC_DIRECT, "gateway/gRPC"),
    (Route.GRPC_DIRECT, Route.SQL, "gRPC/SQL"),
    (Route.JSON_GATEWAY, Route.SQL, "gateway/SQL"),
    (Route.GRPC_GATEWAY, Route.GRPC_DIRECT, "gRPC gw/direct"),
]


@dataclass
class Context:
    endpoints: Endpoints
    args: argparse.Namespace
    components: dict[str, int]  # component (envoy, postgres, each service by name) -> root pid, for CPU accounting


class Scenario(ABC):
    name: str
    description: str
    routes: tuple[Route, ...] = tuple(Route)
    # The service whose CPU the table shows (localplus_common.services name).
    service: str = "events"
    # Requests in flight for this scenario; None: --concurrency. A latency scenario (e.g. search p50/p95
    # at low load) sets its own.
    concurrency: int | None = None
    # Seconds of warm-up and of measuring; None: --warmup and --duration. With thousands in flight, the
    # first answers take seconds, so the warm-up must outlast one round of them.
    warmup: float | None = None
    duration: float | None = None
    # Another name --only selects this scenario by, shared by the scenarios compared with each other.
    group: str = ""

    @abstractmethod
    def seed(self, context: Context) -> None:
        """Create the data this scenario reads or writes (runs once, before any route)."""

    @abstractmethod
    def workload(self, route: Route, context: Context) -> Workload:
        """The requests to send along `route`."""

    def route_title(self, route: Route) -> str:
        """How the table names `route` for this scenario (e.g. a bare-SQL ceiling instead of the use case)."""
        return route.title

    def check(self, context: Context) -> None:  # noqa: B027 - optional hook
        """Fail early if a route answers wrongly (a fast error must not pass for a fast success)."""

    def verify(self, route: Route, context: Context) -> str:
        """After each measured route: what the scenario checks of the data it wrote, as a note for the row
        (raising when it is wrong)."""
        return ""

    def compare(self, report: Report) -> list[str]:
        """Lines of ratios against other scenarios of the run, printed under this scenario's."""
        return []


@dataclass
class Row:
    scenario: str
    route: Route
    result: LoadResult
    title: str  # the route as this scenario takes it


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def result(self, scenario: str, route: Route) -> LoadResult | None:
        for row in self.rows:
            if row.scenario == scenario and row.route == route and row.result.completed:
                return row.result
        return None


def selected(only: str | None, scenario: Scenario, route: Route) -> bool:
    """--only takes comma-separated scenario names (or groups), route names or scenario:route pairs."""
    if not only:
        return True
    names = {scenario.name, scenario.group} - {""}
    for token in (part.strip() for part in only.split(",")):
        name, _, wanted_route = token.partition(":")
        if wanted_route:
            if name in names and wanted_route == route.value:
                return True
        elif name in names or name == route.value:
            return True
    return False


def unknown_selectors(only: str | None, scenarios: list[Scenario]) -> list[str]:
    """The --only entries that name no scenario, route or scenario:route pair."""
    names = {scenario.name for scenario in scenarios} | {scenario.group for scenario in scenarios} - {""}
    routes = {route.value for route in Route}
    unknown = []
    for token in filter(None, (part.strip() for part in (only or "").split(","))):
        name, _, route = token.partition(":")
        if (route and (name not in names or route not in routes)) or (not route and name not in names | routes):
            unknown.append(token)
    return unknown


def measure(workload: Workload, route: Route, context: Context, scenario: Scenario) -> LoadResult:
    args = context.args
    components = context.components
    common: dict[str, Any] = {
        "concurrency": scenario.concurrency or args.concurrency,
        "warmup": args.warmup if scenario.warmup is None else scenario.warmup,
        "duration": args.duration if scenario.duration is None else scenario.duration,
        "components": {"envoy": components["envoy"], "svc": components[scenario.service], "pg": components["postgres"]},
    }
    if isinstance(workload, HttpWorkload) and args.http_client == "wrk":
        return run_wrk(workload, threads=args.wrk_threads, **common)
    if isinstance(workload, GrpcWorkload) and args.grpc_client == "h2load" and not workload.unique:
        return run_h2load(workload, threads=1, **common)
    processes = args.sql_procs if route is Route.SQL else args.procs
    return run_python_load(workload, processes=processes, **common)


def run(scenarios: list[Scenario], context: Context, report: Report) -> None:
    """Each scenario's routes one after another; with --rounds N, N interleaved passes, best kept."""
    only = context.args.only
    rounds = max(1, context.args.rounds)
    for scenario in scenarios:
        routes = [route for route in scenario.routes if selected(only, scenario, route)]
        if not routes:
            continue
        scenario.seed(context)
        scenario.check(context)
        best: dict[Route, LoadResult] = {}
        verified: dict[Route, str] = {}
        for round_number in range(1, rounds + 1):
            for route in routes:
                result = measure(scenario.workload(route, context), route, context, scenario)
                checked = scenario.verify(route, context)
                if rounds > 1:
                    row = Row(scenario.name, route, result, scenario.route_title(route))
                    print(format_row(row, note=" ".join(filter(None, [f"(round {round_number})", checked]))))
                if route not in best or result.rate > best[route].rate:
                    best[route], verified[route] = result, checked
        for route in routes:
            row = Row(scenario.name, route, best[route], scenario.route_title(route))
            report.rows.append(row)
            notes = [f"(best of {rounds})" if rounds > 1 else "", verified[route]]
            print(format_row(row, note=" ".join(filter(None, notes))), flush=True)
        print(format_ratios(report, scenario.name), flush=True)
        for line in scenario.compare(report):
            print(f"{'':<9} {line}", flush=True)


# Printing

COMPONENTS = ("load", "envoy", "svc", "pg")
HEADER = (
    f"{'scenario':<9} {'route':<17} {'load generator':<13} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    f" {'errors':>6}"
    f" | CPU us/req: {'load':>5} {'envoy':>5} {'svc':>5} {'pg':>5} {'stack':>5} | cores: {'ours':>4} {'other':>5}"
)


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def format_row(row: Row, note: str = "") -> str:
    result = row.result
    cpu = result.cpu_per_request()
    per = [_number(cpu.get(name), 0) for name in COMPONENTS]
    notes = [note] if note else []
    if result.exhausted:
        notes.append("(ran out of distinct requests)")
    line = (
        f"{row.scenario:<9} {row.title:<17} {result.generator:<13} {_number(result.rate, 0):>7} "
        f"{_number(result.p50 * 1e3, 2):>7} {_number(result.p95 * 1e3, 2):>7} {_number(result.p99 * 1e3, 2):>7}"
        f" {result.errors:>6}"
        f" | {'':<11} {per[0]:>5} {per[1]:>5} {per[2]:>5} {per[3]:>5} {_number(result.stack_cpu_per_request, 0):>5}"
        f" | {'':<6} {result.cores:>4.2f} "
        f"{result.other_cores:>5.2f}"
    )
    line = " ".join([line, *notes])
    for sample in result.error_samples:
        line += f"\n{'':<10}error: {sample}"
    return line


def format_ratios(report: Report, scenario: str) -> str:
    """Two lines: throughput ratios, and the same pairs by stack CPU per request (cost, without the load
    generator, which differs between routes: wrk is far cheaper per request than grpc.aio)."""
    rates, costs = [], []
    for numerator, denominator, label in RATIOS:
        top, bottom = report.result(scenario, numerator), report.result(scenario, denominator)
        if top is None or bottom is None:
            continue
        rates.append(f"{label} {top.rate / bottom.rate:.2f}")
        if bottom.stack_cpu_per_request:
            costs.append(f"{label} {top.stack_cpu_per_request / bottom.stack_cpu_per_request:.2f}")
    return (
        f"{'':<9} ratios of req/s: {' | '.join(rates) if rates else '-'}\n"
        f"{'':<9} ratios of stack CPU/req: {' | '.join(costs) if costs else '-'}"
    )
