"""Render gateway/envoy.yaml.tmpl from the environment and the protos' descriptor set (CONTRACT §1, §2),
and run Envoy so that it drains when asked to stop.

`python -m localplus_gateway render > envoy.yaml` is how docker-compose.yml and k8s/ make the gateway's
config; `make up` and the tests render through localplus_dev.envoy. All of them run Envoy through
`python -m localplus_gateway run envoy -c envoy.yaml ...` (see `run`).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import re
import signal
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from localplus_common.auth import CLOCK_SKEW_S
from localplus_common.config import JWT_KEY_VARS, drain_from_env, exit_if_missing, jwt_keys_from_env
from localplus_common.services import SERVICES, addresses_from_env

TEMPLATE = Path(__file__).resolve().parent / "envoy.yaml.tmpl"
DEFAULT_DESCRIPTOR = Path(__file__).resolve().parents[1] / "gen" / "descriptor.pb"
# `make gen` writes the OpenAPI document beside the descriptor set (localplus_openapi).
OPENAPI_NAME = "openapi.json"
DOCS_PAGE = Path(__file__).resolve().parent / "docs.html"
# gRPC methods that take no token at all, e.g. a webhook whose caller authenticates by signature, or
# an email's one-click unsubscribe (a mail client's POST, authenticated by the link's signed token),
# or a click on a sponsored result.
PUBLIC_METHODS: frozenset[str] = frozenset(
    {
        "/localplus.ticketing.v1.TicketingService/HandleStripeWebhook",
        "/localplus.events.v1.EventsService/Unsubscribe",
        # A click on a sponsored result: anonymous viewers click too (a token, when sent, is still
        # verified by the service).
        "/localplus.ticketing.v1.TicketingService/ClickPromotion",
    }
)
# Writes that anonymous callers may make too (a bad token still fails): counting a page view.
OPTIONAL_TOKEN_METHODS: frozenset[str] = frozenset({"/localplus.events.v1.EventsService/RecordEventView"})
# The gateway listener's connection manager, whose stats `drain` reads.
STAT_PREFIX = "gateway"
HS256_PROVIDER = "supabase"
JWKS_PROVIDER = "supabase_jwks"
# Envoy's own error replies (not upstream ones) to JSON: HTTP status -> gRPC-style code name.
LOCAL_REPLY_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    431: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class GatewaySettings:
    gateway_port: int = 8080
    admin_port: int = 9901
    # Service name -> host:port of its cluster (localplus_common.services).
    addresses: dict[str, str] = field(default_factory=lambda: addresses_from_env({}))
    # The HS256 secret; "" accepts only the JWKS keys.
    jwt_secret: str = ""
    # A JWKS file path or an http(s) URL with the asymmetric (ES256/RS256) keys, if any.
    jwks: str | None = None
    # 0.0.0.0 inside a container; 127.0.0.1 everywhere else.
    listen_address: str = "127.0.0.1"
    # Envoy's cap on open client connections, and how long a client may take to send its request
    # header (0 disables the timeout); tests lower both.
    max_connections: int = 10000
    request_headers_timeout_s: float = 10.0
    # A listener of its own (on listen_address) answering only GET /stats/prometheus from the admin, for
    # scrapers outside a container, where the admin (127.0.0.1 only) cannot be reached; 0: none.
    stats_port: int = 0
    # An http:// OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, as the services read it): Envoy then makes a
    # span per request, continuing the client's traceparent and passing its own on; "": no tracing.
    otlp_endpoint: str = ""
    # How `run` stops Envoy (localplus_common.config.drain_from_env): /healthz answers 503 for
    # drain_seconds while requests are still served, then requests in flight get grace_seconds.
    drain_seconds: float = 0.0
    grace_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> GatewaySettings:
        """Outside dev mode this exits, naming the variables, if there is no JWT key."""
        d = cls()
        jwt_secret, jwks = jwt_keys_from_env(env)
        exit_if_missing({JWT_KEY_VARS: jwt_secret or jwks})
        drain_seconds, grace_seconds = drain_from_env(env)
        return cls(
            gateway_port=int(env.get("GATEWAY_PORT", d.gateway_port)),
            admin_port=int(env.get("ENVOY_ADMIN_PORT", d.admin_port)),
            addresses=addresses_from_env(env),
            jwt_secret=jwt_secret,
            jwks=jwks or None,
            listen_address=env.get("GATEWAY_LISTEN_ADDRESS", d.listen_address),
            stats_port=int(env.get("ENVOY_STATS_PORT") or d.stats_port),
            otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT", d.otlp_endpoint),
            drain_seconds=drain_seconds,
            grace_seconds=grace_seconds,
        )


@dataclass(frozen=True)
class Method:
    path: str  # gRPC method path, `/package.Service/Method`
    cluster: str
    read_only: bool  # every HTTP binding is a GET
    # Its HTTP bindings (google.api.http): (method, path template), e.g. ("GET", "/api/events/{id}").
    bindings: tuple[tuple[str, str], ...]

    @property
    def token(self) -> Literal["none", "optional", "required"]:
        """What jwt_authn asks of callers (and the OpenAPI document says): `none` for PUBLIC_METHODS,
        `optional` for reads and OPTIONAL_TOKEN_METHODS (a bad token still fails), `required` for the rest."""
        if self.path in PUBLIC_METHODS:
            return "none"
        return "optional" if self.read_only or self.path in OPTIONAL_TOKEN_METHODS else "required"


def load_methods(descriptor_path: Path) -> list[Method]:
    """The RPCs of every `localplus.*` service in a FileDescriptorSet, with their cluster."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes()).file
    clusters = [s.name for s in SERVICES]
    methods = []
    for file in files:
        if not file.package.startswith("localplus."):
            continue
        # Service package `localplus.<cluster>.v1` is served by the cluster of that name.
        cluster = file.package.split(".")[1]
        if cluster not in clusters:
            raise ValueError(f"package {file.package} has no gateway cluster (known: {', '.join(clusters)})")
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                bindings = [rule, *rule.additional_bindings]
                read_only = method.options.HasExtension(annotations_pb2.http) and all(
                    b.WhichOneof("pattern") == "get" for b in bindings
                )
                path = f"/{file.package}.{service.name}/{method.name}"
                http = tuple(_binding(b) for b in bindings) if method.options.HasExtension(annotations_pb2.http) else ()
                methods.append(Method(path, cluster, read_only, http))
    return methods


