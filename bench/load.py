"""Load generators, each running outside the benchmark's own process, bounded by time and count.

* `run_python_load`: a `Workload` (gRPC, HTTP via aiohttp, or SQL via asyncpg) driven by N spawned
  worker processes, each keeping `concurrency / N` requests in flight on asyncio.
* `run_wrk`: Debian's `wrk` (C, HTTP/1.1 keep-alive) with a generated Lua script for paths, headers
  and bodies.

Both warm up first, then count only the requests that complete inside the measured window, and
report throughput, latency percentiles, the load generator's own CPU and each stack component's CPU
over that window (so a reader can see who ate the two cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.harness import chunks, cpu_seconds, machine_busy_seconds, percentile

Call = Callable[[Any], Awaitable[None]]
READY_TIMEOUT = 120.0
MAX_ERROR_SAMPLES = 3


class RequestFailed(Exception):
    """A response that is not the expected success."""


@dataclass
class LoadResult:
    generator: str  # e.g. "wrk -t1", "grpc.aio x2"
    completed: int  # successful requests inside the window
    errors: int
    elapsed: float  # seconds of the measured window
    latencies: list[float]  # seconds, ascending, successful requests only
    client_cpu: float  # CPU seconds of the load generator inside the window
    server_cpu: dict[str, float] = field(default_factory=dict)  # component -> CPU seconds
    error_samples: list[str] = field(default_factory=list)
    machine_cpu: float = 0.0  # CPU seconds the whole machine was busy inside the window
    exhausted: bool = False  # a bounded workload ran out of distinct requests early
    p50_override: float | None = None  # wrk reports percentiles itself
    p95_override: float | None = None
    p99_override: float | None = None

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def p50(self) -> float:
        return self.p50_override if self.p50_override is not None else percentile(self.latencies, 0.50)

    @property
    def p95(self) -> float:
        return self.p95_override if self.p95_override is not None else percentile(self.latencies, 0.95)

    @property
    def p99(self) -> float:
        return self.p99_override if self.p99_override is not None else percentile(self.latencies, 0.99)

    @property
    def cores(self) -> float:
        """Cores busy with this measurement: the load generator plus every stack component."""
        return (self.client_cpu + sum(self.server_cpu.values())) / self.elapsed if self.elapsed else 0.0

    @property
    def other_cores(self) -> float:
        """Cores busy with anything else on the machine meanwhile (other jobs: a noisy run)."""
        return max(0.0, self.machine_cpu / self.elapsed - self.cores) if self.elapsed else 0.0

    @property
    def stack_cpu_per_request(self) -> float:
        """Microseconds of CPU per successful request of the stack alone (all components but the load)."""
        return sum(self.server_cpu.values()) / self.completed * 1e6 if self.completed else 0.0

    def cpu_per_request(self) -> dict[str, float]:
        """Microseconds of CPU per successful request: the load generator, then each component."""
        if not self.completed:
            return {}
        per = {"load": self.client_cpu, **self.server_cpu}
        return {name: seconds / self.completed * 1e6 for name, seconds in per.items()}


# Python workloads


class Workload(ABC):
    """What one kind of client sends. Picklable: built in the benchmark, opened in each worker.

    `items` are the distinct requests. A cycling workload reuses them (reads); a unique one uses each
    once (writes such as registrations) and its workers stop when their share runs out.
    """

    items: Sequence[Any]
    unique: bool

    @abstractmethod
    def with_items(self, items: Sequence[Any]) -> Workload:
        """The same workload over other items (a worker's share)."""

    @abstractmethod
    async def open(self, concurrency: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
        """Connect; return the per-request call and the closer."""

    def describe(self) -> str:
        return type(self).__name__


@dataclass
class GrpcWorkload(Workload):
    """Unary calls of one method with pre-serialized requests; items are (request bytes, bearer token or "")."""

    target: str
    method: str  # /package.Service/Method
    items: Sequence[tuple[bytes, str]]
    unique: bool = False
    channels: int = 2

    def with_items(self, items: Sequence[Any]) -> Workload:
        return replace(self, items=items)

    def describe(self) -> str:
        return "grpc.aio"

    async def open(self, concurrency: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
        import grpc

        # A local subchannel pool gives each channel its own HTTP/2 connection (and so its own Envoy
        # worker thread); by default channels with equal arguments share one.
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.aio.insecure_channel(self.target, options=options) for _ in range(self.channels)]
        # Bytes in, bytes out: the load generator neither builds nor parses messages while measuring.
        stubs = [channel.unary_unary(self.method) for channel in channels]
        for channel in channels:
            await channel.channel_ready()
        turn = itertools.cycle(stubs)

        async def call(item: tuple[bytes, str]) -> None:
            request, token = item
            metadata = (("authorization", f"Bearer {token}"),) if token else None
            try:
                await next(turn)(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as error:
                raise RequestFailed(f"{error.code().name}: {error.details()}") from None

        async def close() -> None:
            for channel in channels:
                await channel.close()

        return call, close


@dataclass
class HttpWorkload(Workload):
    """HTTP/1.1 keep-alive requests; items are (path, bearer token or ""). Also rendered for wrk."""

    base_url: str
    method: str
    items: Sequence[tuple[str, str]]
    body: str | None = None  # JSON text
    unique: bool = False

    def with_items(self, items: Sequence[Any]) -> Workload:
        return replace(self, items=items)

    def describe(self) -> str:
        return "aiohttp"

    async def open(self, concurrency: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        session = aiohttp.ClientSession(self.base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=30))
        data = self.body.encode() if self.body is not None else None
        base_headers = {"content-type": "application/json"} if data is not None else {}

        async def call(item: tuple[str, str]) -> None:
            path, token = item
            headers = {**base_headers, "authorization": f"Bearer {token}"} if token else base_headers
            async with session.request(self.method, path, data=data, headers=headers) as response:
                payload = await response.read()
                if response.status != 200:
                    raise RequestFailed(f"HTTP {response.status}: {payload[:200].decode(errors='replace')}")

        return call, session.close


@dataclass
class SqlWorkload(Workload):
    """The services' use cases called directly, without gRPC, on a pool made as the services make
    theirs: each request is the use case's own `Database.run` transaction (begin, set_config role and
    claims, its queries, commit). Subclasses say which use case one request calls, and as whom."""

    database_url: str
    items: Sequence[Any]
    unique: bool = False
    pool_size: int = 10  # per worker process

    def with_items(self, items: Sequence[Any]) -> Workload:
        return replace(self, items=items)

    def describe(self) -> str:
        return "asyncpg"

    async def open(self, concurrency: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
        from localplus_common.config import Settings
        from localplus_common.db import Database, create_pool

        settings = replace(Settings.from_env(), database_url=self.database_url, db_pool_max=self.pool_size)
        pool = await create_pool(settings)
        db = Database(pool)

        async def call(item: Any) -> None:
            await self.query(db, item)

        return call, pool.close

    @abstractmethod
    async def query(self, db: Any, item: Any) -> None:
        """One request: set the caller (`localplus_common.db.current_identity`), then call the use case
        with `db` (a localplus_common.db.Database)."""


# The worker process


@dataclass
class _Share:
    workload: Workload
    concurrency: int


def _worker_main(share: _Share, conn: Connection) -> None:
    try:
        asyncio.run(_worker(share, conn))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


async def _worker(share: _Share, conn: Connection) -> None:
    workload = share.workload
    call, close = await workload.open(share.concurrency)
    conn.send(("ready", None))
    measure_from, measure_until = conn.recv()  # time.monotonic() values, comparable across processes
    items = workload.items
    count = len(items)
    counter = itertools.count()
    latencies = array("d")
    errors = 0
    samples: list[str] = []
    exhausted = False
    cpu: list[float] = []

    async def clock() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        cpu.append(time.process_time())
        await asyncio.sleep(max(0.0, measure_until - time.monotonic()))
        cpu.append(time.process_time())

    async def loop() -> None:
        nonlocal errors, exhausted
        monotonic = time.monotonic
        while True:
            index = next(counter)
            if workload.unique and index >= count:
                exhausted = True
                return
            started = monotonic()
            if started >= measure_until:
                return
            try:
                await call(items[index % count])
                failure = None
            except Exception as error:
                failure = f"{type(error).__name__}: {error}"
            finished = monotonic()
            if measure_from <= finished < measure_until:
                if failure is None:
                    latencies.append(finished - started)
                else:
                    errors += 1
                    if len(samples) < MAX_ERROR_SAMPLES:
                        samples.append(failure[:300])

    clock_task = asyncio.create_task(clock())
    loops = [asyncio.create_task(loop()) for _ in range(share.concurrency)]
    await clock_task
    # What is still in flight when the window closes cannot count: cancelled, not waited for (with
    # thousands in flight, draining them took longer than the run).
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    await close()
    client_cpu = cpu[1] - cpu[0] if len(cpu) == 2 else 0.0
    conn.send(("done", (latencies.tobytes(), errors, samples, exhausted, client_cpu)))


def run_python_load(
    workload: Workload,
    *,
    processes: int,
    concurrency: int,
    warmup: float,
    duration: float,
    components: dict[str, int],
) -> LoadResult:
    """Drive `workload` from `processes` spawned workers with `concurrency` requests in flight in all."""
    processes = max(1, min(processes, concurrency))
    context = multiprocessing.get_context("spawn")
    if workload.unique:
        parts = [workload.with_items(items) for items in chunks(workload.items, processes)]
    else:
        # Every worker cycles through all items, starting at a different place.
        step = max(1, len(workload.items) // processes)
        parts = [
            workload.with_items([*workload.items[i * step :], *workload.items[: i * step]]) for i in range(processes)
        ]
    per_worker = list(chunks(range(concurrency), processes))
    workers = []
    try:
        for part, slots in zip(parts, per_worker, strict=True):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_worker_main, args=(_Share(part, len(slots)), child_end), daemon=True)
            process.start()
            child_end.close()
            workers.append((process, parent_end))
        for _, pipe in workers:
            _expect(pipe, "ready", READY_TIMEOUT)
        measure_from = time.monotonic() + warmup
        measure_until = measure_from + duration
        for _, pipe in workers:
            pipe.send((measure_from, measure_until))
        time.sleep(max(0.0, measure_from - time.monotonic()))
        before, machine_before = cpu_seconds(components), machine_busy_seconds()
        time.sleep(max(0.0, measure_until - time.monotonic()))
        after, machine_after = cpu_seconds(components), machine_busy_seconds()
        latencies: list[float] = []
        result = LoadResult(
            generator=f"{workload.describe()} x{processes}",
            completed=0,
            errors=0,
            elapsed=duration,
            latencies=latencies,
            client_cpu=0.0,
            server_cpu={name: after[name] - before[name] for name in components},
            machine_cpu=machine_after - machine_before,
        )
        for _, pipe in workers:
            raw, errors, samples, exhausted, client_cpu = _expect(pipe, "done", duration + 60)
            values = array("d")
            values.frombytes(raw)
            latencies.extend(values)
            result.errors += errors
            result.error_samples.extend(samples)
            result.exhausted |= exhausted
            result.client_cpu += client_cpu
        latencies.sort()
        result.completed = len(latencies)
        return result
    finally:
        for process, pipe in workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()
            pipe.close()


def _expect(pipe: Connection, kind: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"a load worker sent no {kind!r} within {timeout:.0f}s")
    try:
        got, payload = pipe.recv()
    except EOFError:
        raise RuntimeError(f"a load worker exited before sending {kind!r}") from None
    if got == "error":
        raise RuntimeError(f"a load worker failed:\n{payload}")
    if got != kind:
        raise RuntimeError(f"a load worker sent {got!r}, expected {kind!r}")
    return payload


# wrk

WRK_SCRIPT = r"""
-- Generated by bench.load: requests from data files, one per line; unique mode uses each once.
local method, body, unique = __METHOD__, __BODY__, __UNIQUE__
local paths, tokens, requests, base_headers = {}, {}, {}, {}
local next_index, step, count = 0, 1, 0
-- setup() runs in the main Lua state and gives each thread its number as the global `tid`.
thread_counter = 0

function setup(thread)
  thread:set("tid", thread_counter)
  thread_counter = thread_counter + 1
end

function init(args)
  local start = tonumber(args[1])
  local nthreads = tonumber(args[2])
  for line in io.lines(args[3]) do paths[#paths + 1] = line end
  if args[4] ~= "-" then for line in io.lines(args[4]) do tokens[#tokens + 1] = line end end
  count = #paths
  next_index = start + tid
  step = nthreads
  if body ~= nil then base_headers["Content-Type"] = "application/json" end
  if not unique then
    -- Pre-render every distinct request; request() is then a table lookup.
    for i = 1, count do
      local h = {}
      for k, v in pairs(base_headers) do h[k] = v end
      if #tokens > 0 then h["Authorization"] = "Bearer " .. tokens[i] end
      requests[i] = wrk.format(method, paths[i], h, body)
    end
  end
end

function request()
  local i = next_index
  next_index = next_index + step
  if not unique then
    return requests[(i % count) + 1]
  end
  if i >= count then
    -- Out of distinct requests: repeat the last one (answered with an error, so it is counted).
    i = count - 1
  end
  local h = {}
  for k, v in pairs(base_headers) do h[k] = v end
  if #tokens > 0 then h["Authorization"] = "Bearer " .. tokens[i + 1] end
  return wrk.format(method, paths[i + 1], h, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(value: str | None) -> str:
    return "nil" if value is None else json.dumps(value)  # a JSON string literal is a valid Lua one here


def run_wrk(
    workload: HttpWorkload,
    *,
    threads: int,
    concurrency: int,
    warmup: float,
    duration: float,
    components: dict[str, int],
) -> LoadResult:
    """Warm up, then measure, with wrk; unique workloads continue past the warm-up's requests."""
    threads = max(1, min(threads, concurrency))
    script = (
        WRK_SCRIPT.replace("__METHOD__", json.dumps(workload.method))
        .replace("__BODY__", _lua_string(workload.body))
        .replace("__UNIQUE__", "true" if workload.unique else "false")
    )
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as scratch:
        folder = Path(scratch)
        (folder / "script.lua").write_text(script)
        (folder / "paths.txt").write_text("".join(f"{path}\n" for path, _ in workload.items))
        has_tokens = any(token for _, token in workload.items)
        if has_tokens:
            (folder / "tokens.txt").write_text("".join(f"{token}\n" for _, token in workload.items))

        def wrk(seconds: float, start: int) -> dict[str, Any]:
            argv = [
                "wrk",
                f"-t{threads}",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(folder / "script.lua"),
                workload.base_url,
                "--",
                str(start),
                str(threads),
                str(folder / "paths.txt"),
                str(folder / "tokens.txt") if has_tokens else "-",
            ]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
            for line in done.stdout.splitlines():
                if line.startswith("WRK_RESULT "):
                    parsed: dict[str, Any] = json.loads(line.removeprefix("WRK_RESULT "))
                    return parsed
            raise RuntimeError(f"wrk printed no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")

        next_start = 0
        if warmup > 0:
            warm = wrk(warmup, 0)
            # Every request sent during warm-up is used up, answered or not.
            next_start = warm["requests"] + warm["timeout"] + 2 * concurrency
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        before, machine_before = cpu_seconds(components), machine_busy_seconds()
        measured = wrk(duration, next_start)
        after, machine_after = cpu_seconds(components), machine_busy_seconds()
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    failed = measured["status"] + measured["timeout"] + measured["read"] + measured["write"] + measured["connect"]
    completed = measured["requests"] - measured["status"]
    samples = []
    if failed:
        samples.append(
            f"wrk: {measured['status']} non-2xx, {measured['timeout']} timeouts, "
            f"{measured['read'] + measured['write'] + measured['connect']} socket errors"
        )
    if measured["status"] and workload.unique and next_start + measured["requests"] > len(workload.items):
        samples.append("ran out of distinct requests (repeats were rejected)")
    return LoadResult(
        generator=f"wrk -t{threads}",
        completed=completed,
        errors=failed,
        elapsed=measured["duration_us"] / 1e6,
        latencies=[],
        client_cpu=(usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime),
        server_cpu={name: after[name] - before[name] for name in components},
        machine_cpu=machine_after - machine_before,
        error_samples=samples,
        exhausted=workload.unique and next_start + measured["requests"] > len(workload.items),
        p50_override=measured["p50_us"] / 1e6,
        p95_override=measured["p95_us"] / 1e6,
        p99_override=measured["p99_us"] / 1e6,
    )


# h2load (nghttp2's HTTP/2 load generator) as a gRPC client: one request body, repeated.


def h2load_available() -> bool:
    return shutil.which("h2load") is not None


def run_h2load(
    workload: GrpcWorkload,
    *,
    threads: int,
    concurrency: int,
    warmup: float,
    duration: float,
    components: dict[str, int],
) -> LoadResult:
    """Native gRPC from h2load (C, so it leaves the cores to the stack): `concurrency` streams over
    `workload.channels * 2` HTTP/2 connections, all sending the workload's middle item.

    h2load sees HTTP status only, and a gRPC error is an HTTP 200 with a grpc-status trailer. But
    these requests are all the same, so every success returns the same number of DATA bytes, and an
    error (trailers-only) none: the shortfall in DATA bytes counts the errors.
    """
    import grpc

    if workload.unique:
        raise ValueError("h2load repeats one request; a unique workload needs run_python_load")
    request, token = workload.items[len(workload.items) // 2]
    # One call first: proves the request is right and gives the size of a success.
    with grpc.insecure_channel(workload.target) as channel:
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        response = channel.unary_unary(workload.method)(request, metadata=metadata, timeout=30)
    expected = 5 + len(response)  # gRPC message framing: flag byte + 4-byte length
    connections = max(1, min(concurrency, workload.channels * 2))
    streams = max(1, concurrency // connections)
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as scratch:
        folder = Path(scratch)
        (folder / "body").write_bytes(b"\x00" + len(request).to_bytes(4, "big") + request)
        argv = [
            "h2load",
            f"--clients={connections}",
            f"--max-concurrent-streams={streams}",
            f"--threads={threads}",
            f"--duration={max(1, round(duration * 1000))}ms",
            f"--warm-up-time={max(1, round(warmup * 1000))}ms",
            f"--data={folder / 'body'}",
            "--header=content-type: application/grpc",
            "--header=te: trailers",
            f"--log-file={folder / 'log'}",
            *([f"--header=authorization: Bearer {token}"] if token else []),
            f"http://{workload.target}{workload.method}",
        ]
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The measured window opens after the warm-up (connecting takes well under a millisecond here).
            time.sleep(warmup)
            warm_cpu = cpu_seconds({"load": process.pid})["load"]
            before, machine_before = cpu_seconds(components), machine_busy_seconds()
            output, errors_text = process.communicate(timeout=duration + 60)
            after, machine_after = cpu_seconds(components), machine_busy_seconds()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        finished = re.search(r"finished in ([\d.]+)(m?s)", output)
        counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", output)
        traffic = re.search(r"traffic: .*?, [\d.]+\w*B \((\d+)\) data", output)
        if process.returncode != 0 or not (finished and counts and traffic):
            raise RuntimeError(f"h2load failed (exit {process.returncode}):\n{output}\n{errors_text}")
        log = (folder / "log").read_text().splitlines()
    elapsed = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    succeeded = int(counts.group(2))
    data = int(traffic.group(1))
    grpc_errors = max(0, round((succeeded * expected - data) / expected))
    # The log also holds the warm-up's requests; the last `succeeded` rows with status 200 are the measured ones.
    rows = [line.split("\t") for line in log]
    latencies = sorted(int(row[2]) / 1e6 for row in rows[-succeeded:] if len(row) >= 3 and row[1] == "200")
    errors = int(counts.group(1)) - succeeded + grpc_errors
    return LoadResult(
        generator=f"h2load -c{connections}",
        completed=succeeded - grpc_errors,
        errors=errors,
        elapsed=elapsed,
        latencies=latencies,
        client_cpu=(usage_after.ru_utime + usage_after.ru_stime)
        - (usage_before.ru_utime + usage_before.ru_stime)
        - warm_cpu,
        server_cpu={name: after[name] - before[name] for name in components},
        machine_cpu=machine_after - machine_before,
        error_samples=[f"h2load: {errors} failed or gRPC errors (short DATA)"] if errors else [],
    )


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
