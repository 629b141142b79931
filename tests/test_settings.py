"""Dev defaults only in dev mode (CONTRACT §2): outside LOCALPLUS_ENV=dev a service (the ticketing service
also without Stripe's keys and its ticket signing key), the gateway renderer and the migration runner refuse
to start without their settings, exiting with one line that names what is missing, before they connect
anywhere. The real processes run here with a scrubbed environment."""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import descriptor_pb2

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.config import DEV_DATABASE_URL, DEV_JWT_SECRET, Settings
from localplus_common.services import EVENTS, SERVICES, TICKETING, Service
from localplus_dev.stack import Stack
from localplus_dev.token import mint
from localplus_ticketing.settings import (
    DEV_STRIPE_API_BASE,
    DEV_STRIPE_API_KEY,
    DEV_STRIPE_WEBHOOK_SECRET,
    DEV_TICKET_SIGNING_KEY,
    TicketingSettings,
)
from tests.service_process import SCRUBBED_ENV, running_service

ROOT = Path(__file__).resolve().parent.parent
JWT_KEYS = "SUPABASE_JWT_SECRET or SUPABASE_JWKS"
JWKS_URL = "https://project.supabase.example/auth/v1/.well-known/jwks.json"
OTHER_SECRET = "a-production-secret-that-is-not-the-published-one"