def _binding(rule: http_pb2.HttpRule) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return pattern.upper(), getattr(rule, pattern)


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _jwt_providers(settings: GatewaySettings) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The jwt_authn providers and any cluster a remote JWKS needs."""
    common = {
        "audiences": ["authenticated"],
        # Services verify the token again and need it to act as the caller in Postgres.
        "forward": True,
        # Envoy's default, stated so that it stays the skew the services allow.
        "clock_skew_seconds": CLOCK_SKEW_S,
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
    }
    providers: dict[str, Any] = {}
    if settings.jwt_secret:
        secret = base64.urlsafe_b64encode(settings.jwt_secret.encode()).rstrip(b"=").decode()
        hs256 = {"keys": [{"kty": "oct", "alg": "HS256", "k": secret}]}
        providers[HS256_PROVIDER] = {**common, "local_jwks": {"inline_string": json.dumps(hs256)}}
    clusters: list[dict[str, Any]] = []
    if settings.jwks and settings.jwks.startswith(("http://", "https://")):
        url = urlsplit(settings.jwks)
        tls = url.scheme == "https"
        host = url.hostname or ""
        providers[JWKS_PROVIDER] = {
            **common,
            "remote_jwks": {
                "http_uri": {"uri": settings.jwks, "cluster": "jwks", "timeout": "5s"},
                "cache_duration": "600s",
                "async_fetch": {},
                "retry_policy": {},
            },
        }
        cluster: dict[str, Any] = {
            "name": "jwks",
            "type": "STRICT_DNS",
            "dns_lookup_family": "V4_PREFERRED",
            "connect_timeout": "5s",
            "load_assignment": {
                "cluster_name": "jwks",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": host,
                                            "port_value": url.port or (443 if tls else 80),
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
        if tls:
            cluster["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": host,
                },
            }
        clusters.append(cluster)
    elif settings.jwks:
        providers[JWKS_PROVIDER] = {**common, "local_jwks": {"filename": str(Path(settings.jwks).resolve())}}
    if not providers:
        raise ValueError("no JWT key: set jwt_secret or jwks")
    return providers, clusters


def _jwt_rules(methods: list[Method], providers: list[str]) -> list[dict[str, Any]]:
    """One exact-path rule per RPC: reads accept anonymous callers (a bad token still fails), the rest
    need a valid token, PUBLIC_METHODS get no rule at all."""
    signed: list[dict[str, Any]] = [{"provider_name": p} for p in providers]
    rules = []
    for method in methods:
        if method.token == "none":
            continue
        if method.token == "optional":
            requires = {"requires_any": {"requirements": [*signed, {"allow_missing": {}}]}}
        elif len(signed) == 1:
            requires = signed[0]
        else:
            requires = {"requires_any": {"requirements": signed}}
        rules.append({"match": {"path": method.path}, "requires": requires})
    return rules


# A JSON client's headers reach the services as gRPC metadata, where a name outside [0-9a-z_.-] is
# refused, a `-bin` value must be base64 and `grpc-*` headers are gRPC's own: the service would answer
# INTERNAL (500). JSON clients cannot mean any of them, so they are dropped (pseudo-headers stay).
JSON_HEADERS = {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute",
    "mutations": {
        "request_mutations": [
            {"remove_on_match": {"key_matcher": {"safe_regex": {"regex": ".*[^0-9a-z_.:-].*|.*-bin|grpc-.*"}}}}
        ]
    },
}


# On routes that Envoy answers itself (no gRPC method): the transcoder would answer 404.
NO_TRANSCODER = {
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    }
}


def _service_routes(methods: list[Method]) -> list[dict[str, Any]]:
    services = {m.path.rsplit("/", 1)[0] + "/": m.cluster for m in methods}
    no_buffer = {
        "envoy.filters.http.buffer": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
            "disabled": True,
        }
    }
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": prefix},
            "route": {"cluster": cluster, "timeout": "60s"},
            "typed_per_filter_config": no_buffer,
        }
        for prefix, cluster in services.items()
    ]
    routes += _method_not_allowed_routes(methods)
    # JSON requests are matched here first, before the transcoder rewrites their path: without this
    # route CORS finds no policy and preflights fall through to jwt_authn (401). Unknown /api paths are
    # answered 404 by the transcoder, so the cluster named here is never used.
    routes.append(
        {
            "match": {"prefix": "/api/"},
            "route": {"cluster": SERVICES[0].name},
            "typed_per_filter_config": {"envoy.filters.http.header_mutation": JSON_HEADERS},
        }
    )
    return routes


# Path template variables ({id}, {event.id}): one segment. Not a ":" either, which starts a custom verb
# (/api/events/{id}:submit); a path with one in a variable is left to the transcoder (no 405).
_TEMPLATE_VARIABLE = re.compile(r"\{[a-z_.]+\}")
_SEGMENT = "[^/:]+"


def _template_regex(template: str) -> str:
    """An RE2 regex for the paths a google.api.http path template matches; a template of another
    shape (`{name=**}`, `*`) fails the render rather than matching something else."""
    literals = _TEMPLATE_VARIABLE.split(template)
    if any(c in literal for literal in literals for c in "{}*="):
        raise ValueError(f"path template {template!r}: the gateway's 405 routes know only {{field}} variables")
    return _SEGMENT.join(re.escape(literal) for literal in literals)


def _direct_response_cors(exposed: str) -> list[dict[str, Any]]:
    """The CORS filter skips routes Envoy answers itself (no cluster); its policy allows every origin, so
    these are the headers it would add (none when the request has no origin)."""
    return [
        {"header": {"key": "access-control-allow-origin", "value": "%REQ(origin)%"}},
        {"header": {"key": "access-control-expose-headers", "value": exposed}},
        {"header": {"key": "vary", "value": "origin"}},
    ]


def _method_not_allowed_routes(methods: list[Method]) -> list[dict[str, Any]]:
    """A 405 with Allow (the path's methods) for a known /api/ path asked with another method, one route
    per set of allowed methods; unknown paths still reach the transcoder's 404. OPTIONS is never refused
    here: CORS answers preflights."""
    by_template: dict[str, set[str]] = {}
    for method in methods:
        for verb, template in method.bindings:
            by_template.setdefault(template, set()).add(verb)
    regexes = {template: _template_regex(template) for template in by_template}
    samples = {template: _TEMPLATE_VARIABLE.sub("x", template) for template in by_template}
    groups: dict[frozenset[str], set[str]] = {}
    for template, regex in regexes.items():
        # Templates that can match the same path (/api/events/{id} and /api/events/{event.id}) share
        # their methods, so that no method of either is refused.
        allowed = set(by_template[template])
        for other in by_template:
            if re.fullmatch(regex, samples[other]) or re.fullmatch(regexes[other], samples[template]):
                allowed |= by_template[other]
        groups.setdefault(frozenset(allowed), set()).add(regex)
    routes = []
    for methods_of_group, group in sorted(groups.items(), key=lambda item: sorted(item[0])):
        allow = ", ".join(sorted(methods_of_group))
        routes.append(
            {
                "match": {
                    "safe_regex": {"regex": "|".join(sorted(group))},
                    "headers": [
                        {
                            "name": ":method",
                            "string_match": {"safe_regex": {"regex": "|".join(sorted(methods_of_group | {"OPTIONS"}))}},
                            "invert_match": True,
                        }
                    ],
                },
                "direct_response": {"status": 405, "body": {"inline_string": f"method not allowed; allowed: {allow}"}},
                "response_headers_to_add": [
                    {"header": {"key": "allow", "value": allow}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                    *_direct_response_cors("allow, x-request-id"),
                ],
                "typed_per_filter_config": NO_TRANSCODER,
            }
        )
    return routes


def _swagger_ui() -> Path:
    """Swagger UI's static files, from the swagger-ui-py package (found without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or spec.origin is None:
        raise ValueError("swagger-ui-py is not installed: the gateway serves /api/docs from its files")
    return Path(spec.origin).parent / "static"


def _docs_routes(openapi_path: str) -> list[dict[str, Any]]:
    """GET /api/openapi.json and the Swagger UI page at /api/docs, answered by Envoy from files."""
    static = _swagger_ui()
    files = {
        f"/api/{OPENAPI_NAME}": (openapi_path, "application/json"),
        "/api/docs": (str(DOCS_PAGE), "text/html; charset=utf-8"),
        "/api/docs/swagger-ui.css": (str(static / "swagger-ui.css"), "text/css; charset=utf-8"),
        "/api/docs/swagger-ui-bundle.js": (str(static / "swagger-ui-bundle.js"), "text/javascript; charset=utf-8"),
    }
    return [
        {
            "match": {
                "path": path,
                "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
            },
            "direct_response": {"status": 200, "body": {"filename": filename}},
            "response_headers_to_add": [
                {"header": {"key": "content-type", "value": kind}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                *_direct_response_cors("x-request-id"),
            ],
            "typed_per_filter_config": NO_TRANSCODER,
        }
        for path, (filename, kind) in files.items()
    ]


def _local_reply_mappers() -> list[dict[str, Any]]:
    # A JSON client is one whose request is not gRPC, or was before the transcoder rewrote it (jwt_authn
    # and the router run after that and see content-type application/grpc). Native gRPC clients keep
    # Envoy's grpc-status replies.
    json_client = {
        "or_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                            "invert_match": True,
                            # GETs have no content-type; without this they would not match.
                            "treat_missing_header_as_empty": True,
                        }
                    }
                },
                {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}},
            ]
        }
    }
    mappers = []
    for status, code in LOCAL_REPLY_CODES.items():
        is_status = {
            "status_code_filter": {
                "comparison": {"op": "EQ", "value": {"default_value": status, "runtime_key": f"lp.reply.{status}"}}
            }
        }
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [is_status, json_client]}},
                "body_format_override": {
                    "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "status": "%RESPONSE_CODE%"},
                    "content_type": "application/json",
                },
            }
        )
    return mappers


