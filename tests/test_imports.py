"""Scraper imports (Phase 3, POST /api/imports for service_role): new items become events waiting for
review, unchanged ones are no-ops, changed ones update their event, bad ones are reported without
stopping the batch, and likely duplicates of events we have wait for an admin's decision."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.dedup import labelled_pairs, sighting
from localplus_dev.stack import Stack
from localplus_events.dedup import evaluate
from tests.support import User, create_event, create_user, iso, service_role_token

BACKEND = {"authorization": f"Bearer {service_role_token()}"}
Json = dict[str, Any]


def item(**overrides: Any) -> Json:
    """A scraped item of its own: a start on a day of its own, so that items do not duplicate each other."""
    starts = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(
        days=60 + secrets.randbelow(20_000)
    )
    body: Json = {
        "source": "bangkok-listings",
        "external_id": str(uuid.uuid4()),
        "url": "https://listings.example/e/1",
        "title": f"Harbour Lights Concert {uuid.uuid4().hex[:6]}",
        "description": "An evening by the water.",
        "starts_at": iso(starts),
        "ends_at": iso(starts + timedelta(hours=2)),
        "timezone": "Asia/Bangkok",
        "venue_name": "Pier 9",
        "latitude": 13.72,
        "longitude": 100.51,
        "price_minor": "50000",
        "currency": "THB",
        "raw": {"scraped": "as is", "id": 1},
    }
    return body | overrides


async def send(api: httpx.AsyncClient, *items: Json) -> list[Json]:
    response = await api.post("/api/imports", json={"items": list(items)}, headers=BACKEND)
    assert response.status_code == 200, response.text
    results: list[Json] = response.json()["results"]
    return results


async def test_new_unchanged_changed_and_bad_items(api: httpx.AsyncClient, db: asyncpg.Pool, admin: User) -> None:
    new = item()
    [created] = await send(api, new)
    assert created["result"] == "IMPORT_RESULT_CREATED" and created["event_id"]
    event = (await api.get(f"/api/events/{created['event_id']}", headers=admin.headers)).json()
    assert (event["status"], event["source"], event["title"]) == (
        "EVENT_STATUS_PENDING_REVIEW",
        new["source"],
        new["title"],
    )
    queue = await api.get(
        "/api/moderation/events", params={"source": new["source"], "page_size": 100}, headers=admin.headers
    )
    assert created["event_id"] in {e["id"] for e in queue.json()["events"]}

    [again] = await send(api, new)
    assert again["result"] == "IMPORT_RESULT_UNCHANGED" and again["event_id"] == created["event_id"]
    [changed] = await send(api, new | {"title": new["title"] + " (moved indoors)"})
    assert changed["result"] == "IMPORT_RESULT_UPDATED" and changed["event_id"] == created["event_id"]
    event = (await api.get(f"/api/events/{created['event_id']}", headers=admin.headers)).json()
    assert event["title"].endswith("(moved indoors)")

    batch = [
        item(title=""),
        item(timezone="Mars/Olympus"),
        item(starts_at="2027-01-01T10:00:00Z", ends_at="2027-01-01T09:00:00Z"),
        item(source="Not A Source!"),
        good := item(),
    ]
    results = await send(api, *batch)
    assert [r["result"] for r in results] == ["IMPORT_RESULT_REJECTED"] * 4 + ["IMPORT_RESULT_CREATED"]
    assert all(r["error"] for r in results[:4]) and not results[4]["error"]
    assert results[4]["external_id"] == good["external_id"]


async def test_an_unreadable_item_is_answered_under_its_own_external_id(api: httpx.AsyncClient) -> None:
    no_start = {k: v for k, v in item().items() if k != "starts_at"}
    bad_source = item(source="Not A Source!")
    results = await send(api, no_start, bad_source)
    assert [(r["external_id"], r["result"]) for r in results] == [
        (no_start["external_id"], "IMPORT_RESULT_REJECTED"),
        (bad_source["external_id"], "IMPORT_RESULT_REJECTED"),
    ]
    assert "starts_at" in results[0]["error"] and "source" in results[1]["error"]


async def test_prices_and_currencies_are_checked_as_for_ticket_types(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    not_a_code = item(currency="XYZ")
    a_name = item(currency="baht")
    negative = item(price_minor="-5")
    too_much = item(price_minor="100000000001")
    free, no_price = item(price_minor="0"), item(price_minor=None, currency="")
    lower_case = item(currency="thb")  # as Stripe writes codes
    results = await send(api, not_a_code, a_name, negative, too_much, free, no_price, lower_case)
    assert [r["result"] for r in results] == ["IMPORT_RESULT_REJECTED"] * 4 + ["IMPORT_RESULT_CREATED"] * 3
    assert all("ISO 4217" in r["error"] for r in results[:2]), results
    assert all("price_minor must be between 0 and 100,000,000,000" in r["error"] for r in results[2:4]), results
    refused = [i["external_id"] for i in (not_a_code, a_name, negative, too_much)]
    assert await db.fetchval("select count(*) from public.scraper_imports where external_id = any($1)", refused) == 0
    kept = await db.fetchval(
        "select item ->> 'currency' from public.scraper_imports where external_id = $1", lower_case["external_id"]
    )
    assert kept == "THB"


async def test_only_the_backend_imports(api: httpx.AsyncClient, user: User, admin: User) -> None:
    for headers, status in (({}, 401), (user.headers, 403), (admin.headers, 403)):
        response = await api.post("/api/imports", json={"items": [item()]}, headers=headers)
        assert response.status_code == status, response.text


async def test_sending_the_same_batch_twice_at_once_makes_one_event_per_item(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    batch = [item() for _ in range(5)]
    first, second = await asyncio.gather(send(api, *batch), send(api, *batch))
    for one, other in zip(first, second, strict=True):
        assert {one["result"], other["result"]} <= {"IMPORT_RESULT_CREATED", "IMPORT_RESULT_UNCHANGED"}
        assert one["event_id"] == other["event_id"]
    ids = [i["external_id"] for i in batch]
    count = await db.fetchval(
        "select count(*) from public.scraper_imports where source = 'bangkok-listings' and external_id = any($1)", ids
    )
    assert count == 5


async def test_likely_duplicates_wait_for_an_admin(api: httpx.AsyncClient, db: asyncpg.Pool, admin: User) -> None:
    partner = await create_user(db)
    starts = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=40)
    title = f"Moonlight Jazz Night {uuid.uuid4().hex[:4]}"
    ours = await create_event(
        api,
        partner,
        status="EVENT_STATUS_PUBLISHED",
        title=title,
        venue_name="Riverside Stage",
        latitude=13.7246,
        longitude=100.5133,
        starts_at=iso(starts),
        ends_at=iso(starts + timedelta(hours=3)),
    )
    same = item(
        title=title.upper() + "!!",
        venue_name="The Riverside Stage",
        latitude=13.7249,
        longitude=100.5131,
        starts_at=iso(starts + timedelta(minutes=30)),
        ends_at=iso(starts + timedelta(hours=3)),
    )
    next_week = same | {
        "external_id": str(uuid.uuid4()),
        "starts_at": iso(starts + timedelta(days=7)),
        "ends_at": iso(starts + timedelta(days=7, hours=3)),
    }
    # Another scraper lists the same night as the first one, in the same batch.
    elsewhere = next_week | {"source": "thai-events", "external_id": "te-1", "title": title + " (Riverside)"}
    duplicate, created, twin = await send(api, same, next_week, elsewhere)
    assert duplicate["result"] == "IMPORT_RESULT_DUPLICATE" and duplicate["duplicate_of"] == ours["id"]
    assert 0.78 <= duplicate["score"] <= 1 and not duplicate["event_id"]
    assert created["result"] == "IMPORT_RESULT_CREATED"  # the same venue another night is another event
    assert twin["result"] == "IMPORT_RESULT_DUPLICATE" and twin["duplicate_of"] == created["event_id"]

    queue = await api.get("/api/moderation/imports", params={"page_size": 100}, headers=admin.headers)
    assert queue.status_code == 200, queue.text
    waiting = {entry["item"]["external_id"]: entry for entry in queue.json()["imports"]}
    entry = waiting[same["external_id"]]
    assert entry["status"] == "IMPORT_STATUS_DUPLICATE" and entry["candidate"]["id"] == ours["id"]
    assert entry["item"]["venue_name"] == "The Riverside Stage" and entry["item"]["raw"] == same["raw"]
    assert (await api.get("/api/moderation/imports", headers=partner.headers)).status_code == 403

    merged = await api.post(
        f"/api/moderation/imports/{entry['id']}:resolve",
        json={"decision": "IMPORT_DECISION_MERGE"},
        headers=admin.headers,
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["scraper_import"]["status"] == "IMPORT_STATUS_MERGED"
    assert merged.json()["scraper_import"]["event_id"] == ours["id"]
    again = await api.post(
        f"/api/moderation/imports/{entry['id']}:resolve",
        json={"decision": "IMPORT_DECISION_REJECT"},
        headers=admin.headers,
    )
    assert again.status_code == 400 and again.json()["details"][0]["reason"] == "INVALID_STATE"

    kept_entry = waiting[elsewhere["external_id"]]
    kept = await api.post(
        f"/api/moderation/imports/{kept_entry['id']}:resolve",
        json={"decision": "IMPORT_DECISION_KEEP_SEPARATE"},
        headers=admin.headers,
    )
    kept_event = kept.json()["scraper_import"]["event_id"]
    assert kept_event and kept_event not in (ours["id"], created["event_id"])
    event = (await api.get(f"/api/events/{kept_event}", headers=admin.headers)).json()
    assert (event["status"], event["source"]) == ("EVENT_STATUS_PENDING_REVIEW", "thai-events")
    by_partner = await api.post(
        f"/api/moderation/imports/{kept_entry['id']}:resolve",
        json={"decision": "IMPORT_DECISION_MERGE"},
        headers=partner.headers,
    )
    assert by_partner.status_code == 403


def test_the_duplicate_rule_on_the_labelled_pairs() -> None:
    """At least 200 labelled pairs (English and Thai, punctuation, word order, venue spellings, the same
    venue on another night, another show at the same time): precision and recall both at least 0.9."""
    pairs = labelled_pairs()
    assert len(pairs) >= 200 and sum(p["duplicate"] for p in pairs) >= 100
    quality = evaluate([(sighting(p["a"]), sighting(p["b"]), p["duplicate"]) for p in pairs])
    assert quality.precision >= 0.9 and quality.recall >= 0.9, quality


def test_the_importer_takes_an_ics_feed_with_its_recurrences(stack: Stack, tmp_path: Path) -> None:
    """`make import` on an .ics file: a weekly series (four Fridays, one excepted) and a single event
    become four items; importing the file again changes nothing."""
    first = (datetime.now(UTC) + timedelta(days=90)).replace(hour=12, minute=0, second=0, microsecond=0)
    stamp = first.strftime("%Y%m%dT%H%M%SZ")
    skipped = (first + timedelta(days=14)).strftime("%Y%m%dT%H%M%SZ")
    single = (first + timedelta(days=3)).strftime("%Y%m%dT%H%M%SZ")
    uid = uuid.uuid4().hex
    feed = tmp_path / "feed.ics"
    feed.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:{uid}-series\r\nDTSTAMP:{stamp}\r\nDTSTART:{stamp}\r\nDURATION:PT2H\r\n"
        f"RRULE:FREQ=WEEKLY;COUNT=4\r\nEXDATE:{skipped}\r\nSUMMARY:Friday Night Salsa {uid[:6]}\r\n"
        "LOCATION:Havana Social\r\nGEO:13.7380;100.5600\r\nEND:VEVENT\r\n"
        f"BEGIN:VEVENT\r\nUID:{uid}-single\r\nDTSTAMP:{stamp}\r\nDTSTART:{single}\r\n"
        f"SUMMARY:Poetry Reading {uid[:6]}\r\nLOCATION:Candide Books\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    command = [sys.executable, "-m", "localplus_dev.importer", str(feed), "--source", "feed-test"]
    env = {**os.environ, "GATEWAY_URL": stack.gateway_url}
    imported = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "4 created, 0 updated, 0 unchanged, 0 duplicate, 0 rejected of 4 items"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "0 created, 0 updated, 4 unchanged, 0 duplicate, 0 rejected of 4 items"
