"""Saves (`/api/me/saved-events`), the caller's registrations (`/api/me/events`) and the partner
dashboard figures (`/api/events/{id}/stats`, `/api/businesses/{id}/stats`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx

from tests.support import User, businesses_hidden, create_event, create_user, iso

Json = dict[str, Any]

GOING = "PARTICIPANT_STATUS_GOING"
INTERESTED = "PARTICIPANT_STATUS_INTERESTED"
WAITLISTED = "PARTICIPANT_STATUS_WAITLISTED"
CANCELLED = "PARTICIPANT_STATUS_CANCELLED"
ATTENDED = "PARTICIPANT_STATUS_ATTENDED"
COUNTS = ("going", "interested", "waitlisted", "cancelled", "attended", "guests", "saves")


def new_city() -> str:
    return f"city-{uuid.uuid4().hex[:8]}"


def when(days: float) -> dict[str, str]:
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    return {"starts_at": iso(starts), "ends_at": iso(starts + timedelta(hours=2))}


async def publish(api: httpx.AsyncClient, owner: User, title: str = "Jazz by the river", **overrides: Any) -> Json:
    overrides.setdefault("city", new_city())
    return await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", title=title, **overrides)


async def register(api: httpx.AsyncClient, event: Json, person: User, **body: Any) -> str:
    response = await api.post(f"/api/events/{event['id']}/participants", json=body, headers=person.headers)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def cancel_registration(api: httpx.AsyncClient, event: Json, person: User) -> None:
    response = await api.delete(f"/api/events/{event['id']}/participants", headers=person.headers)
    assert response.status_code == 200, response.text


async def save(api: httpx.AsyncClient, event: Json, person: User) -> Json:
    response = await api.put(f"/api/me/saved-events/{event['id']}", headers=person.headers)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


async def unsave(api: httpx.AsyncClient, event: Json, person: User) -> None:
    response = await api.delete(f"/api/me/saved-events/{event['id']}", headers=person.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {}


async def save_in_sql(db: asyncpg.Pool, person: User, event: Json) -> None:
    """A save made behind the API's back, so that the figures do not hang on the saves API."""
    await db.execute(
        "insert into public.event_saves (user_id, event_id) values ($1, $2)", person.id, uuid.UUID(event["id"])
    )


async def saved_ids(api: httpx.AsyncClient, person: User) -> list[str]:
    response = await api.get("/api/me/saved-events", params={"page_size": 100}, headers=person.headers)
    assert response.status_code == 200, response.text
    return [saved["event_id"] for saved in response.json()["saved_events"]]


async def walk(api: httpx.AsyncClient, path: str, key: str, person: User, page_size: int) -> list[Json]:
    items: list[Json] = []
    token = ""
    for _ in range(50):
        params: dict[str, Any] = {"page_size": page_size, **({"page_token": token} if token else {})}
        response = await api.get(path, params=params, headers=person.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body[key]) <= page_size
        items += body[key]
        token = body.get("next_page_token", "")
        if not token:
            return items
    raise AssertionError("pagination did not end")


async def stats(api: httpx.AsyncClient, event: Json, person: User | None) -> httpx.Response:
    return await api.get(f"/api/events/{event['id']}/stats", headers=person.headers if person else {})


async def grant(api: httpx.AsyncClient, event: Json, owner: User, person: User, role: str) -> None:
    response = await api.post(
        f"/api/events/{event['id']}/permissions", json={"user_id": str(person.id), "role": role}, headers=owner.headers
    )
    assert response.status_code == 200, response.text


async def new_business(db: asyncpg.Pool, partners: dict[str, User]) -> uuid.UUID:
    business_id = uuid.uuid4()
    await db.execute("insert into public.businesses (id, name) values ($1, $2)", business_id, f"Biz {business_id}")
    for role, person in partners.items():
        await db.execute(
            "insert into public.partners (business_id, user_id, role) values ($1, $2, $3)", business_id, person.id, role
        )
    return business_id


def today_in(timezone: str) -> str:
    return datetime.now(ZoneInfo(timezone)).date().isoformat()


# Saves