def _stats_listeners(settings: GatewaySettings) -> list[dict[str, Any]]:
    """The stats listener (GatewaySettings.stats_port): /stats/prometheus proxied to the admin, nothing
    else of the admin API (which can also stop Envoy)."""
    if not settings.stats_port:
        return []
    router = {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "stats",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "stats",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {
                                "path": "/stats/prometheus",
                                "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                            },
                            "route": {"cluster": "envoy_admin"},
                        }
                    ],
                }
            ]
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": router}],
    }
    address = {"socket_address": {"address": settings.listen_address, "port_value": settings.stats_port}}
    return [
        {
            "name": "stats",
            "address": address,
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
            ],
        }
    ]


def _tracing(settings: GatewaySettings) -> tuple[str, list[dict[str, Any]]]:
    """The connection manager's `tracing` line (OpenTelemetry, every request sampled; the services
    sample as they are told) and the cluster of the OTLP/HTTP endpoint; nothing without one."""
    if not settings.otlp_endpoint:
        return "", []
    endpoint = urlsplit(settings.otlp_endpoint)
    if endpoint.scheme != "http" or not endpoint.hostname:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// URL for the gateway: {settings.otlp_endpoint}"
        )
    provider = {
        "name": "envoy.tracers.opentelemetry",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "service_name": "gateway",
            "http_service": {
                "http_uri": {
                    "uri": settings.otlp_endpoint.rstrip("/") + "/v1/traces",
                    "cluster": "otlp",
                    "timeout": "2s",
                }
            },
        },
    }
    address = {"socket_address": {"address": endpoint.hostname, "port_value": endpoint.port or 80}}
    cluster = {
        "name": "otlp",
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": "otlp",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
    tracing = {"provider": provider, "random_sampling": {"value": 100}}
    return f"tracing: {json.dumps(tracing)}", [cluster]


def _stats_clusters(settings: GatewaySettings) -> list[dict[str, Any]]:
    if not settings.stats_port:
        return []
    admin = {"socket_address": {"address": "127.0.0.1", "port_value": settings.admin_port}}
    return [
        {
            "name": "envoy_admin",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "envoy_admin",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": admin}}]}],
            },
        }
    ]


