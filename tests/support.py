"""Helpers the tests share: people with tokens, event payloads, a JSON client for the gateway."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from localplus_common.config import DEV_JWT_SECRET
from localplus_dev.token import mint


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    token: str
    admin: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]


async def create_user(db: asyncpg.Pool, *, admin: bool = False) -> User:
    user_id = uuid.uuid4()
    await db.execute(
        "insert into auth.users (id, email, raw_app_meta_data) values ($1, $2, $3::jsonb)",
        user_id,
        f"{user_id}@example.test",
        '{"role": "admin"}' if admin else "{}",
    )
    return User(user_id, mint(user_id, DEV_JWT_SECRET, admin=admin), admin)


def service_role_token() -> str:
    return mint(None, DEV_JWT_SECRET, role="service_role")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_body(**overrides: Any) -> dict[str, Any]:
    """A valid event a week from now; override any JSON field."""
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
    body: dict[str, Any] = {
        "title": "Jazz by the river",
        "description": "An evening of live jazz.",
        "category": "music",
        "tags": ["jazz", "live"],
        "starts_at": iso(starts),
        "ends_at": iso(starts + timedelta(hours=3)),
        "timezone": "Asia/Bangkok",
        "venue_name": "Riverside Stage",
        "address": "1 Charoen Krung Rd, Bangkok",
        "latitude": 13.7246,
        "longitude": 100.5133,
    }
    body.update(overrides)
    return body


async def create_event(api: httpx.AsyncClient, owner: User, **overrides: Any) -> dict[str, Any]:
    """Create an event as `owner`; `status=EVENT_STATUS_PUBLISHED` also has it approved by the
    backend (service_role), since only platform admins publish (Phase 1 moderation)."""
    status = overrides.pop("status", "EVENT_STATUS_DRAFT")
    response = await api.post("/api/events", json=event_body(**overrides), headers=owner.headers)
    assert response.status_code == 200, response.text
    event: dict[str, Any] = response.json()
    if status == "EVENT_STATUS_DRAFT":
        return event
    assert status == "EVENT_STATUS_PUBLISHED", f"create_event cannot make a {status} event"
    backend = {"authorization": f"Bearer {service_role_token()}"}
    approved = await api.post(f"/api/events/{event['id']}:approve", json={}, headers=backend)
    assert approved.status_code == 200, approved.text
    published: dict[str, Any] = approved.json()["event"]
    return published


async def add_city(db: asyncpg.Pool | asyncpg.Connection, slug: str) -> str:
    """A city of a test's own (a fresh slug), so that its events are the only ones a `city=` filter lists."""
    await db.execute(
        "insert into public.cities (slug, name, country, timezone, latitude, longitude, bounds) "
        "values ($1, $1, 'TH', 'Asia/Bangkok', 0, 0, box(point(0, 0), point(0, 0)))",
        slug,
    )
    return slug


async def registration_statuses(db: asyncpg.Pool, event_id: str, people: list[User]) -> list[str]:
    """The stored status of each person's registration for the event, in the order of `people`."""
    rows = await db.fetch(
        "select status from public.event_participants where event_id = $1 and user_id = any($2::uuid[]) "
        "order by array_position($2::uuid[], user_id)",
        uuid.UUID(event_id),
        [person.id for person in people],
    )
    return [row["status"] for row in rows]


@asynccontextmanager
async def businesses_hidden(db: asyncpg.Pool) -> AsyncIterator[None]:
    """While inside: `businesses` shows the API roles no row, as LocalPlus's own row-level security on
    Supabase may (the table is not the engine's), so only what the engine itself holds answers for them."""
    policy = "create policy businesses_hidden_by_its_owner on public.businesses as restrictive for select"
    await db.execute(f"{policy} to anon, authenticated using (false)")
    try:
        yield
    finally:
        await db.execute("drop policy businesses_hidden_by_its_owner on public.businesses")


async def lock_waiters(
    db: asyncpg.Pool | asyncpg.Connection,
    *,
    pid: int | None = None,
    query_like: str | None = None,
    at_least: int = 1,
    seconds: float = 5.0,
) -> int:
    """How many backends wait for a lock (only `pid`, or only those running a statement like
    `query_like`), asked until `at_least` do or `seconds` pass: a race test holds a lock until the other
    side is seen waiting for it. `db` must not be inside a transaction, which would see
    pg_stat_activity as it was when first read."""
    deadline = time.monotonic() + seconds
    while True:
        waiting: int = await db.fetchval(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
            " and ($1::int is null or pid = $1) and ($2::text is null or query ilike $2)",
            pid,
            query_like,
        )
        if waiting >= at_least or time.monotonic() > deadline:
            return waiting
        await asyncio.sleep(0.05)
