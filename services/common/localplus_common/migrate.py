"""Apply sql/migrations/*.sql in order (`make migrate`).

Each file runs in its own transaction under a session advisory lock, so two runners at once are
safe: the second waits, then finds nothing left to do. Applied files are recorded with a checksum,
and an applied file that was edited afterwards stops the run instead of drifting silently.

`--check` exits 1 while any of this code's migrations is not applied, and `--wait` polls until they
all are (k8s runs it as each Deployment's init container, so that no pod serves on an older schema
than its code expects while the migration Job is still running). A database ahead of the code (a newer
image migrated it during a rolling update) passes: migrations only add.
"""

import argparse
import asyncio
import hashlib
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from localplus_common.config import database_url_from_env, exit_if_missing

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "sql" / "migrations"
FILE_NAME = re.compile(r"^(\d{14})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every runner.
ADVISORY_LOCK_KEY = 0x4C50_4D49_4752  # "LPMIGR"

# Files revised in place after databases applied them, with the checksums of their earlier texts.
# Allowed only where the revision leaves an already migrated database as it is (it fixes how the file
# applies elsewhere); such a database is up to date and its record takes the new checksum.
REVISED: dict[str, frozenset[str]] = {
    # The shim's `create ... if not exists` in `auth` became guarded blocks: on Supabase `postgres` may
    # no longer create there (April 2025), and `if not exists` checks that before looking.
    "20261125000000": frozenset({"ba10000df034779f8ca53f187cf3455534c3f210a08f435b1433047e3e0193f6"}),
}

log = logging.getLogger(__name__)


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: expected <yyyymmddhhmmss>_<name>.sql")
        migrations.append(Migration(match[1], match[2], path.read_text()))
    return migrations


async def migrate(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is pending; return the versions applied now."""
    migrations = load_migrations(directory)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("select pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            await conn.execute(
                """
                create schema if not exists localplus;
                create table if not exists localplus.schema_migrations (
                  version text primary key,
                  name text not null,
                  checksum text not null,
                  applied_at timestamptz not null default now()
                );
                """
            )
            applied = {
                row["version"]: row["checksum"]
                for row in await conn.fetch("select version, checksum from localplus.schema_migrations")
            }
            done = []
            for migration in migrations:
                recorded = applied.get(migration.version)
                if recorded is not None:
                    if recorded in REVISED.get(migration.version, frozenset()):
                        await conn.execute(
                            "update localplus.schema_migrations set checksum = $2 where version = $1",
                            migration.version,
                            migration.checksum,
                        )
                        log.info("%s_%s: recorded its revised text", migration.version, migration.name)
                    elif recorded != migration.checksum:
                        raise MigrationError(
                            f"{migration.version}_{migration.name}.sql was edited after it was applied; "
                            "add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "insert into localplus.schema_migrations (version, name, checksum) values ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                log.info("applied %s_%s", migration.version, migration.name)
                done.append(migration.version)
            return done
        finally:
            await conn.execute("select pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def pending(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """The versions in `directory` that the database has not recorded (all of them before the first run)."""
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("select to_regclass('localplus.schema_migrations')") is None:
            applied: set[str] = set()
        else:
            applied = {row["version"] for row in await conn.fetch("select version from localplus.schema_migrations")}
    finally:
        await conn.close()
    return [m.version for m in load_migrations(directory) if m.version not in applied]


async def wait_until_applied(
    database_url: str, give_up_after: float, interval: float = 2.0, directory: Path = MIGRATIONS_DIR
) -> list[str]:
    """Poll until nothing is pending; return what still is after `give_up_after` seconds. A database
    that does not answer yet counts as pending: it may be starting, as the Job's may be."""
    deadline = time.monotonic() + give_up_after
    while True:
        try:
            missing = await pending(database_url, directory)
        except (OSError, asyncpg.PostgresError) as error:
            log.info("waiting for the database: %s", error)
            missing = [m.version for m in load_migrations(directory)]
        if not missing or time.monotonic() >= deadline:
            return missing
        log.info("waiting for %d migrations, from %s", len(missing), missing[0])
        await asyncio.sleep(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=database_url_from_env(), help="default: DATABASE_URL")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="apply nothing; exit 1 if a migration is pending")
    mode.add_argument("--wait", action="store_true", help="apply nothing; wait until none is pending")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (default 300)")
    args = parser.parse_args()
    exit_if_missing({"DATABASE_URL or --database-url": args.database_url})
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check or args.wait:
        timeout = args.timeout if args.wait else 0.0
        missing = asyncio.run(wait_until_applied(args.database_url, timeout))
        if missing:
            sys.exit(f"migrations pending: {', '.join(missing)}")
        print("migrations: database up to date")
        return
    applied = asyncio.run(migrate(args.database_url))
    print(f"migrations: {len(applied)} applied, database up to date")


if __name__ == "__main__":
    main()
