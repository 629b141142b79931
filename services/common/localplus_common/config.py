"""Runtime settings, all from the environment (CONTRACT §2).

Only dev mode (LOCALPLUS_ENV=dev, which the Makefile sets) falls back to the published dev database URL
and JWT secret. Anywhere else a missing one stops the process at start, naming it: a misnamed Secret must
not leave a service accepting tokens that anyone can mint.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from localplus_common.services import addresses_from_env
from localplus_common.workers import available_cpus

DEV_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
DEV_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:54322/postgres"
JWT_KEY_VARS = "SUPABASE_JWT_SECRET or SUPABASE_JWKS"


def dev_mode(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("LOCALPLUS_ENV") == "dev"


def database_url_from_env(env: Mapping[str, str] = os.environ) -> str:
    """DATABASE_URL, in dev mode defaulting to the embedded Postgres; "" if unset outside dev mode."""
    return env.get("DATABASE_URL") or (DEV_DATABASE_URL if dev_mode(env) else "")


def jwt_keys_from_env(env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(HS256 secret, JWKS file or URL); in dev mode the secret defaults to the dev one. "" means unset."""
    secret = env.get("SUPABASE_JWT_SECRET") or (DEV_JWT_SECRET if dev_mode(env) else "")
    return secret, env.get("SUPABASE_JWKS", "")


def drain_from_env(env: Mapping[str, str] = os.environ) -> tuple[float, float]:
    """(LOCALPLUS_DRAIN_SECONDS, LOCALPLUS_GRACE_SECONDS): how a service or the gateway stops on SIGTERM.
    For drain seconds it reports itself unhealthy while still serving (so that probes, load balancers and
    health-checking clients move on), then refuses new connections and gives requests in flight grace seconds."""
    return float(env.get("LOCALPLUS_DRAIN_SECONDS") or 0), float(env.get("LOCALPLUS_GRACE_SECONDS") or 5)


def exit_if_missing(settings: Mapping[str, str]) -> None:
    """Stop the process with one line (no traceback) naming each setting whose value is empty."""
    missing = [name for name, value in settings.items() if not value]
    if missing:
        raise SystemExit(f"missing settings: {'; '.join(missing)} (only LOCALPLUS_ENV=dev has defaults)")


@dataclass(frozen=True)
class Settings:
    database_url: str
    # A streaming replica for reads that may lag a moment (DATABASE_READ_URL); "" for none.
    database_read_url: str
    jwt_secret: str  # "" when only SUPABASE_JWKS is set
    jwks: str
    addresses: dict[str, str]  # service name -> host:port (localplus_common.services)
    db_pool_max: int
    # 0 behind PgBouncer/Supavisor in transaction mode, which cannot keep prepared statements.
    db_statement_cache_size: int
    # Processes serving the service (localplus_common.workers); each has its own pool of db_pool_max.
    workers: int = 1
    # On SIGTERM (drain_from_env): NOT_SERVING for drain_seconds, then grace_seconds for calls in flight.
    drain_seconds: float = 0.0
    grace_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        database_url = database_url_from_env(env)
        jwt_secret, jwks = jwt_keys_from_env(env)
        drain_seconds, grace_seconds = drain_from_env(env)
        exit_if_missing({"DATABASE_URL": database_url, JWT_KEY_VARS: jwt_secret or jwks})
        return cls(
            database_url=database_url,
            database_read_url=env.get("DATABASE_READ_URL", ""),
            jwt_secret=jwt_secret,
            jwks=jwks,
            addresses=addresses_from_env(env),
            db_pool_max=int(env.get("DB_POOL_MAX") or 10),
            db_statement_cache_size=int(env.get("DB_STATEMENT_CACHE_SIZE") or 100),
            # Empty: one per CPU this process may use.
            workers=_positive(env, "LOCALPLUS_WORKERS", available_cpus()),
            drain_seconds=drain_seconds,
            grace_seconds=grace_seconds,
        )


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = int(env.get(name) or default)
    if value < 1:
        raise SystemExit(f"{name} must be at least 1 (empty: one per CPU)")
    return value