def render_envoy_config(
    descriptor_path: Path,
    settings: GatewaySettings,
    *,
    descriptor_path_in_config: str | None = None,
) -> str:
    """The Envoy config as YAML text; `descriptor_path_in_config` is where Envoy will find the
    descriptor set if not at `descriptor_path` (e.g. inside a container)."""
    methods = load_methods(descriptor_path)
    descriptor_in_config = Path(descriptor_path_in_config or descriptor_path.resolve())
    providers, extra_clusters = _jwt_providers(settings)
    tracing, otlp = _tracing(settings)
    services = sorted({m.path.split("/")[1] for m in methods})
    hosts = {}
    for service in SERVICES:
        host, port = _split_addr(settings.addresses[service.name])
        hosts[f"{service.name.upper()}_HOST"] = json.dumps(host)
        hosts[f"{service.name.upper()}_PORT"] = str(port)
    return string.Template(TEMPLATE.read_text()).substitute(
        ADMIN_PORT=settings.admin_port,
        GATEWAY_PORT=settings.gateway_port,
        STAT_PREFIX=STAT_PREFIX,
        LISTEN_ADDRESS=json.dumps(settings.listen_address),
        MAX_CONNECTIONS=settings.max_connections,
        REQUEST_HEADERS_TIMEOUT=f"{settings.request_headers_timeout_s:g}s",
        DESCRIPTOR_PATH=json.dumps(str(descriptor_in_config)),
        SERVICES=json.dumps(services),
        ROUTES=json.dumps(_docs_routes(str(descriptor_in_config.with_name(OPENAPI_NAME))) + _service_routes(methods)),
        JWT_PROVIDERS=json.dumps(providers),
        JWT_RULES=json.dumps(_jwt_rules(methods, list(providers))),
        LOCAL_REPLY_MAPPERS=json.dumps(_local_reply_mappers()),
        EXTRA_CLUSTERS="".join(f"  - {json.dumps(c)}\n" for c in [*extra_clusters, *_stats_clusters(settings), *otlp]),
        TRACING=tracing,
        STATS_LISTENERS="".join(f"  - {json.dumps(listener)}\n" for listener in _stats_listeners(settings)),
        **hosts,
    )


