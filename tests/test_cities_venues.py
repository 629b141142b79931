"""Cities and venues (Phase 4): the seeded cities, venues added by admins and by a business's
partners, events at a venue taking its city and time zone, `city=` filters that know their cities,
row-level security that stays scoped by business whatever the city, and the backfill of existing
events from their free-text city."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from localplus_common.migrate import load_migrations, migrate
from localplus_dev.stack import Stack
from tests.sql_callers import as_caller
from tests.support import User, create_user, service_role_token

BACKEND = {"authorization": f"Bearer {service_role_token()}"}
CITIES_MIGRATION = "20261204000000"


async def business_of(db: asyncpg.Pool, partner: User, role: str = "owner") -> str:
    business_id = await db.fetchval("insert into public.businesses (name) values ('Riverside Café') returning id")
    await db.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, $3)", business_id, partner.id, role
    )
    return str(business_id)


async def add_venue(api: httpx.AsyncClient, who: User, **venue: Any) -> httpx.Response:
    body = {"city": "bangkok", "name": "Riverside Stage", "address": "1 Charoen Krung Rd"} | venue
    return await api.post("/api/venues", json=body, headers=who.headers)


async def test_the_seeded_cities_are_listed(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/cities", params={"page_size": 100})
    assert response.status_code == 200, response.text
    cities = {city["slug"]: city for city in response.json()["cities"]}
    assert cities["bangkok"] | {"id": ""} == {
        "id": "",
        "slug": "bangkok",
        "name": "Bangkok",
        "country": "TH",
        "timezone": "Asia/Bangkok",
        "latitude": 13.7563,
        "longitude": 100.5018,
    }
    assert {"chiang-mai", "singapore"} <= set(cities)


async def test_who_may_add_a_venue(api: httpx.AsyncClient, db: asyncpg.Pool, admin: User) -> None:
    owner, editor, viewer, stranger = [await create_user(db) for _ in range(4)]
    business = await business_of(db, owner)
    await db.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, 'editor'), ($1, $3, 'viewer')",
        uuid.UUID(business),
        editor.id,
        viewer.id,
    )
    for who in (owner, editor):
        created = await add_venue(api, who, business_id=business, latitude=13.72, longitude=100.51)
        assert created.status_code == 200, created.text
        assert created.json()["city"] == "bangkok" and created.json()["business_id"] == business
    for who in (viewer, stranger):
        assert (await add_venue(api, who, business_id=business)).status_code == 403
    assert (await add_venue(api, stranger)).status_code == 400  # partners name their business
    assert (await add_venue(api, admin)).status_code == 200  # admins may add venues of no business
    unknown = await add_venue(api, owner, business_id=business, city="atlantis")
    assert unknown.status_code == 400 and "atlantis" in unknown.json()["message"]
    assert unknown.json()["details"][1]["field_violations"][0]["field"] == "venue.city"
    assert (await api.post("/api/venues", json={"city": "bangkok", "name": "x"})).status_code == 401
    listed = await api.get("/api/venues", params={"business_id": business})
    assert {v["name"] for v in listed.json()["venues"]} == {"Riverside Stage"}
    assert len(listed.json()["venues"]) == 2


async def test_an_event_at_a_venue_takes_its_city_and_time_zone(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner = await create_user(db)
    business = await business_of(db, owner)
    venue = (await add_venue(api, owner, business_id=business, latitude=13.7246, longitude=100.5133)).json()
    body = {
        "title": "Jazz at the venue",
        "business_id": business,
        "venue_id": venue["id"],
        "starts_at": "2027-03-01T12:00:00Z",
        "ends_at": "2027-03-01T15:00:00Z",
    }
    created = await api.post("/api/events", json=body, headers=owner.headers)
    assert created.status_code == 200, created.text
    event = created.json()
    assert (event["timezone"], event["city"], event["venue_id"]) == ("Asia/Bangkok", "bangkok", venue["id"])
    assert (event["latitude"], event["longitude"], event["venue_name"]) == (13.7246, 100.5133, "Riverside Stage")
    # What the request says wins over the venue.
    elsewhere = await api.post(
        "/api/events", json=body | {"timezone": "Asia/Singapore", "venue_name": "Side room"}, headers=owner.headers
    )
    assert (elsewhere.json()["timezone"], elsewhere.json()["venue_name"]) == ("Asia/Singapore", "Side room")
    missing = await api.post("/api/events", json=body | {"venue_id": str(uuid.uuid4())}, headers=owner.headers)
    assert missing.status_code == 400 and missing.json()["details"][1]["field_violations"][0]["field"] == "venue_id"

    approved = await api.post(f"/api/events/{event['id']}:approve", json={}, headers=BACKEND)
    assert approved.status_code == 200, approved.text
    # Bangkok is busy in this test session: look where this event starts.
    window: dict[str, str | int] = {
        "starts_after": "2027-03-01T11:59:00Z",
        "starts_before": "2027-03-01T12:01:00Z",
        "page_size": 100,
    }
    in_bangkok = await api.get("/api/events", params={**window, "city": "bangkok"})
    assert event["id"] in {e["id"] for e in in_bangkok.json()["events"]}
    in_singapore = await api.get("/api/events", params={**window, "city": "singapore"})
    assert event["id"] not in {e["id"] for e in in_singapore.json()["events"]}
    atlantis = await api.get("/api/events", params={"city": "atlantis"})
    assert atlantis.status_code == 400, atlantis.text
    assert "atlantis" in atlantis.json()["message"]


async def test_partners_never_see_another_business_drafts_whatever_the_city(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    ours, theirs = await create_user(db), await create_user(db)
    await business_of(db, ours)
    their_business = await business_of(db, theirs)
    body = {
        "title": "Their draft in Bangkok",
        "business_id": their_business,
        "city": "bangkok",
        "starts_at": "2027-03-01T12:00:00Z",
        "ends_at": "2027-03-01T15:00:00Z",
        "timezone": "Asia/Bangkok",
    }
    draft = (await api.post("/api/events", json=body, headers=theirs.headers)).json()
    assert (await api.get(f"/api/events/{draft['id']}", headers=ours.headers)).status_code == 404
    for params in ({"city": "bangkok"}, {"city": "bangkok", "q": "draft"}, {}):
        listed = await api.get("/api/events", params=params | {"page_size": 100}, headers=ours.headers)
        assert draft["id"] not in {e["id"] for e in listed.json()["events"]}
    bangkok = await db.fetchval("select id from public.cities where slug = 'bangkok'")
    async with as_caller(db, ours.id) as conn:
        seen = await conn.fetch("select id from public.events where city_id = $1 and status = 'draft'", bangkok)
        assert uuid.UUID(draft["id"]) not in {row["id"] for row in seen}
    async with as_caller(db, theirs.id) as conn:
        seen = await conn.fetch("select id from public.events where city_id = $1 and status = 'draft'", bangkok)
        assert uuid.UUID(draft["id"]) in {row["id"] for row in seen}


BACKFILL_EVENTS = 100_000


async def test_the_backfill_resolves_free_text_cities_on_a_populated_database(
    stack: Stack, db: asyncpg.Pool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """100,000 events made before cities existed: their free-text city (by slug or name, any case) or,
    without one, their coordinates give them a city; text that names no city stays as it is; versions
    (etags) do not move. Timed, for the record."""
    name = f"lp_backfill_{uuid.uuid4().hex[:12]}"
    await db.execute(f'create database "{name}"')
    url = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        before = tmp_path / "before"
        before.mkdir()
        for migration in load_migrations():
            if migration.version < CITIES_MIGRATION:
                (before / f"{migration.version}_{migration.name}.sql").write_text(migration.sql)
        await migrate(url, before)
        conn = await asyncpg.connect(url)
        try:
            user_id = uuid.uuid4()
            await conn.execute("insert into auth.users (id) values ($1)", user_id)
            await conn.execute(
                """
                insert into public.events (created_by, title, starts_at, ends_at, timezone, city, latitude, longitude)
                select $1, 'Event ' || n, now() + n * interval '1 minute',
                       now() + n * interval '1 minute' + interval '1 hour', 'Asia/Bangkok',
                       case n % 4 when 0 then 'Bangkok' when 1 then 'chiang mai' when 2 then '' else 'Nowhere Town' end,
                       case when n % 4 = 2 then 13.75 end, case when n % 4 = 2 then 100.50 end
                  from generate_series(1, $2) as n
                """,
                user_id,
                BACKFILL_EVENTS,
            )
            versions = await conn.fetchval("select sum(version) from public.events")
            started = time.monotonic()
            applied = await migrate(url)
            took = time.monotonic() - started
            with capsys.disabled():
                print(f"\nmigrations {', '.join(applied)} over {BACKFILL_EVENTS:,} events: {took:.1f} s")
            assert CITIES_MIGRATION in applied
            rows = await conn.fetch(
                "select coalesce(c.slug, '-') as city_id_slug, e.city, count(*)::integer as n from public.events e "
                "left join public.cities c on c.id = e.city_id group by 1, 2"
            )
            counts = {(row["city_id_slug"], row["city"]): row["n"] for row in rows}
            quarter = BACKFILL_EVENTS // 4
            assert counts == {
                ("bangkok", "bangkok"): 2 * quarter,  # "Bangkok", and the coordinates inside it
                ("chiang-mai", "chiang-mai"): quarter,  # by the city's name
                ("-", "Nowhere Town"): quarter,
            }
            assert await conn.fetchval("select sum(version) from public.events") == versions
        finally:
            await conn.close()
    finally:
        await db.execute(f'drop database "{name}" with (force)')
