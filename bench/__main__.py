"""`make bench`: start the whole stack on free ports, seed it, and print throughput and latency for each
scenario along each route (JSON via the gateway, gRPC direct, gRPC via the gateway, bare SQL with the
same RLS context), with the ratios between routes measured in the same run.

    make bench
    make bench ARGS="--duration 10 --concurrency 64 --only get,register"
    make bench ARGS="--only list:json-gw,list:grpc --http-client aiohttp"
    make bench ARGS="--only rush"
    make bench ARGS="--only telemetry --rounds 3"
    make bench ARGS="--only notifications"
    make bench ARGS="--only s-text:grpc,s-near:grpc --city-events 1000000"
    make bench ARGS="--only seating"
    make bench ARGS="--only analytics"
    make bench ARGS="--only promotions"
    make bench ARGS="--only floor"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import sys
import time

import asyncpg

from bench import (
    analytics,
    dedup,
    floor,
    notifications,
    phase0,
    promotions,
    recurrence,
    rush,
    search,
    seating,
    telemetry,
)
from bench.harness import running_stack
from bench.load import cpu_count, h2load_available, wrk_available
from bench.runner import HEADER, Context, Report, Route, Scenario, run, unknown_selectors
from localplus_dev.processes import exit_on_sigterm

LEGEND = """\
  CPU us/req: CPU time per successful request of the load generator, Envoy, the scenario's service (events;
  ticketing for rush), Postgres, and the stack (Envoy + service + Postgres). cores: ours = all of that per
  second; other = the rest of the machine meanwhile (other jobs: a row with other above ~0.2 was disturbed).
  Ratios compare routes in this run: by req/s (higher is faster), and by stack CPU per request (higher is
  costlier; the load generators differ)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=5.0, help="measured seconds per route (default 5; whole seconds for wrk)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each (default 1)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument(
        "--only",
        help="comma-separated scenarios (get, list, register, reg-hot, rush, s-*, recurrence, telemetry, "
        "notifications, seating, analytics, promotions, floor, dedup), routes "
        f"({', '.join(r.value for r in Route)}) or scenario:route pairs",
    )
    parser.add_argument(
        "--http-client",
        choices=["wrk", "aiohttp"],
        default="wrk" if wrk_available() else "aiohttp",
        help="load generator for JSON (default wrk when installed)",
    )
    parser.add_argument(
        "--grpc-client",
        choices=["h2load", "grpc.aio"],
        default="h2load" if h2load_available() else "grpc.aio",
        help="load generator for gRPC reads (default h2load when installed; writes always use grpc.aio)",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--procs", type=int, default=2, help="worker processes for grpc.aio/aiohttp (default 2)")
    parser.add_argument("--sql-procs", type=int, default=1, help="worker processes for the SQL route (default 1)")
    parser.add_argument(
        "--fast-commit",
        action="store_true",
        help="Postgres with fsync and synchronous_commit off, as the test suite runs it (default: durable)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every route N times, interleaved, and keep the best (default 1)"
    )
    parser.add_argument(
        "--city-events", type=int, default=100_000, help="events in the search scenarios' city (default 100,000)"
    )
    parser.add_argument("--hot", action="store_true", help="also register everyone for ONE event (a hot row)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.concurrency < 1:
        parser.error("--duration must be > 0, --warmup >= 0 and --concurrency >= 1")
    if args.only and "reg-hot" in args.only:
        args.hot = True
    return args


def describe_machine(database_url: str) -> str:
    async def version() -> str:
        conn = await asyncpg.connect(database_url)
        try:
            return str(await conn.fetchval("show server_version")).split()[0]
        finally:
            await conn.close()

    model = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu_count()} CPUs ({model}), Python {platform.python_version()}, Postgres {asyncio.run(version())}, "
        f"load {os.getloadavg()[0]:.2f}"
    )


def all_scenarios(args: argparse.Namespace) -> list[Scenario]:
    """Every scenario module's scenarios, in order."""
    return [*phase0.scenarios(hot=args.hot), *search.scenarios(), *rush.scenarios()]


def main(argv: list[str]) -> int:
    exit_on_sigterm()
    args = parse_args(argv)
    chosen = all_scenarios(args)
    only = [part.strip() for part in (args.only or "").split(",") if part.strip()]
    # These are sections of their own, after the scenarios' table: all of them unless --only names some.
    sections = {"recurrence", "telemetry", "notifications", "seating", "analytics", "promotions", "floor", "dedup"}
    wanted = {section for section in sections if not only or section in only}
    if sections & set(only):
        args.only = ",".join(part for part in only if part not in sections) or None
        chosen = chosen if args.only else []
    unknown = unknown_selectors(args.only, chosen)
    if unknown:
        print(f"--only: unknown {', '.join(unknown)}", file=sys.stderr)
        return 2
    began = time.monotonic()
    command = shlex.join(["python", "-m", "bench", *argv])
    print("starting the stack (embedded Postgres, migrations, services, Envoy) on free ports ...", flush=True)
    with running_stack(durable=not args.fast_commit) as (bench_stack, endpoints):
        context = Context(endpoints, args, bench_stack.component_pids())
        commits = "fast commits (fsync off)" if args.fast_commit else "durable commits"
        print(f"machine: {describe_machine(endpoints.database_url)}; {commits}")
        grpc_reads = "h2load (one request body, repeated)" if args.grpc_client == "h2load" else "grpc.aio"
        print(
            f"each route: {args.warmup:g} s warm-up, then {args.duration:g} s measured, {args.concurrency} requests "
            f"in flight.\nLoad: JSON by {args.http_client}; gRPC reads by {grpc_reads}, writes by grpc.aio in "
            f"{args.procs} processes; SQL by asyncpg in {args.sql_procs} process(es) with "
            f"{phase0.SERVICE_POOL_SIZE} connections in all (as many as the service's pool)."
        )
        if args.http_client == "aiohttp" and not wrk_available():
            print("  (wrk is not installed, so JSON load comes from aiohttp, at ~8x its CPU per request)")
        for scenario in chosen:
            print(f"  {scenario.name:<9} {scenario.description}")
        print(LEGEND)
        print()
        print(HEADER, flush=True)
        report = Report()
        run(chosen, context, report)
        if "telemetry" in wanted:
            print()
            print(telemetry.__doc__)
            print(HEADER, flush=True)
            telemetry.run(bench_stack, context)
        if "floor" in wanted:
            print()
            print(floor.__doc__)
            print(HEADER, flush=True)
            floor.run(context)
        if "recurrence" in wanted:
            print()
            asyncio.run(recurrence.run(endpoints))
        if "notifications" in wanted:
            print()
            asyncio.run(notifications.run(bench_stack.stack))
        if "seating" in wanted:
            print()
            asyncio.run(seating.run(endpoints))
        if "analytics" in wanted:
            print()
            asyncio.run(analytics.run(endpoints))
        if "promotions" in wanted:
            print()
            asyncio.run(promotions.run(endpoints))
    if "dedup" in wanted:
        print()
        print(dedup.report())
    print()
    took = time.monotonic() - began
    make = f"make bench ARGS={shlex.quote(shlex.join(argv))}" if argv else "make bench"
    print(f"command: {make}   ({command}); took {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
