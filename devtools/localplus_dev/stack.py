"""The whole stack on one machine: `make up`, and the test suite's session fixture.

Starts (unless DATABASE_URL points elsewhere) the embedded Postgres, applies the migrations,
starts the events, ticketing and recurrence services, localstripe and the Envoy gateway,
waits until each answers, then supervises them until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from localplus_common.config import DEV_JWT_SECRET
from localplus_common.migrate import migrate
from localplus_common.services import SERVICES, Service
from localplus_dev.envoy import Gateway
from localplus_dev.postgres import PostgresServer, free_port
from localplus_dev.processes import Supervisor
from localplus_dev.stripe import LocalStripe
from localplus_gateway import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StackConfig:
    data_dir: Path = ROOT / ".data" / "postgres"
    run_dir: Path = ROOT / ".run"
    database_url: str | None = None  # set: use that database, start none
    postgres_port: int = 54322
    postgres_settings: dict[str, str] = field(default_factory=dict)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    stripe_port: int = 8420
    stripe_state: Path = ROOT / ".data" / "localstripe.pickle"
    stripe_from_scratch: bool = False
    jwt_secret: str = DEV_JWT_SECRET
    # Settings for the services beyond the environment's (the tests run the horizon job every second).
    service_settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> StackConfig:
        env = os.environ
        defaults = cls()
        gateway = GatewaySettings.from_env()
        data_dir = Path(env.get("LOCALPLUS_DATA_DIR") or defaults.data_dir)
        return cls(
            data_dir=data_dir,
            run_dir=Path(env.get("LOCALPLUS_RUN_DIR") or defaults.run_dir),
            # Beside the database's directory: `.data/localstripe.pickle` by default.
            stripe_state=data_dir.parent / "localstripe.pickle",
            database_url=env.get("DATABASE_URL") or None,
            postgres_port=int(env.get("POSTGRES_PORT") or defaults.postgres_port),
            gateway=gateway,
            stripe_port=int(env.get("STRIPE_PORT") or defaults.stripe_port),
            jwt_secret=gateway.jwt_secret,
        )

    @classmethod
    def isolated(cls, base_dir: Path) -> StackConfig:
        """Everything on free ports under `base_dir`: runs beside `make up` (the tests use this)."""
        gateway = GatewaySettings(
            gateway_port=free_port(),
            admin_port=free_port(),
            addresses={service.name: f"127.0.0.1:{free_port()}" for service in SERVICES},
        )
        return cls(
            data_dir=base_dir / "postgres",
            run_dir=base_dir / "run",
            postgres_port=free_port(),
            # A throwaway database needs no crash safety; this makes the suite much faster.
            postgres_settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
            gateway=gateway,
            stripe_port=free_port(),
            stripe_state=base_dir / "localstripe.pickle",
            stripe_from_scratch=True,
            service_settings={"RECURRENCE_JOB_SECONDS": "1"},
        )


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.supervisor = Supervisor(config.run_dir)
        self.postgres: PostgresServer | None = None
        self.database_url = config.database_url or ""
        self.gateway = Gateway(config.run_dir, self.supervisor, replace(config.gateway, jwt_secret=config.jwt_secret))
        self.stripe = LocalStripe(
            self.supervisor, config.stripe_state, port=config.stripe_port, from_scratch=config.stripe_from_scratch
        )

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    def address(self, service: str) -> str:
        return self.config.gateway.addresses[service]

    def start(self) -> None:
        try:
            if not self.database_url:
                self.postgres = PostgresServer(
                    self.config.data_dir,
                    self.supervisor,
                    port=self.config.postgres_port,
                    settings=self.config.postgres_settings,
                )
                self.postgres.start()
                self.database_url = self.postgres.url
            asyncio.run(migrate(self.database_url))
            self.stripe.start()
            for service in SERVICES:
                self.supervisor.spawn(service.name, [sys.executable, "-m", service.module], env=self._service_env())
            for service in SERVICES:
                self._wait_serving(service)
            self.gateway.start()
            # A PaymentIntent confirmed at localstripe reaches the ticketing service like Stripe's would.
            self.stripe.send_webhooks_to(f"{self.gateway_url}/api/webhooks/stripe")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.supervisor.stop_all()

    def restart_service(self, name: str) -> None:
        """Start one of the gRPC services again (after a crash, or to kill it first) and wait until it serves."""
        (service,) = (service for service in SERVICES if service.name == name)
        self.supervisor.restart(name)
        self._wait_serving(service)

    def _service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            SUPABASE_JWT_SECRET=self.config.jwt_secret,
            # The services check the same asymmetric keys as the gateway.
            SUPABASE_JWKS=self.config.gateway.jwks or "",
            STRIPE_API_BASE=self.stripe.url,
            PYTHONUNBUFFERED="1",
        )
        env.update({service.addr_var: self.address(service.name) for service in SERVICES})
        env.update(self.config.service_settings)
        # One process per service (the supervisor watches and restarts that pid), unless asked otherwise.
        env.setdefault("LOCALPLUS_WORKERS", "1")
        return env

    def _wait_serving(self, service: Service, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address(service.name)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                self.supervisor.check()
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=service.grpc_service), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service.grpc_service} did not become healthy within {timeout:.0f}s")
                time.sleep(0.1)


def up() -> int:
    """`make up`: start everything, print `ready`, stay in the foreground until Ctrl-C/SIGTERM."""
    stack = Stack(StackConfig.from_env())
    stopping = False

    def abort_startup(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # While starting, Ctrl-C or SIGTERM interrupts at once (start() stops what it started).
    signal.signal(signal.SIGTERM, abort_startup)
    try:
        stack.start()
    except KeyboardInterrupt:
        print("stopped before ready", flush=True)
        return 130
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    where = "embedded Postgres" if stack.postgres else "DATABASE_URL"
    services = ", ".join(f"{service.name} {stack.address(service.name)}" for service in SERVICES)
    print(
        f"ready: gateway {stack.gateway_url} (JSON and gRPC), database {where}, {services}, "
        f"stripe {stack.stripe.url}. Ctrl-C stops everything.",
        flush=True,
    )
    exit_code = 0
    try:
        while not stopping:
            stack.supervisor.check()
            time.sleep(0.5)
    except Exception as error:  # a child died: say which, then stop the rest
        print(f"stopping: {error}", file=sys.stderr, flush=True)
        exit_code = 1
    finally:
        stack.stop()
    print("stopped", flush=True)
    return exit_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up"])
    parser.parse_args()
    return up()


if __name__ == "__main__":
    sys.exit(main())
