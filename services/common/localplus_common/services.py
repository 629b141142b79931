"""The gRPC services, listed once (CONTRACT §2). The settings, the gateway, the local stack and the tests
read this list; tests/test_deploy_manifests.py checks docker-compose.yml and k8s/ against it."""

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    # Also its proto package (`localplus.<name>.v1`), its gateway cluster and its compose/k8s name.
    name: str
    module: str  # `python -m <module>` runs it
    addr_var: str  # where it listens, and where the others reach it
    port: int
    grpc_service: str  # the full proto service name, which grpc.health.v1 reports SERVING
    metrics_port: int  # Prometheus text at /metrics (localplus_common.telemetry)

    @property
    def default_addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_var(self) -> str:
        return f"{self.name.upper()}_METRICS_ADDR"

    @property
    def default_metrics_addr(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"


SERVICES = (
    Service("events", "localplus_events", "EVENTS_ADDR", 50051, "localplus.events.v1.EventsService", 9101),
    Service(
        "ticketing", "localplus_ticketing", "TICKETING_ADDR", 50052, "localplus.ticketing.v1.TicketingService", 9102
    ),
    Service(
        "recurrence",
        "localplus_recurrence",
        "RECURRENCE_ADDR",
        50053,
        "localplus.recurrence.v1.RecurrenceService",
        9103,
    ),
)
EVENTS, TICKETING, RECURRENCE = SERVICES


def addresses_from_env(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Service name -> host:port, from each *_ADDR, else 127.0.0.1 on the service's port."""
    return {service.name: env.get(service.addr_var) or service.default_addr for service in SERVICES}
