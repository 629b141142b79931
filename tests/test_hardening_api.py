"""Hardening findings where the API is the way in (through the JSON gateway): a cancelled event
shows only reviewed text, unlisted events still open by their id (with what hangs off them), and
the waitlist is strictly first come, first served. The same rules in raw SQL:
tests/test_hardening_sql.py."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from tests.sql_callers import as_caller
from tests.support import User, create_event, create_user, service_role_token

BACKEND = {"authorization": f"Bearer {service_role_token()}"}


async def test_spam_added_after_approval_never_shows_once_cancelled(
    api: httpx.AsyncClient, user: User, admin: User
) -> None:
    draft = await create_event(api, user, title="Jazz by the river")
    url = f"/api/events/{draft['id']}"
    assert (await api.post(f"{url}:submit", json={}, headers=user.headers)).status_code == 200
    assert (await api.post(f"{url}:approve", json={}, headers=admin.headers)).status_code == 200
    edited = await api.patch(f"{url}?update_mask=title", json={"title": "Cheap pills"}, headers=user.headers)
    assert edited.json()["status"] == "EVENT_STATUS_PENDING_REVIEW"
    assert (await api.post(f"{url}:cancel", json={}, headers=user.headers)).status_code == 200

    assert (await api.get(url)).status_code == 404
    assert "Cheap pills" not in (await api.get("/api/events", params={"q": "pills"})).text


async def test_a_cancelled_published_event_stays_readable_and_frozen(api: httpx.AsyncClient, user: User) -> None:
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    url = f"/api/events/{event['id']}"
    assert (await api.post(f"{url}:cancel", json={}, headers=user.headers)).status_code == 200
    seen = await api.get(url)
    assert seen.status_code == 200 and seen.json()["status"] == "EVENT_STATUS_CANCELLED"
    refused = await api.patch(f"{url}?update_mask=title", json={"title": "Spam after all"}, headers=user.headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["details"][0]["reason"] == "INVALID_STATE"
    assert (await api.get(url)).json()["title"] == event["title"]


async def test_unlisted_events_open_by_id_with_their_ticket_types(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User
) -> None:
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", visibility="EVENT_VISIBILITY_UNLISTED")
    ticket = {"name": "GA", "currency": "THB", "inventory": 10, "price_minor": "50000"}
    created = await api.post(f"/api/events/{event['id']}/ticket-types", json=ticket, headers=user.headers)
    assert created.status_code == 200, created.text

    for headers in ({}, other_user.headers):
        assert (await api.get(f"/api/events/{event['id']}", headers=headers)).status_code == 200
        types = await api.get(f"/api/events/{event['id']}/ticket-types", headers=headers)
        assert [t["name"] for t in types.json()["ticket_types"]] == ["GA"]
        occurrences = await api.get(f"/api/events/{event['id']}/occurrences", headers=headers)
        assert len(occurrences.json()["occurrences"]) == 1
    # Someone with the link saves and registers; both stay in their lists.
    saved = await api.put(f"/api/me/saved-events/{event['id']}", headers=other_user.headers)
    assert saved.status_code == 200, saved.text
    assert (await api.post(f"/api/events/{event['id']}/participants", json={}, headers=other_user.headers)).json()[
        "status"
    ] == "PARTICIPANT_STATUS_GOING"
    saves = (await api.get("/api/me/saved-events", headers=other_user.headers)).json()["saved_events"]
    assert [s["event_id"] for s in saves] == [event["id"]]
    mine = (await api.get("/api/me/events", headers=other_user.headers)).json()["events"]
    assert [m["event"]["id"] for m in mine] == [event["id"]]


async def test_a_later_smaller_party_does_not_overtake_the_waitlist(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    owner = await create_user(db)
    event = await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", capacity=2)
    url = f"/api/events/{event['id']}/participants"
    couple, family, single = await create_user(db), await create_user(db), await create_user(db)

    async def join(person: User, guests: int) -> str:
        response = await api.post(url, json={"guest_count": guests}, headers=person.headers)
        assert response.status_code == 200, response.text
        status: str = response.json()["status"]
        return status

    assert await join(couple, 1) == "PARTICIPANT_STATUS_GOING"
    assert await join(family, 2) == "PARTICIPANT_STATUS_WAITLISTED"
    assert (await api.delete(url, headers=couple.headers)).status_code == 200
    # Two places are free; the single person fits but the family (three) asked first.
    assert await join(single, 0) == "PARTICIPANT_STATUS_WAITLISTED"
    raised = await api.patch(
        f"/api/events/{event['id']}?update_mask=capacity", json={"capacity": 4}, headers=owner.headers
    )
    assert raised.status_code == 200, raised.text
    everyone = (await api.get(url, headers=owner.headers)).json()["participants"]
    by_user = {p["user_id"]: p["status"] for p in everyone}
    assert by_user[str(family.id)] == by_user[str(single.id)] == "PARTICIPANT_STATUS_GOING"


async def _business_owned_by(db: asyncpg.Pool, owner: User) -> str:
    business_id = uuid.uuid4()
    await db.execute("insert into public.businesses (id, name) values ($1, 'Theirs')", business_id)
    await db.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, 'owner')", business_id, owner.id
    )
    return str(business_id)


async def test_an_editor_cannot_make_themselves_owner_by_moving_the_event_to_their_business(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """Moving an event to another business changes who owns it, so it takes the event's owner: an
    editor who owns another business moved the event there and could then revoke, cancel and delete."""
    owner, editor = await create_user(db), await create_user(db)
    event = await create_event(api, owner)
    granted = await api.post(
        f"/api/events/{event['id']}/permissions",
        json={"user_id": str(editor.id), "role": "EVENT_ROLE_EDITOR"},
        headers=owner.headers,
    )
    assert granted.status_code == 200, granted.text
    theirs = await _business_owned_by(db, editor)
    url = f"/api/events/{event['id']}?update_mask=business_id"
    moved = await api.patch(url, json={"business_id": theirs}, headers=editor.headers)
    assert moved.status_code == 403, moved.text
    async with as_caller(db, editor.id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "update public.events set business_id = $2 where id = $1", uuid.UUID(event["id"]), theirs
            )
    assert (await api.get(f"/api/events/{event['id']}", headers=owner.headers)).json().get("business_id") is None
    assert (await api.delete(f"/api/events/{event['id']}", headers=editor.headers)).status_code == 403
    # The owner may, into a business they are an owner or editor partner of.
    mine = await _business_owned_by(db, owner)
    moved = await api.patch(url, json={"business_id": mine}, headers=owner.headers)
    assert moved.status_code == 200 and moved.json()["business_id"] == mine, moved.text
