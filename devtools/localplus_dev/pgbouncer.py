"""PgBouncer in transaction mode in front of a Postgres, as a supervised child: what Supabase's pooler
(Supavisor) does in front of a hosted project, so that the services' connection settings are tested
the way production connects (Debian's pgbouncer 1.18 has no prepared statements in this mode)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from localplus_dev.postgres import PASSWORD, _make_traversable, _server_account
from localplus_dev.processes import Child, Supervisor

PGBOUNCER = Path("/usr/sbin/pgbouncer")


class PgBouncer:
    def __init__(
        self, run_dir: Path, supervisor: Supervisor, *, postgres_port: int, port: int, pool_size: int = 20
    ) -> None:
        self.dir = run_dir / "pgbouncer"
        self.supervisor = supervisor
        self.postgres_port = postgres_port
        self.port = port
        self.pool_size = pool_size
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 15.0) -> None:
        account = _server_account()  # PgBouncer refuses to run as root
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "userlist.txt").write_text(f'"postgres" "{PASSWORD}"\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"""[databases]
postgres = host=127.0.0.1 port={self.postgres_port} dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.dir / "userlist.txt"}
pool_mode = transaction
max_client_conn = 500
default_pool_size = {self.pool_size}
ignore_startup_parameters = extra_float_digits
"""
        )
        if account is not None:
            _make_traversable(self.dir)
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
        self.child = self.supervisor.spawn(
            "pgbouncer",
            [str(PGBOUNCER), str(self.dir / "pgbouncer.ini")],
            user=None if account is None else account.pw_uid,
            group=None if account is None else account.pw_gid,
        )
        deadline = time.monotonic() + timeout
        while True:
            if not self.child.alive:
                raise RuntimeError(f"pgbouncer exited:\n{self.child.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pgbouncer not listening after {timeout}s:\n{self.child.log_tail()}") from None
                time.sleep(0.1)
