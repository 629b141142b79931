"""The whole stack on one machine: `make up`, and the test suite's session fixture.

Starts (unless DATABASE_URL points elsewhere) the embedded Postgres, applies the migrations,
starts the events, ticketing and recurrence services, localstripe and the Envoy gateway, the local
SMTP server (unless SMTP_URL points elsewhere) and the notifications worker, waits until each
answers, then supervises them until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
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
from localplus_dev.push import dev_vapid_key
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
    # Service name -> where it serves Prometheus /metrics ("off": none).
    metrics_addresses: dict[str, str] = field(
        default_factory=lambda: {service.name: service.default_metrics_addr for service in SERVICES}
    )
    # Email: the local SMTP server's Maildir and port, unless smtp_url names a real server.
    maildir: Path = ROOT / ".data" / "mail"
    smtp_port: int = 1025
    smtp_url: str | None = None
    vapid_key: Path = ROOT / ".data" / "vapid_private.pem"

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
            metrics_addresses={
                service.name: env.get(service.metrics_var) or service.default_metrics_addr for service in SERVICES
            },
            maildir=Path(env.get("LOCALPLUS_MAILDIR") or data_dir.parent / "mail"),
            smtp_port=int(env.get("SMTP_PORT") or defaults.smtp_port),
            smtp_url=env.get("SMTP_URL") or None,
            vapid_key=data_dir.parent / "vapid_private.pem",
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
            # The worker polls often and takes over a dead worker's messages after a few seconds.
            service_settings={
                "RECURRENCE_JOB_SECONDS": "1",
                "NOTIFICATIONS_POLL_SECONDS": "0.2",
                "NOTIFICATIONS_LEASE_SECONDS": "5",
                # The tests fold page views into the analytics themselves, when they mean to (and the
                # fuzzer's write check then sees every write a request makes to them).
                "ANALYTICS_FOLD_SECONDS": "86400",
            },
            maildir=base_dir / "mail",
            smtp_port=free_port(),
            vapid_key=base_dir / "vapid_private.pem",
            metrics_addresses={service.name: f"127.0.0.1:{free_port()}" for service in SERVICES},
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

    @property
    def smtp_url(self) -> str:
        return self.config.smtp_url or f"smtp://127.0.0.1:{self.config.smtp_port}"

    def address(self, service: str) -> str:
        return self.config.gateway.addresses[service]

    def metrics_url(self, service: str) -> str | None:
        """Where `service`'s Prometheus metrics are, or None when they are off."""
        address = self.config.metrics_addresses[service]
        return None if address == "off" else f"http://{address}/metrics"

    @property
    def envoy_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.config.gateway.admin_port}/stats/prometheus"

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
            if not self.config.smtp_url:
                self.start_mail()
            self.stripe.start()
            for service in SERVICES:
                self.supervisor.spawn(service.name, [sys.executable, "-m", service.module], env=self._service_env())
            for service in SERVICES:
                self._wait_serving(service)
            self.gateway.start()
            # A PaymentIntent confirmed at localstripe reaches the ticketing service like Stripe's would.
            self.stripe.send_webhooks_to(f"{self.gateway_url}/api/webhooks/stripe")
            self.supervisor.spawn(
                "notifications", [sys.executable, "-m", "localplus_notifications"], env=self.notifications_env()
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.supervisor.stop_all()

    def restart_service(self, name: str, settings: dict[str, str] | None = None) -> None:
        """Start one of the gRPC services again (after a crash, or to kill it first) and wait until it serves;
        with `settings`, over its usual environment (else as it was started)."""
        (service,) = (service for service in SERVICES if service.name == name)
        if settings is not None:
            self.supervisor.child(name).env = self._service_env() | settings
        self.supervisor.restart(name)
        self._wait_serving(service)

    def start_mail(self) -> None:
        """The local SMTP server, delivering into the Maildir; waits until it accepts connections."""
        self.supervisor.spawn(
            "mail",
            [sys.executable, "-m", "localplus_dev.mail", "--port", str(self.config.smtp_port), "--maildir",
             str(self.config.maildir)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            self.supervisor.check()
            try:
                socket.create_connection(("127.0.0.1", self.config.smtp_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the SMTP server did not start within 30s") from None
                time.sleep(0.1)

    def notifications_env(self, **overrides: str) -> dict[str, str]:
        """The worker's environment (the tests start more workers with overrides)."""
        env = self._service_env()
        env.update(
            SMTP_URL=self.smtp_url,
            LOCALPLUS_PUBLIC_URL=self.gateway_url,
            VAPID_PRIVATE_KEY=str(dev_vapid_key(self.config.vapid_key)),
        )
        env.update(overrides)
        return env

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
        env.update({service.metrics_var: self.config.metrics_addresses[service.name] for service in SERVICES})
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
        f"stripe {stack.stripe.url}, email {stack.smtp_url}"
        f"{'' if stack.config.smtp_url else f' into {stack.config.maildir}'}. Ctrl-C stops everything.",
        flush=True,
    )
    metrics = ", ".join(f"{service.name} {stack.metrics_url(service.name) or 'off'}" for service in SERVICES)
    otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    print(
        f"metrics (Prometheus): {metrics}, envoy {stack.envoy_metrics_url}; JSON logs, one line per request "
        f"(Envoy's access log too): {stack.config.run_dir}/*.log; traces: "
        f"{f'OTLP to {otlp}' if otlp else 'off (set OTEL_EXPORTER_OTLP_ENDPOINT)'}",
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
