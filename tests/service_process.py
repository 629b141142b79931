"""A service started as its own process for one test (beside the session's stack), e.g. with other
settings: `with running_service(EVENTS, env, log) as address:` once it is SERVING."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from localplus_common.services import Service
from localplus_dev.postgres import free_port

# Just enough to find Python and this checkout's code: no LOCALPLUS_ENV, DATABASE_URL or JWT key. One
# process, as in the session's stack (tests/test_graceful_drain.py runs two workers).
SCRUBBED_ENV = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(sys.path), "LOCALPLUS_WORKERS": "1"}


@contextmanager
def running_service(service: Service, env: dict[str, str], log: Path) -> Iterator[str]:
    """`service` run with only `env` (plus a free address), until it reports SERVING; stopped after."""
    address = f"127.0.0.1:{free_port()}"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", service.module],
            # Its metrics on a free port too: the default one may be taken by `make up` on this machine.
            env={**SCRUBBED_ENV, service.addr_var: address, service.metrics_var: f"127.0.0.1:{free_port()}", **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()}"
                try:
                    request = health_pb2.HealthCheckRequest(service=service.grpc_service)
                    if health.Check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, f"not serving after 30s:\n{log.read_text()}"
                time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=15)