async def test_save_twice_list_most_recent_first_and_unsave(
    api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    first = await publish(api, other_user, "Pottery evening")
    second = await publish(api, other_user, "Night market")
    third = await publish(api, other_user, "Temple fair", visibility="EVENT_VISIBILITY_UNLISTED")

    saved = await save(api, first, user)
    assert saved["event_id"] == first["id"]
    assert saved["event"]["id"] == first["id"]
    assert saved["event"]["title"] == "Pottery evening"
    assert saved["created_at"]
    again = await save(api, first, user)
    assert again["event_id"] == first["id"]
    assert again["created_at"] == saved["created_at"], "saving again is no new save"
    await save(api, second, user)
    await save(api, third, user)  # unlisted events can be saved by whoever has the link

    listed = await api.get("/api/me/saved-events", headers=user.headers)
    assert listed.status_code == 200, listed.text
    entries = listed.json()["saved_events"]
    assert [entry["event_id"] for entry in entries] == [third["id"], second["id"], first["id"]]
    assert [entry["event"]["title"] for entry in entries] == ["Temple fair", "Night market", "Pottery evening"]
    assert all(entry["event"]["status"] == "EVENT_STATUS_PUBLISHED" for entry in entries)
    assert entries[2]["created_at"] == saved["created_at"]
    # Saves are per person.
    assert await saved_ids(api, other_user) == []

    await unsave(api, second, user)
    await unsave(api, second, user)  # removing a save that is not there is fine
    await unsave(api, await publish(api, other_user, "Never saved"), user)
    assert await saved_ids(api, user) == [third["id"], first["id"]]
    # Saving it again puts it on top.
    await save(api, second, user)
    assert await saved_ids(api, user) == [second["id"], third["id"], first["id"]]


async def test_saved_events_pages(api: httpx.AsyncClient, user: User, other_user: User) -> None:
    events = [await publish(api, other_user, f"Saved {i}") for i in range(5)]
    for event in events:
        await save(api, event, user)
    entries = await walk(api, "/api/me/saved-events", "saved_events", user, page_size=2)
    assert [entry["event_id"] for entry in entries] == [event["id"] for event in reversed(events)]
    bad = await api.get("/api/me/saved-events", params={"page_token": "garbage"}, headers=user.headers)
    assert bad.status_code == 400


async def test_saving_needs_a_visible_event_and_a_signed_in_user(
    api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    draft = await create_event(api, other_user, city=new_city())
    private = await publish(api, other_user, visibility="EVENT_VISIBILITY_PRIVATE")
    public = await publish(api, other_user)
    for event_id in (draft["id"], private["id"], str(uuid.uuid4())):
        response = await api.put(f"/api/me/saved-events/{event_id}", headers=user.headers)
        assert response.status_code == 404, response.text
    assert (await api.put("/api/me/saved-events/not-a-uuid", headers=user.headers)).status_code == 400
    assert await saved_ids(api, user) == []

    assert (await api.put(f"/api/me/saved-events/{public['id']}")).status_code == 401
    assert (await api.delete(f"/api/me/saved-events/{public['id']}")).status_code == 401
    assert (await api.get("/api/me/saved-events")).status_code == 401
    bad_token = {"authorization": "Bearer not.a.token"}
    assert (await api.get("/api/me/saved-events", headers=bad_token)).status_code == 401


async def test_saved_event_that_becomes_hidden_leaves_the_list(
    api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    kept = await publish(api, other_user, "Kept")
    hidden = await publish(api, other_user, "Going private")
    await save(api, kept, user)
    await save(api, hidden, user)
    patched = await api.patch(
        f"/api/events/{hidden['id']}",
        params={"update_mask": "visibility"},
        json={"visibility": "EVENT_VISIBILITY_PRIVATE"},
        headers=other_user.headers,
    )
    assert patched.status_code == 200, patched.text
    assert await saved_ids(api, user) == [kept["id"]]


async def test_saves_show_in_the_figures_once_per_person(
    api: httpx.AsyncClient, user: User, other_user: User, db: asyncpg.Pool
) -> None:
    event = await publish(api, user)
    fans = [other_user, await create_user(db)]
    for fan in fans:
        await save(api, event, fan)
    await save(api, event, fans[0])
    assert (await stats(api, event, user)).json()["saves"] == 2
    await unsave(api, event, fans[1])
    await unsave(api, event, fans[1])
    assert (await stats(api, event, user)).json()["saves"] == 1


# My events


async def test_my_events_lists_own_registrations_with_status(
    api: httpx.AsyncClient, user: User, other_user: User, db: asyncpg.Pool
) -> None:
    organiser = await create_user(db)
    full = await publish(api, organiser, "Small room", capacity=1, **when(2))
    interesting = await publish(api, organiser, "Maybe", **when(3))
    dropped = await publish(api, organiser, "Changed my mind", **when(4))
    later = await publish(api, organiser, "Later", **when(5))
    theirs = await publish(api, organiser, "Only the other user", **when(1))

    assert await register(api, theirs, other_user) == GOING
    assert await register(api, full, other_user) == GOING
    assert await register(api, later, user) == GOING
    assert await register(api, full, user) == WAITLISTED
    assert await register(api, interesting, user, status=INTERESTED) == INTERESTED
    assert await register(api, dropped, user) == GOING
    await cancel_registration(api, dropped, user)

    response = await api.get("/api/me/events", headers=user.headers)
    assert response.status_code == 200, response.text
    mine = response.json()["events"]
    # Soonest event first, each with the caller's own registration.
    assert [item["event"]["id"] for item in mine] == [full["id"], interesting["id"], dropped["id"], later["id"]]
    assert [item["participant"]["status"] for item in mine] == [WAITLISTED, INTERESTED, CANCELLED, GOING]
    for item in mine:
        assert item["participant"]["user_id"] == str(user.id)
        assert item["participant"]["event_id"] == item["event"]["id"]
    assert mine[0]["event"]["title"] == "Small room"

    theirs_listed = (await api.get("/api/me/events", headers=other_user.headers)).json()["events"]
    assert [(item["event"]["id"], item["participant"]["status"]) for item in theirs_listed] == [
        (theirs["id"], GOING),
        (full["id"], GOING),
    ]
    assert all(item["participant"]["user_id"] == str(other_user.id) for item in theirs_listed)
    assert (await api.get("/api/me/events", headers=organiser.headers)).json()["events"] == []

    paged = await walk(api, "/api/me/events", "events", user, page_size=1)
    assert [item["event"]["id"] for item in paged] == [item["event"]["id"] for item in mine]
    assert (await api.get("/api/me/events")).status_code == 401
    bad = await api.get("/api/me/events", params={"page_token": "garbage"}, headers=user.headers)
    assert bad.status_code == 400


# Event figures


async def test_event_stats_counts_capacity_fill_rate_saves_and_days(
    api: httpx.AsyncClient, user: User, admin: User, db: asyncpg.Pool
) -> None:
    event = await publish(api, user, capacity=4, timezone="Asia/Bangkok")
    people = [await create_user(db) for _ in range(7)]
    assert await register(api, event, people[0], guest_count=1) == GOING  # two places
    assert await register(api, event, people[1]) == GOING
    assert await register(api, event, people[5], status=INTERESTED) == INTERESTED
    assert await register(api, event, people[6], status=INTERESTED) == INTERESTED
    await cancel_registration(api, event, people[6])
    assert await register(api, event, people[2]) == GOING  # the last place
    assert await register(api, event, people[3]) == WAITLISTED
    assert await register(api, event, people[4]) == WAITLISTED
    await save_in_sql(db, people[0], event)
    await save_in_sql(db, people[5], event)
    viewer = await create_user(db)
    await grant(api, event, user, viewer, "EVENT_ROLE_VIEWER")

    expected = {
        "event_id": event["id"],
        "capacity": 4,
        "going": 3,
        "interested": 1,
        "waitlisted": 2,
        "cancelled": 1,
        "attended": 0,
        "guests": 1,
        "fill_rate": 1.0,
        "saves": 2,
        "registrations_per_day": [{"date": today_in("Asia/Bangkok"), "registrations": 7}],
        "checked_in": 0,  # tickets scanned at the door (tests/test_check_ins.py)
    }
    for caller in (user, viewer, admin):
        response = await stats(api, event, caller)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body == expected
        # int32 figures are JSON numbers, not strings.
        assert all(type(body[name]) is int for name in (*COUNTS, "capacity"))
        assert type(body["registrations_per_day"][0]["registrations"]) is int

    # At the door, then people dropping out: the waitlist moves up and the figures follow.
    at_door = await api.put(
        f"/api/events/{event['id']}/participants",
        json={"user_id": str(people[0].id), "status": ATTENDED},
        headers=user.headers,
    )
    assert at_door.status_code == 200, at_door.text
    for person in people[1:4]:
        await cancel_registration(api, event, person)
    body = (await stats(api, event, viewer)).json()
    assert {name: body[name] for name in COUNTS} == {
        "going": 1,  # people[4], promoted twice over
        "interested": 1,
        "waitlisted": 0,
        "cancelled": 4,
        "attended": 1,
        "guests": 1,
        "saves": 2,
    }
    assert body["fill_rate"] == 0.75
    assert body["registrations_per_day"] == [{"date": today_in("Asia/Bangkok"), "registrations": 7}]


async def test_event_without_capacity_or_registrations(api: httpx.AsyncClient, user: User) -> None:
    event = await publish(api, user)
    response = await stats(api, event, user)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("capacity") is None
    assert body.get("fill_rate") is None
    assert {name: body[name] for name in COUNTS} == dict.fromkeys(COUNTS, 0)
    assert body.get("registrations_per_day", []) == []
    # A draft has figures for its owner too.
    draft = await create_event(api, user)
    assert (await stats(api, draft, user)).status_code == 200


async def test_registrations_per_day_in_the_event_time_zone(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    bangkok = await publish(api, user, timezone="Asia/Bangkok")
    new_york = await publish(api, user, timezone="America/New_York")
    people = [await create_user(db) for _ in range(3)]
    # 16:30Z is 23:30 in Bangkok and 11:30 in New York; 17:30Z is 00:30 the next day in Bangkok.
    # (Registration times are kept by the database, so these two are made behind the API's back.)
    moments = [datetime.fromisoformat("2026-03-01T16:30:00+00:00"), datetime.fromisoformat("2026-03-01T17:30:00+00:00")]
    for event in (bangkok, new_york):
        for person, moment in zip(people, moments, strict=False):
            await db.execute(
                "insert into public.event_participants (event_id, user_id, status, created_at) "
                "values ($1, $2, 'going', $3)",
                uuid.UUID(event["id"]),
                person.id,
                moment,
            )
        await register(api, event, people[2])
    assert (await stats(api, bangkok, user)).json()["registrations_per_day"] == [
        {"date": "2026-03-01", "registrations": 1},
        {"date": "2026-03-02", "registrations": 1},
        {"date": today_in("Asia/Bangkok"), "registrations": 1},
    ]
    assert (await stats(api, new_york, user)).json()["registrations_per_day"] == [
        {"date": "2026-03-01", "registrations": 2},
        {"date": today_in("America/New_York"), "registrations": 1},
    ]
    assert (await stats(api, bangkok, user)).json()["going"] == 3


async def test_event_stats_are_for_viewers_and_up(
    api: httpx.AsyncClient, user: User, other_user: User, db: asyncpg.Pool
) -> None:
    event = await publish(api, user, capacity=10)
    participant, stranger, viewer, editor = [await create_user(db) for _ in range(4)]
    await register(api, event, participant)
    await grant(api, event, user, viewer, "EVENT_ROLE_VIEWER")
    await grant(api, event, user, editor, "EVENT_ROLE_EDITOR")

    assert (await stats(api, event, viewer)).status_code == 200
    assert (await stats(api, event, editor)).status_code == 200
    assert (await stats(api, event, participant)).status_code == 403
    assert (await stats(api, event, stranger)).status_code == 403
    assert (await stats(api, event, None)).status_code == 401

    # A revoked or expired role no longer opens the figures.
    revoked = await api.delete(f"/api/events/{event['id']}/permissions/{viewer.id}", headers=user.headers)
    assert revoked.status_code == 200, revoked.text
    assert (await stats(api, event, viewer)).status_code == 403
    await db.execute(
        "update public.event_permissions set expires_at = now() - interval '1 minute' "
        "where event_id = $1 and user_id = $2",
        uuid.UUID(event["id"]),
        editor.id,
    )
    assert (await stats(api, event, editor)).status_code == 403

    # Events the caller cannot see at all are 404, as everywhere.
    draft = await create_event(api, user, city=new_city())
    private = await publish(api, user, visibility="EVENT_VISIBILITY_PRIVATE")
    for hidden in (draft, private):
        assert (await stats(api, hidden, stranger)).status_code == 404
        assert (await stats(api, hidden, user)).status_code == 200
    assert (await stats(api, {"id": str(uuid.uuid4())}, user)).status_code == 404
    assert (await api.get("/api/events/not-a-uuid/stats", headers=user.headers)).status_code == 400
    # A viewer of a private event sees its figures.
    await grant(api, private, user, other_user, "EVENT_ROLE_VIEWER")
    assert (await stats(api, private, other_user)).status_code == 200


# Business figures


async def test_business_stats_sum_over_the_business_events(
    api: httpx.AsyncClient, user: User, other_user: User, admin: User, db: asyncpg.Pool
) -> None:
    viewer_partner = other_user
    business_id = await new_business(db, {"owner": user, "viewer": viewer_partner})
    business = {"business_id": str(business_id)}
    people = [await create_user(db) for _ in range(4)]

    big = await publish(api, user, "Big night", capacity=10, **business)
    await register(api, big, people[0], guest_count=2)
    await register(api, big, people[1])
    await register(api, big, people[2], status=INTERESTED)
    await save_in_sql(db, people[3], big)
    small = await publish(api, user, "Small night", capacity=1, **business)
    assert await register(api, small, people[0]) == GOING
    assert await register(api, small, people[1]) == WAITLISTED
    assert await register(api, small, people[3]) == WAITLISTED
    await cancel_registration(api, small, people[3])
    await create_event(api, user, title="Still a draft", **business)
    pending = await create_event(api, user, title="Waiting for review", **business)
    assert (await api.post(f"/api/events/{pending['id']}:submit", json={}, headers=user.headers)).status_code == 200
    # Not the business's: none of this counts.
    outside = await publish(api, user, "Personal event")
    await register(api, outside, people[0])
    await save_in_sql(db, people[0], outside)

    expected = {
        "business_id": str(business_id),
        "events": 4,
        "events_by_status": {
            "EVENT_STATUS_PUBLISHED": 2,
            "EVENT_STATUS_DRAFT": 1,
            "EVENT_STATUS_PENDING_REVIEW": 1,
        },
        "going": 3,
        "interested": 1,
        "waitlisted": 1,
        "cancelled": 1,
        "attended": 0,
        "guests": 2,
        "saves": 1,
    }
    for caller in (user, viewer_partner, admin):
        response = await api.get(f"/api/businesses/{business_id}/stats", headers=caller.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body == expected
        assert all(type(body[name]) is int for name in (*COUNTS, "events"))
    # A viewer partner also sees each event's figures.
    assert (await stats(api, big, viewer_partner)).json()["going"] == 2


async def test_business_stats_are_for_its_partners(
    api: httpx.AsyncClient, user: User, other_user: User, db: asyncpg.Pool
) -> None:
    business_id = await new_business(db, {"owner": user})
    other_business = await new_business(db, {"owner": other_user})
    await publish(api, user, "Business event", business_id=str(business_id))
    path = f"/api/businesses/{business_id}/stats"

    assert (await api.get(path, headers=user.headers)).status_code == 200
    assert (await api.get(path, headers=other_user.headers)).status_code == 403  # a partner of another business
    stranger = await create_user(db)
    assert (await api.get(path, headers=stranger.headers)).status_code == 403
    assert (await api.get(path)).status_code == 401
    unknown = await api.get(f"/api/businesses/{uuid.uuid4()}/stats", headers=user.headers)
    assert unknown.status_code == 404
    assert (await api.get("/api/businesses/not-a-uuid/stats", headers=user.headers)).status_code == 400
    # A business with no events yet has zeros, not an error.
    empty = await api.get(f"/api/businesses/{other_business}/stats", headers=other_user.headers)
    assert empty.status_code == 200, empty.text
    assert empty.json()["events"] == 0
    assert {name: empty.json()[name] for name in COUNTS} == dict.fromkeys(COUNTS, 0)


async def test_business_stats_do_not_rely_on_the_businesses_own_row_security(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    """On Supabase `businesses` has LocalPlus's own policies, which may hide its rows from the API roles:
    a partner still gets their business's figures, not a 404 calling it unknown."""
    business_id = await new_business(db, {"owner": user})
    await publish(api, user, "Hidden business event", business_id=str(business_id))
    async with businesses_hidden(db):
        response = await api.get(f"/api/businesses/{business_id}/stats", headers=user.headers)
        assert response.status_code == 200, response.text
        assert response.json()["events"] == 1
        assert (await api.get(f"/api/businesses/{uuid.uuid4()}/stats", headers=user.headers)).status_code == 404


async def test_deleting_an_event_with_registrations_and_saves(
    api: httpx.AsyncClient, user: User, other_user: User, db: asyncpg.Pool
) -> None:
    """The counters behind the figures must not stand in the way of deleting what they count."""
    event = await publish(api, user)
    await register(api, event, other_user)
    await save_in_sql(db, other_user, event)
    deleted = await api.delete(f"/api/events/{event['id']}", headers=user.headers)
    assert deleted.status_code == 200, deleted.text
    assert (await stats(api, event, user)).status_code == 404
    assert (await api.get("/api/me/events", headers=other_user.headers)).json()["events"] == []
    assert (
        await db.fetchval("select count(*) from public.event_counters where event_id = $1", uuid.UUID(event["id"])) == 0
    )


async def test_deleting_a_person_with_registrations_and_saves(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    """auth.users cascades to registrations and saves; the figures follow."""
    fan = await create_user(db)
    kept = await publish(api, user)
    await register(api, kept, fan)
    await save_in_sql(db, fan, kept)
    await db.execute("delete from auth.users where id = $1", fan.id)
    body = (await stats(api, kept, user)).json()
    assert (body["going"], body["saves"]) == (0, 0)
