"""A tiny supervisor for the child processes of `make up` and the test session.

Each child runs in its own process group (so a terminal's Ctrl-C reaches only the supervisor, which
then stops the children in reverse start order) and writes stdout and stderr to `<run_dir>/<name>.log`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType


def venv_binary(name: str) -> str:
    """A console script of this environment (e.g. `envoy`, `localstripe`), else one on PATH."""
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in {candidate.parent} or on PATH")
    return found


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit like Ctrl-C raises KeyboardInterrupt, so that `with Supervisor`
    blocks and atexit stop the children (the default SIGTERM action would orphan them)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class ChildExited(RuntimeError):
    """A supervised child exited without being asked to."""

    def __init__(self, child: Child) -> None:
        super().__init__(
            f"{child.name} (pid {child.pid}) exited with code {child.returncode}; "
            f"log {child.log_path}:\n{child.log_tail()}"
        )
        self.child = child


class Child:
    """One running child process; created through `Supervisor.spawn`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 10.0,
        user: int | None = None,
        group: int | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.stopping = False
        # How it was started, so that Supervisor.restart can start it again the same way.
        self.env, self.cwd, self.user, self.group = env, cwd, user, group
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
                user=user,
                group=group,
                # Drop root's supplementary groups along with its uid.
                extra_groups=None if user is None else [],
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int:
        """Send the stop signal, wait up to `stop_timeout`, then SIGKILL the child's whole process group."""
        self.stopping = True
        if self.popen.poll() is None:
            # Only the leader gets the polite signal: postgres, for one, must shut its own workers down.
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.popen.wait()
        # Reap stragglers (e.g. postgres backends of a killed postmaster) left in the group.
        self._kill_group()
        return self.popen.returncode

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


class Supervisor:
    """Starts children, notices when one dies, and stops them all (also at interpreter exit)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.children: list[Child] = []
        run_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop_all)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 10.0,
        user: int | None = None,
        group: int | None = None,
    ) -> Child:
        child = Child(
            name,
            argv,
            self.run_dir / f"{name}.log",
            env=env,
            cwd=cwd,
            stop_signal=stop_signal,
            stop_timeout=stop_timeout,
            user=user,
            group=group,
        )
        self.children.append(child)
        return child

    def child(self, name: str) -> Child:
        """The child most recently started under `name`."""
        for child in reversed(self.children):
            if child.name == name:
                return child
        raise KeyError(name)

    def restart(self, name: str) -> Child:
        """Stop the child `name` (if it still runs: it may have been killed) and start it again exactly as
        it was started, in its place, so that `check` watches the new process and `stop_all` keeps its order."""
        old = self.child(name)
        old.stop()
        new = Child(
            old.name,
            old.argv,
            old.log_path,
            env=old.env,
            cwd=old.cwd,
            stop_signal=old.stop_signal,
            stop_timeout=old.stop_timeout,
            user=old.user,
            group=old.group,
        )
        self.children[self.children.index(old)] = new
        return new

    def check(self) -> None:
        """Raise `ChildExited` for the first child that died without `stop()`."""
        for child in self.children:
            if not child.stopping and not child.alive:
                raise ChildExited(child)

    async def watch(self, interval: float = 0.5) -> None:
        """Return never; raise `ChildExited` as soon as a child dies unexpectedly."""
        while True:
            self.check()
            await asyncio.sleep(interval)

    def stop_all(self) -> None:
        """Stop every child, newest first, so dependents go before what they depend on."""
        for child in reversed(self.children):
            child.stop()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
