"""Several worker processes for one service (LOCALPLUS_WORKERS): Python runs one thread of code at a time,
so one process uses at most one core; N processes share the listening port (SO_REUSEPORT, the kernel
spreads connections) and use N.

The first process becomes a small supervisor that runs this same command N times as workers (fresh
interpreters, not forks: gRPC's C core does not survive a fork once it has threads), passes SIGTERM and
SIGINT on, and exits 0 once they all drained and exited 0. When one worker dies on its own, it stops the
others and fails, so that k8s or compose restart the whole container."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)
# Set by the supervisor in each worker's environment: its own pid. A worker shares its port.
SUPERVISOR_VAR = "LOCALPLUS_SUPERVISOR_PID"


def available_cpus() -> int:
    """CPUs this process may use: its cgroup's CPU quota rounded up (a k8s limit, compose `cpus`), at most
    the CPUs it may run on."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: -1 for none
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def is_worker() -> bool:
    """Whether this process is one of a supervisor's workers (which share their port)."""
    return SUPERVISOR_VAR in os.environ


async def stop_when_orphaned(stop: Callable[[], None]) -> None:
    """Call `stop` (drain and exit) once the supervisor is gone without passing a signal on (it was
    killed): a worker must not serve on with nobody watching it."""
    supervisor = int(os.environ[SUPERVISOR_VAR])  # not getppid() now: it may be gone already
    # Nothing to wait on: the kernel only reparents an orphan.
    while os.getppid() == supervisor:  # noqa: ASYNC110
        await asyncio.sleep(1)
    log.warning("the supervisor (pid %d) is gone; stopping", supervisor)
    stop()


async def supervise(workers: int, settings: Mapping[str, str]) -> int:
    """Run this process's command `workers` times as workers, with `settings` added to their environment,
    until they exit; the exit status."""
    command = [sys.executable, *sys.orig_argv[1:]]
    env = {**os.environ, **settings, "LOCALPLUS_WORKERS": "1", SUPERVISOR_VAR: str(os.getpid())}
    children: list[asyncio.subprocess.Process] = []
    passed_on: int | None = None  # the signal passed on to the workers

    def stop(signum: int) -> None:
        nonlocal passed_on
        passed_on = signum
        for child in children:
            if child.returncode is None:
                child.send_signal(signum)

    # Before the workers exist, so that a signal while they start reaches every one of them.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    for _ in range(workers):
        children.append(await asyncio.create_subprocess_exec(*command, env=env))
        if passed_on is not None:
            children[-1].send_signal(passed_on)
    log.info("%d workers: %s", workers, ", ".join(str(child.pid) for child in children))
    exits = [asyncio.create_task(child.wait()) for child in children]
    await asyncio.wait(exits, return_when=asyncio.FIRST_COMPLETED)
    if passed_on is None:
        log.error("a worker exited on its own; stopping the others")
        stop(signal.SIGTERM)
        await asyncio.gather(*exits)
        return 1
    # A worker that the signal itself ended was still starting: it handles the signal (drains) from
    # before it serves (localplus_common.server.serve), so it had served nothing and nothing was lost.
    codes = [0 if code == -passed_on else code for code in await asyncio.gather(*exits)]
    return next((code for code in codes if code != 0), 0)
