"""Raw SQL the way Supabase's REST runs it, for tests that go around the API: a transaction as role
`anon` or `authenticated` with `request.jwt.claims` set as PostgREST sets them, rolled back at the end.
Data is arranged (and committed) by the pool's own role, which bypasses row-level security."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from localplus_common.db import Connection


def claims_of(user_id: uuid.UUID | None, *, admin: bool = False) -> dict[str, Any]:
    if user_id is None:
        return {"role": "anon"}
    now = int(datetime.now(UTC).timestamp())
    return {
        "aud": "authenticated",
        "role": "authenticated",
        "sub": str(user_id),
        "iat": now,
        "exp": now + 3600,
        "app_metadata": {"provider": "email", **({"role": "admin"} if admin else {})},
    }


# Supabase's default privileges on a table created in `public` (CONTRACT §8), for tests showing
# that the triggers hold even where a grant would let a statement through.
SUPABASE_TABLE_GRANTS = "grant all on public.{table} to anon, authenticated"


@asynccontextmanager
async def as_caller(
    pool: asyncpg.Pool,
    user_id: uuid.UUID | None,
    *,
    admin: bool = False,
    commit: bool = False,
    grant_all_on: tuple[str, ...] = (),
) -> AsyncIterator[Connection]:
    """One transaction as the caller (anonymous when `user_id` is None), rolled back unless `commit`.

    `grant_all_on` first grants those tables to the API roles inside the same transaction, as
    Supabase's defaults would, so only policies and triggers stand between the caller and the rows.
    """
    assert not (commit and grant_all_on), "grants are for a look inside a rolled-back transaction only"
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            for table in grant_all_on:
                await conn.execute(SUPABASE_TABLE_GRANTS.format(table=table))
            await conn.execute(
                "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
                "anon" if user_id is None else "authenticated",
                json.dumps(claims_of(user_id, admin=admin)),
            )
            yield conn
        except BaseException:
            await transaction.rollback()
            raise
        if commit:
            await transaction.commit()
        else:
            await transaction.rollback()


async def new_user(pool: asyncpg.Pool) -> uuid.UUID:
    user_id = uuid.uuid4()
    await pool.execute("insert into auth.users (id, email) values ($1, $2)", user_id, f"{user_id}@example.test")
    return user_id


async def new_event(pool: asyncpg.Pool, created_by: uuid.UUID, **columns: Any) -> uuid.UUID:
    """A published public event a week from now (override any column), committed."""
    starts_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
    values: dict[str, Any] = {
        "title": "Arranged in SQL",
        "starts_at": starts_at,
        "ends_at": starts_at + timedelta(hours=3),
        "timezone": "Asia/Bangkok",
        "status": "published",
        "visibility": "public",
        **columns,
    }
    names = ["created_by", *values]
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    event_id: uuid.UUID = await pool.fetchval(
        f"insert into public.events ({', '.join(names)}) values ({placeholders}) returning id",
        created_by,
        *values.values(),
    )
    return event_id
