"""`python -m localplus_common.migrate --check / --wait` (k8s: each Deployment's init container), on each
test server in a throwaway database: a service's pod must not start serving on an older schema than its
code expects while the migration Job is still running.

- `--check` fails on an unmigrated database, naming what is pending, and passes once it is migrated, and
  on a database ahead of the code;
- `--wait` keeps waiting while migrations are pending (also while the database does not answer) and
  exits 0 as soon as the migration runner has applied them; it gives up, non-zero, after `--timeout`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from localplus_common.migrate import load_migrations, migrate
from localplus_dev.postgres import free_port
from tests.databases import Server

VERSIONS = [m.version for m in load_migrations()]


@pytest.fixture
async def fresh_db(server: Server) -> AsyncIterator[str]:
    name = f"lp_migrate_wait_{uuid.uuid4().hex[:12]}"
    yield await server.create_database(name)
    await server.drop_database(name)


def migrate_cli(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "localplus_common.migrate", "--database-url", url, *args]


async def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, migrate_cli(url, *args), capture_output=True, text=True, timeout=120)


async def test_check_fails_until_migrated(fresh_db: str) -> None:
    before = await run_cli(fresh_db, "--check")
    assert before.returncode == 1, before.stdout + before.stderr
    assert f"migrations pending: {VERSIONS[0]}" in before.stderr and VERSIONS[-1] in before.stderr
    await migrate(fresh_db)
    after = await run_cli(fresh_db, "--check")
    assert after.returncode == 0, after.stderr
    assert "up to date" in after.stdout


async def test_check_passes_on_a_database_ahead_of_the_code(fresh_db: str) -> None:
    await migrate(fresh_db)
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute(
            "insert into localplus.schema_migrations (version, name, checksum) values ('99991231000000', 'newer', 'x')"
        )
    finally:
        await conn.close()
    result = await run_cli(fresh_db, "--check")
    assert result.returncode == 0, result.stderr


async def test_check_fails_while_the_last_migration_is_missing(fresh_db: str) -> None:
    await migrate(fresh_db)
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute("delete from localplus.schema_migrations where version = $1", VERSIONS[-1])
    finally:
        await conn.close()
    result = await run_cli(fresh_db, "--check")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"migrations pending: {VERSIONS[-1]}")


async def test_wait_returns_once_the_runner_has_applied_everything(fresh_db: str) -> None:
    waiter = await asyncio.create_subprocess_exec(
        *migrate_cli(fresh_db, "--wait", "--timeout", "300"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # Still waiting: nothing is applied (it polls every 2 s, so it has looked a few times by now).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter.wait()), timeout=5)
        await migrate(fresh_db)
        stdout, stderr = await asyncio.wait_for(waiter.communicate(), timeout=60)
    finally:
        if waiter.returncode is None:
            waiter.kill()
            await waiter.wait()
    assert waiter.returncode == 0, stderr.decode()
    assert "up to date" in stdout.decode()
    assert "waiting for" in stderr.decode()


async def test_wait_gives_up_after_its_timeout(fresh_db: str) -> None:
    result = await run_cli(fresh_db, "--wait", "--timeout", "1")
    assert result.returncode == 1
    assert f"migrations pending: {VERSIONS[0]}" in result.stderr


def test_wait_counts_an_unreachable_database_as_pending() -> None:
    url = f"postgresql://postgres:postgres@127.0.0.1:{free_port()}/postgres"
    result = subprocess.run(migrate_cli(url, "--wait", "--timeout", "3"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "waiting for the database" in result.stderr
    assert f"migrations pending: {VERSIONS[0]}" in result.stderr