# The admin answers on 127.0.0.1 only; past any HTTP proxy of the environment.
_ADMIN = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _admin(port: int, method: str, path: str) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with _ADMIN.open(request, timeout=2) as response:
        body: bytes = response.read()
        return body


def _requests_active(admin_port: int) -> int:
    """Requests open on the gateway listener."""
    query = urlencode({"format": "json", "filter": rf"^http\.{STAT_PREFIX}\.downstream_rq_active$"})
    stats = json.loads(_admin(admin_port, "GET", f"/stats?{query}"))
    (stat,) = stats["stats"]
    return int(stat["value"])


def drain(admin_port: int, drain_seconds: float, grace_seconds: float) -> None:
    """Envoy (1.40) stops at once on SIGTERM, cutting requests in flight, so first: fail /healthz
    (readiness; from then on every response closes its connection: `connection: close` on HTTP/1.1, GOAWAY
    on HTTP/2) while still serving for drain_seconds, so that load balancers move on; then stop accepting
    connections and wait until no request is open, for at most grace_seconds. Idle connections are left
    for Envoy's exit to close."""
    print(
        f"draining: /healthz 503 for {drain_seconds:g}s, then {grace_seconds:g}s for requests in flight",
        file=sys.stderr,
        flush=True,
    )
    _admin(admin_port, "POST", "/healthcheck/fail")
    time.sleep(drain_seconds)
    # Not `?graceful`: the listeners close now, and connections still open are served to the end.
    _admin(admin_port, "POST", "/drain_listeners")
    deadline = time.monotonic() + grace_seconds
    while (still_open := _requests_active(admin_port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if still_open:
        print(f"stopping with {still_open} requests still open after {grace_seconds:g}s", file=sys.stderr, flush=True)


def run(argv: list[str], admin_port: int, drain_seconds: float, grace_seconds: float) -> int:
    """Run Envoy (`argv`, its admin on `admin_port`) until it exits; on SIGTERM or SIGINT `drain` it, then
    stop it. Envoy's exit code, 128 + N for a signal N (as a shell reports it)."""
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    envoy = subprocess.Popen(argv)
    while envoy.poll() is None and not stopping:
        time.sleep(0.1)
    if envoy.poll() is None:
        try:
            drain(admin_port, drain_seconds, grace_seconds)
        except OSError as error:  # e.g. stopped before its admin listened: nothing to drain
            print(f"not drained: {error}", file=sys.stderr, flush=True)
        finally:
            envoy.terminate()
    code = envoy.wait()
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localplus_gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="print the Envoy config rendered from the environment")
    render.add_argument("--descriptor", type=Path, default=DEFAULT_DESCRIPTOR, help="descriptor set to read")
    render.add_argument("--descriptor-in-config", help="descriptor path as Envoy will see it")
    run_envoy = commands.add_parser(
        "run",
        help="run Envoy (the command that follows) and drain it on SIGTERM: ENVOY_ADMIN_PORT, "
        "LOCALPLUS_DRAIN_SECONDS, LOCALPLUS_GRACE_SECONDS",
    )
    run_envoy.add_argument("envoy", nargs=argparse.REMAINDER, help="the Envoy command line")
    args = parser.parse_args(argv)
    if args.command == "run":
        if not args.envoy:
            parser.error("run: no Envoy command line")
        admin_port = int(os.environ.get("ENVOY_ADMIN_PORT") or GatewaySettings.admin_port)
        return run(args.envoy, admin_port, *drain_from_env())
    sys.stdout.write(
        render_envoy_config(
            args.descriptor, GatewaySettings.from_env(), descriptor_path_in_config=args.descriptor_in_config
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
