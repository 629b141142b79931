"""`make bench-workers`: one events service with LOCALPLUS_WORKERS=1 against the same service with 2
(and more with --workers), alternating, on the bench stack's seeded database. The load is h2load (C, so
it leaves the cores to the stack when it can) sending GetEvent for a published event over several
HTTP/2 connections, which SO_REUSEPORT spreads over the workers.

    make bench-workers
    make bench-workers ARGS="--duration 10 --rounds 3 --concurrency 64 --connections 8"

On a small machine the service shares the cores with Postgres and the load generator: the figures show
how much a second worker buys there, and the `other` column how busy the rest of the machine was."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import bench_user_id, create_users, run_with_pool, running_stack, seed_events
from bench.load import GrpcWorkload, LoadResult, cpu_count, h2load_available, run_h2load
from localplus.events.v1 import events_pb2
from localplus_common.services import EVENTS, RECURRENCE
from localplus_dev.postgres import free_port

METHOD = "/localplus.events.v1.EventsService/GetEvent"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each worker count, interleaved (default 3)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--connections", type=int, default=8, help="HTTP/2 connections (default 8)")
    return parser.parse_args(argv)


def wait_serving(address: str, connections: int, timeout: float = 60.0) -> None:
    """Until every one of `connections` fresh connections (each to some worker) is answered SERVING."""
    deadline = time.monotonic() + timeout
    for _ in range(connections):
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the events service on {address} did not serve")
                time.sleep(0.1)


def measure(
    args: argparse.Namespace, env: dict[str, str], workers: int, request: bytes, postgres_pid: int
) -> LoadResult:
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", EVENTS.module],
        env={**env, EVENTS.addr_var: address, EVENTS.metrics_var: "off", "LOCALPLUS_WORKERS": str(workers)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_serving(address, args.connections)
        workload = GrpcWorkload(address, METHOD, [(request, "")], channels=max(1, args.connections // 2))
        return run_h2load(
            workload,
            threads=1,
            concurrency=args.concurrency,
            warmup=args.warmup,
            duration=args.duration,
            components={"events": process.pid, "postgres": postgres_pid},
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def row(workers: int, result: LoadResult) -> str:
    cores = {name: seconds / result.elapsed for name, seconds in result.server_cpu.items()}
    load = result.client_cpu / result.elapsed
    return (
        f"{workers:>7} {result.rate:>9.0f} {result.p50 * 1e3:>8.1f} {result.p99 * 1e3:>8.1f} "
        f"{cores['events']:>7.2f} {cores['postgres']:>8.2f} {load:>6.2f} {result.other_cores:>6.2f} {result.errors:>6}"
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not h2load_available():
        raise SystemExit("h2load is needed (make bench-tools)")
    counts = [int(n) for n in args.workers.split(",")]
    with running_stack(durable=False) as (bench_stack, endpoints):

        async def seed(pool: asyncpg.Pool) -> uuid.UUID:
            await create_users(pool, 0, 1)
            ids = await seed_events(pool, 1000, bench_user_id(0))
            return ids[len(ids) // 2]

        event_id = run_with_pool(endpoints.database_url, seed)
        request = events_pb2.GetEventRequest(id=str(event_id)).SerializeToString()
        stack = bench_stack.stack
        env = {
            **os.environ,
            "DATABASE_URL": endpoints.database_url,
            "SUPABASE_JWT_SECRET": endpoints.jwt_secret,
            RECURRENCE.addr_var: stack.address(RECURRENCE.name),
            "PYTHONUNBUFFERED": "1",
        }
        postgres_pid = bench_stack.component_pids()["postgres"]
        print(
            f"GetEvent, anonymous, direct gRPC: h2load {args.connections} connections, {args.concurrency} in flight, "
            f"{args.duration:g} s after {args.warmup:g} s warm-up; {cpu_count()} CPUs here"
        )
        print(
            f"{'workers':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'events':>7} {'postgres':>8} {'load':>6} "
            f"{'other':>6} {'errors':>6}   (cores)"
        )
        best: dict[int, float] = {}
        for _ in range(args.rounds):
            for workers in counts:
                result = measure(args, env, workers, request, postgres_pid)
                best[workers] = max(best.get(workers, 0.0), result.rate)
                print(row(workers, result), flush=True)
        base = best[counts[0]]
        print("best of each: " + ", ".join(f"{w} workers {rate:.0f} req/s" for w, rate in best.items()))
        for workers in counts[1:]:
            if base:
                print(f"ratio {workers} workers / {counts[0]}: {best[workers] / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
