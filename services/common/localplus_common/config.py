"""Runtime settings, all from the environment (CONTRACT §2)."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from localplus_common.services import addresses_from_env

DEV_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
DEV_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:54322/postgres"


@dataclass(frozen=True)
class Settings:
    database_url: str
    jwt_secret: str
    jwks: str
    addresses: dict[str, str]  # service name -> host:port (localplus_common.services)
    db_pool_max: int
    # 0 behind PgBouncer/Supavisor in transaction mode, which cannot keep prepared statements.
    db_statement_cache_size: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        return cls(
            database_url=env.get("DATABASE_URL") or DEV_DATABASE_URL,
            jwt_secret=env.get("SUPABASE_JWT_SECRET") or DEV_JWT_SECRET,
            jwks=env.get("SUPABASE_JWKS", ""),
            addresses=addresses_from_env(env),
            db_pool_max=int(env.get("DB_POOL_MAX") or 10),
            db_statement_cache_size=int(env.get("DB_STATEMENT_CACHE_SIZE") or 100),
        )
