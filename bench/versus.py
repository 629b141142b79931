"""Before/after CPU per request on a busy machine: this checkout's events service against another
checkout's (e.g. main), side by side on one stack and one database, in alternating short bursts.

`make bench` measures one code version per run, and on a shared 2-core machine the other jobs change
from one run to the next; here both versions see the same background. The other checkout needs its
generated stubs (`make setup` there, or a copy of gen/); it runs on this checkout's virtualenv.

    git worktree add --detach /tmp/base main && cp -r gen /tmp/base/
    make versus ARGS="--base /tmp/base"
    make versus ARGS="--base /tmp/base --scenarios get --rounds 10"
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench import phase0
from bench.__main__ import parse_args as bench_args
from bench.harness import running_stack
from bench.load import GrpcWorkload, LoadResult, run_h2load, run_python_load
from bench.runner import Context, Route
from localplus_common.services import EVENTS
from localplus_dev.postgres import free_port
from localplus_dev.processes import exit_on_sigterm

# PYTHONPATH entries of a checkout, as the Makefile sets them.
SOURCE_DIRS = [
    "gen",
    "services/common",
    "services/events",
    "services/ticketing",
    "services/recurrence",
    "devtools",
    ".",
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (the 'before')")
    parser.add_argument("--scenarios", default="get,list,register", help="of get, list, register (default all)")
    parser.add_argument("--rounds", type=int, default=6, help="bursts per version and scenario (default 6)")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per burst (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    return parser.parse_args(argv)


def measure(workload: GrpcWorkload, pids: dict[str, int], args: argparse.Namespace) -> LoadResult:
    common = {"concurrency": args.concurrency, "warmup": 0.5, "duration": args.duration, "components": pids}
    if workload.unique:
        return run_python_load(workload, processes=2, **common)
    return run_h2load(workload, threads=1, **common)


def main(argv: list[str]) -> int:
    exit_on_sigterm()
    args = parse_args(argv)
    chosen = [s for s in phase0.scenarios() if s.name in args.scenarios.split(",")]
    print("starting the stack, and the base checkout's events service on the same database ...", flush=True)
    with running_stack() as (bench_stack, endpoints):
        pids = bench_stack.component_pids()
        # The very environment the stack's own services get.
        env = bench_stack.stack._service_env()
        base_addr = f"127.0.0.1:{free_port()}"
        env.update(PYTHONPATH=":".join(str(args.base.resolve() / d) for d in SOURCE_DIRS))
        # Its own address, and no metrics port: the stack's events service holds that one.
        env.update({EVENTS.addr_var: base_addr, EVENTS.metrics_var: "off"})
        base = subprocess.Popen([sys.executable, "-m", "localplus_events"], env=env, cwd=args.base)
        try:
            time.sleep(3)
            if base.poll() is not None:
                print(f"the base checkout's events service exited ({base.returncode})")
                return 1
            versions = {"before": (base_addr, base.pid), "after": (endpoints.events_addr, pids["events"])}
            context = Context(endpoints, bench_args(["--duration", str(args.duration)]), pids)
            summary = []
            for scenario in chosen:
                scenario.seed(context)
                seen: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
                for round_number in range(1, args.rounds + 1):
                    for label, (address, pid) in versions.items():
                        workload = scenario.workload(Route.GRPC_DIRECT, context)
                        assert isinstance(workload, GrpcWorkload)
                        workload = replace(workload, target=address)
                        result = measure(workload, {"svc": pid, "pg": pids["postgres"]}, args)
                        cpu = result.cpu_per_request()
                        seen[label].append((cpu["svc"], cpu["pg"]))
                        print(
                            f"{scenario.name:<9} {label:<6} round {round_number}: service {cpu['svc']:6,.0f} us/req, "
                            f"Postgres {cpu['pg']:5,.0f} us/req, {result.rate:6,.0f} req/s, {result.errors} errors, "
                            f"other jobs {result.other_cores:.2f} cores",
                            flush=True,
                        )
                before, after = (
                    [statistics.median(cpu[i] for cpu in seen[label]) for i in (0, 1)] for label in ("before", "after")
                )
                summary.append(
                    f"{scenario.name:<9} median CPU per request: service {before[0]:,.0f} -> {after[0]:,.0f} us "
                    f"(x{after[0] / before[0]:.2f}), Postgres {before[1]:,.0f} -> {after[1]:,.0f} us "
                    f"(x{after[1] / before[1]:.2f})"
                )
        finally:
            base.terminate()
            base.wait()
    print("\n" + "\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
