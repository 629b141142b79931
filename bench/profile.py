"""`make profile`: where the events service's time goes, not only how much (`make bench` says that).

Starts the stack as `make bench` does, sends one scenario's load straight to the events service over
gRPC (so the service is the busy part), and samples the service meanwhile with py-spy. It writes a
speedscope file (open it at speedscope.app, or `py-spy`'s own viewers) and prints the functions that
held the CPU most: by self time (the frame on top of the stack) and by total time (anywhere in it).

    make profile
    make profile ARGS="--scenario list --duration 15 --top 30"
    make profile ARGS="--native"      # C frames too (grpc's core, asyncpg's protocol)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import phase0
from bench.__main__ import parse_args as bench_args
from bench.harness import running_stack
from bench.runner import HEADER, Context, Route, Row, format_row, measure

# System calls a thread waits in; with --native, py-spy reports them as the busy frame.
WAITS = {"epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect", "nanosleep", "clock_nanosleep"}
# The seconds py-spy is given to attach before the load starts, and past its end to write the file.
ATTACH_S = 1.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    scenarios = {s.name: s for s in phase0.scenarios()}
    parser.add_argument("--scenario", choices=sorted(scenarios), default="get", help="the load (default get)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load sampled (default 10)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    parser.add_argument("--top", type=int, default=25, help="rows of each table (default 25)")
    parser.add_argument("--native", action="store_true", help="also sample C frames (py-spy --native)")
    parser.add_argument(
        "--output", type=Path, default=Path("profile.speedscope.json"), help="(default ./profile.speedscope.json)"
    )
    return parser.parse_args(argv)


def frame_name(frame: dict[str, Any]) -> str:
    """`function (file:line)`, the file shortened to its package-relative tail."""
    path = str(frame.get("file") or "")
    for marker in ("site-packages/", "/services/", "/gen/", "/lib/python"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    line = frame.get("line")
    return f"{frame['name']} ({path}{f':{line}' if line else ''})"


def summarize(speedscope: dict[str, Any], top: int) -> str:
    """Top-N tables of self and total time of the event loop's thread, from a py-spy speedscope file.

    py-spy leaves out threads it sees idle, but counts some that wait in C: grpc's poller thread
    (`_poll_wrapper`) waits in epoll, and with --native every wait shows as its system call. So the
    tables are the main thread's (where all of our Python runs), without samples that were waiting."""
    names = [frame_name(frame) for frame in speedscope["shared"]["frames"]]
    waiting = {index for index, frame in enumerate(speedscope["shared"]["frames"]) if frame["name"] in WAITS}
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    threads = []
    for profile in speedscope["profiles"]:  # one per thread; weights in seconds
        busy = 0.0
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack or stack[-1] in waiting:
                continue
            busy += weight
            if "MainThread" in profile["name"]:
                own[names[stack[-1]]] += weight
                for name in {names[index] for index in stack}:  # a recursive frame counts once per sample
                    anywhere[name] += weight
        threads.append(f"{profile['name']} {busy:.1f} s")
    total = sum(own.values())
    if not total:
        return "py-spy took no samples of a busy main thread (is the service running the load?)"
    lines = [f"sampled busy: {'; '.join(threads)}"]
    for title, counter in (("self", own), ("total", anywhere)):
        lines.append(f"\n  {title:>5} %  function (where), of the main thread's busy samples")
        lines.extend(f"  {100 * weight / total:7.1f}  {name}" for name, weight in counter.most_common(top))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    scenario = next(s for s in phase0.scenarios() if s.name == args.scenario)
    # The load runs as `make bench` would run this scenario's direct-gRPC route.
    load_args = bench_args(["--duration", str(args.duration), "--warmup", "1", "--concurrency", str(args.concurrency)])
    print("starting the stack (embedded Postgres, migrations, services, Envoy) on free ports ...", flush=True)
    with running_stack() as (bench_stack, endpoints):
        pids = bench_stack.component_pids()
        context = Context(endpoints, load_args, pids)
        scenario.seed(context)
        scenario.check(context)
        workload = scenario.workload(Route.GRPC_DIRECT, context)
        record = [
            str(Path(sys.executable).with_name("py-spy")),  # the dev dependency, beside the venv's python
            "record",
            "--pid",
            str(pids["events"]),
            "--rate",
            str(args.rate),
            # The load's warm-up and its measured seconds.
            "--duration",
            str(round(args.duration + load_args.warmup + ATTACH_S)),
            "--format",
            "speedscope",
            "--output",
            str(args.output),
            *(["--native"] if args.native else []),
        ]
        spy = subprocess.Popen(record, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(ATTACH_S)
        if spy.poll() is not None:
            print(f"py-spy could not attach (it needs ptrace; run as root):\n{spy.communicate()[0]}")
            return 1
        result = measure(workload, Route.GRPC_DIRECT, context, scenario)
        output, _ = spy.communicate(timeout=args.duration + 60)
        if spy.returncode != 0:
            print(f"py-spy failed (exit {spy.returncode}):\n{output}")
            return 1
    print(f"\n{scenario.name}: {scenario.description}, gRPC straight to the events service, sampled by py-spy")
    print(HEADER)
    print(format_row(Row(scenario.name, Route.GRPC_DIRECT, result, Route.GRPC_DIRECT.title)))
    print("(CPU per request includes py-spy's pauses of the service: compare with make bench, not across)\n")
    print(summarize(json.loads(args.output.read_text()), args.top))
    print(f"\nspeedscope file: {args.output.resolve()} (open it at speedscope.app)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