def run(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**SCRUBBED_ENV, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start prints (a SystemExit message, no traceback)."""
    assert result.returncode != 0, result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("missing settings: "), line
    return line


# --- services ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_service_refuses_to_start_without_settings(service: Service) -> None:
    line = refusal(run(service.module, {}))
    assert "DATABASE_URL" in line and JWT_KEYS in line


@pytest.mark.parametrize(
    ("env", "named", "not_named"),
    [
        ({"LOCALPLUS_ENV": "production", "SUPABASE_JWT_SECRET": OTHER_SECRET}, "DATABASE_URL", "SUPABASE"),
        ({"LOCALPLUS_ENV": "production", "DATABASE_URL": DEV_DATABASE_URL}, JWT_KEYS, "DATABASE_URL"),
        # Only exactly `dev` is dev mode.
        ({"LOCALPLUS_ENV": "development", "DATABASE_URL": DEV_DATABASE_URL}, JWT_KEYS, "DATABASE_URL"),
    ],
    ids=["no-database-url", "no-jwt-key", "not-quite-dev"],
)
def test_service_names_each_missing_setting(env: dict[str, str], named: str, not_named: str) -> None:
    line = refusal(run(EVENTS.module, env))
    assert named in line and not_named not in line


@contextmanager
def running_events(env: dict[str, str], tmp_path: Path) -> Iterator[grpc.Channel]:
    """The events service started with `env` (plus a free address), once it reports SERVING."""
    with running_service(EVENTS, env, tmp_path / "events.log") as address, grpc.insecure_channel(address) as channel:
        yield channel


def list_my_events(channel: grpc.Channel, token: str) -> None:
    stub = events_pb2_grpc.EventsServiceStub(channel)
    stub.ListMyEvents(events_pb2.ListMyEventsRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10)


DEV_TOKEN = mint(uuid.uuid4(), DEV_JWT_SECRET)


@pytest.mark.parametrize(
    "keys", [{"SUPABASE_JWKS": JWKS_URL}, {"SUPABASE_JWT_SECRET": OTHER_SECRET}], ids=["jwks-only", "own-secret"]
)
def test_service_starts_outside_dev_mode_with_its_settings(stack: Stack, keys: dict[str, str], tmp_path: Path) -> None:
    """A JWKS instead of a secret is enough; either way a token signed with the dev secret is refused."""
    with running_events({"DATABASE_URL": stack.database_url, **keys}, tmp_path) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list_my_events(channel, DEV_TOKEN)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        if "SUPABASE_JWT_SECRET" in keys:
            list_my_events(channel, mint(uuid.uuid4(), OTHER_SECRET))


def test_dev_mode_keeps_the_dev_secret(stack: Stack, tmp_path: Path) -> None:
    # DATABASE_URL is given: the dev default would be a developer's `make up`.
    with running_events({"LOCALPLUS_ENV": "dev", "DATABASE_URL": stack.database_url}, tmp_path) as channel:
        list_my_events(channel, DEV_TOKEN)


def test_dev_mode_defaults() -> None:
    settings = Settings.from_env({"LOCALPLUS_ENV": "dev", "TICKETING_ADDR": "0.0.0.0:6000"})
    assert (settings.database_url, settings.jwt_secret, settings.jwks) == (DEV_DATABASE_URL, DEV_JWT_SECRET, "")
    assert settings.addresses == {
        "events": "127.0.0.1:50051",
        "ticketing": "0.0.0.0:6000",
        "recurrence": "127.0.0.1:50053",
    }


# --- the ticketing service's own settings ------------------------------------------------------------

TICKETING_KEYS = ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "TICKET_SIGNING_KEY")
# Everything the shared settings need, and a database nothing listens on: a refusal must come before connecting.
PRODUCTION = {
    "LOCALPLUS_ENV": "production",
    "DATABASE_URL": "postgresql://postgres:postgres@127.0.0.1:1/postgres",
    "SUPABASE_JWT_SECRET": OTHER_SECRET,
}
TICKETING_VALUES = {
    "STRIPE_API_KEY": "sk_live_not_the_dev_key",
    "STRIPE_WEBHOOK_SECRET": "whsec_not_the_dev_secret",
    "TICKET_SIGNING_KEY": base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("="),
}


def test_ticketing_refuses_to_start_without_its_settings() -> None:
    line = refusal(run(TICKETING.module, PRODUCTION))
    assert all(key in line for key in TICKETING_KEYS), line
    assert "DATABASE_URL" not in line and "SUPABASE" not in line


@pytest.mark.parametrize("missing", TICKETING_KEYS)
def test_ticketing_names_each_missing_setting(missing: str) -> None:
    given = {key: value for key, value in TICKETING_VALUES.items() if key != missing}
    line = refusal(run(TICKETING.module, {**PRODUCTION, **given}))
    assert missing in line and not any(key in line for key in given), line


@pytest.mark.parametrize("key", ["REPLACE_ME", base64.urlsafe_b64encode(bytes(31)).decode(), "not base64!"])
def test_ticketing_refuses_a_malformed_signing_key_at_start(key: str) -> None:
    result = run(TICKETING.module, {**PRODUCTION, **TICKETING_VALUES, "TICKET_SIGNING_KEY": key})
    assert result.returncode != 0
    (line,) = result.stderr.splitlines()  # one line, before connecting to the database
    assert line.startswith("TICKET_SIGNING_KEY "), line


def test_ticketing_dev_mode_defaults() -> None:
    dev = TicketingSettings.from_env({"LOCALPLUS_ENV": "dev"})
    assert (dev.stripe_api_key, dev.stripe_api_base, dev.stripe_webhook_secret, dev.ticket_signing_key) == (
        DEV_STRIPE_API_KEY,
        DEV_STRIPE_API_BASE,
        DEV_STRIPE_WEBHOOK_SECRET,
        DEV_TICKET_SIGNING_KEY,
    )
    # Outside dev mode nothing is localstripe: no STRIPE_API_BASE is the real Stripe API.
    production = TicketingSettings.from_env({"LOCALPLUS_ENV": "production", **TICKETING_VALUES})
    assert production.stripe_api_base == ""
    assert production.stripe_api_key == TICKETING_VALUES["STRIPE_API_KEY"]


# --- gateway and migrations -------------------------------------------------------------------------


def jwt_providers(rendered: str) -> dict[str, dict[str, object]]:
    listener = yaml.safe_load(rendered)["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    (jwt_authn,) = (f for f in filters if f["name"] == "envoy.filters.http.jwt_authn")
    providers: dict[str, dict[str, object]] = jwt_authn["typed_config"]["providers"]
    return providers


def test_gateway_render_refuses_without_a_jwt_key() -> None:
    line = refusal(run("localplus_gateway", {}, "render"))
    assert JWT_KEYS in line


def test_gateway_render_outside_dev_mode_takes_a_jwks_alone() -> None:
    result = run("localplus_gateway", {"SUPABASE_JWKS": JWKS_URL}, "render")
    assert result.returncode == 0, result.stderr
    assert list(jwt_providers(result.stdout)) == ["supabase_jwks"]  # no HS256 provider with an empty key


def test_gateway_render_in_dev_mode_uses_the_dev_secret() -> None:
    result = run("localplus_gateway", {"LOCALPLUS_ENV": "dev"}, "render")
    assert result.returncode == 0, result.stderr
    assert list(jwt_providers(result.stdout)) == ["supabase"]
    assert base64.urlsafe_b64encode(DEV_JWT_SECRET.encode()).rstrip(b"=").decode() in result.stdout


def test_migrate_refuses_without_a_database_url() -> None:
    assert "DATABASE_URL" in refusal(run("localplus_common.migrate", {}))


# --- the one list of services -----------------------------------------------------------------------


def test_the_list_matches_the_protos() -> None:
    """Every `localplus.<name>.v1` service in the descriptor set is listed, under that name, and no other."""
    files = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "descriptor.pb").read_bytes()).file
    in_protos = {f"{f.package}.{s.name}" for f in files if f.package.startswith("localplus.") for s in f.service}
    assert in_protos == {service.grpc_service for service in SERVICES}
    for service in SERVICES:
        assert service.grpc_service.startswith(f"localplus.{service.name}.v1.")
        assert (ROOT / "services" / service.name / service.module / "__main__.py").is_file()
    assert len({s.port for s in SERVICES}) == len({s.addr_var for s in SERVICES}) == len(SERVICES)
