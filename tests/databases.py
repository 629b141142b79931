"""The Postgres servers the suite runs its SQL-level tests on, one of them shaped like a hosted
Supabase project by `tests/supabase/*.sql`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg

SUPABASE_SQL = Path(__file__).parent / "supabase"
# The `database_url` and `server` fixtures' parameters.
BARE_SERVERS = ["embedded", "system15"]
SERVERS = [*BARE_SERVERS, "supabase15"]


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name`."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Server:
    """A Postgres server: `url` is the role migrations and the services connect as (a superuser on a
    bare Postgres, `postgres` on the Supabase-shaped one), `admin_url` a superuser."""

    url: str
    admin_url: str
    supabase: bool = False

    async def create_database(self, name: str) -> str:
        """An empty database (with a Supabase project's shape on that server), as a URL for `url`'s role."""
        await execute(self.admin_url, f'create database "{name}"')
        if self.supabase:
            await execute(with_database(self.admin_url, name), (SUPABASE_SQL / "database.sql").read_text())
        return with_database(self.url, name)

    async def drop_database(self, name: str) -> None:
        await execute(self.admin_url, f'drop database if exists "{name}" with (force)')


async def shape_like_supabase(admin_url: str) -> None:
    """Supabase's roles on a fresh cluster whose superuser is `supabase_admin`, and its database shape
    on the `postgres` database."""
    await execute(admin_url, (SUPABASE_SQL / "cluster.sql").read_text())
    await execute(admin_url, (SUPABASE_SQL / "database.sql").read_text())
