"""A registration as a resource (CONTRACT §5): `GET|PUT|PATCH|DELETE /api/events/{id}/participants/{user_id}`
through the gateway, beside the seed's collection routes. The caller's own registration, everyone's for
editors (and owners); someone else's is not found for anyone else. PATCH honours `update_mask` as
UpdateEvent does (AIP-134)."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import User, create_event, create_user


@pytest.fixture
async def event(api: httpx.AsyncClient, user: User) -> dict[str, Any]:
    """A published event owned by `user`."""
    return await create_event(api, user, status="EVENT_STATUS_PUBLISHED", capacity=50)


async def register(api: httpx.AsyncClient, event: dict[str, Any], who: User, **body: Any) -> dict[str, Any]:
    response = await api.post(f"/api/events/{event['id']}/participants", json=body, headers=who.headers)
    assert response.status_code == 200, response.text
    registration: dict[str, Any] = response.json()
    return registration


def resource(event: dict[str, Any], who: User) -> str:
    return f"/api/events/{event['id']}/participants/{who.id}"


async def test_a_participant_reads_changes_and_cancels_their_own(
    api: httpx.AsyncClient, event: dict[str, Any], other_user: User
) -> None:
    created = await register(api, event, other_user)
    path = resource(event, other_user)
    read = await api.get(path, headers=other_user.headers)
    assert read.status_code == 200, read.text
    assert read.json() == created

    put = await api.put(path, json={"status": "PARTICIPANT_STATUS_INTERESTED"}, headers=other_user.headers)
    assert put.status_code == 200, put.text
    assert put.json()["status"] == "PARTICIPANT_STATUS_INTERESTED"
    assert put.json()["user_id"] == str(other_user.id)

    deleted = await api.delete(path, headers=other_user.headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {}
    assert (await api.get(path, headers=other_user.headers)).json()["status"] == "PARTICIPANT_STATUS_CANCELLED"


async def test_the_owner_manages_anyones_registration(
    api: httpx.AsyncClient, event: dict[str, Any], user: User, other_user: User
) -> None:
    await register(api, event, other_user, guest_count=2)
    path = resource(event, other_user)
    read = await api.get(path, headers=user.headers)
    assert read.status_code == 200, read.text
    assert read.json()["guest_count"] == 2

    checked_in = await api.patch(path, json={"status": "PARTICIPANT_STATUS_ATTENDED"}, headers=user.headers)
    assert checked_in.status_code == 200, checked_in.text
    assert checked_in.json()["status"] == "PARTICIPANT_STATUS_ATTENDED"
    assert checked_in.json()["guest_count"] == 2

    assert (await api.delete(path, headers=user.headers)).status_code == 200


async def test_an_editor_manages_anyones_registration(
    api: httpx.AsyncClient, db: asyncpg.Pool, event: dict[str, Any], user: User, other_user: User
) -> None:
    editor = await create_user(db)
    granted = await api.post(
        f"/api/events/{event['id']}/permissions",
        json={"user_id": str(editor.id), "role": "EVENT_ROLE_EDITOR"},
        headers=user.headers,
    )
    assert granted.status_code == 200, granted.text
    await register(api, event, other_user)
    path = resource(event, other_user)
    assert (await api.get(path, headers=editor.headers)).status_code == 200
    updated = await api.put(path, json={"guest_count": 1}, headers=editor.headers)
    assert updated.status_code == 200, updated.text
    assert updated.json()["guest_count"] == 1
    assert (await api.delete(path, headers=editor.headers)).status_code == 200


async def test_someone_elses_registration_is_not_found_for_non_editors(
    api: httpx.AsyncClient, db: asyncpg.Pool, event: dict[str, Any], other_user: User
) -> None:
    await register(api, event, other_user)
    fellow = await create_user(db)
    await register(api, event, fellow)
    stranger = await create_user(db)
    path = resource(event, other_user)
    never_registered = resource(event, await create_user(db))
    # CONTRACT §3: who may not see a row gets 404, whatever they ask to do with it; so a change
    # answers as the read does, and tells no more (not even whether the registration exists).
    for caller in (fellow, stranger):
        for target in (path, never_registered):
            for method, body in (("GET", None), ("PUT", {"guest_count": 3}), ("PATCH", {"guest_count": 3})):
                response = await api.request(method, target, json=body, headers=caller.headers)
                assert response.status_code == 404, f"{method}: {response.text}"
                assert response.json()["message"] == "no registration for this event"
            response = await api.delete(target, headers=caller.headers)
            assert response.status_code == 404, f"DELETE: {response.text}"
            assert response.json()["message"] == "no registration for this event"
    assert (await api.get(path)).status_code == 401
    assert (await api.get(path, headers=other_user.headers)).json()["guest_count"] == 0
    assert (await api.get(path, headers=other_user.headers)).json()["status"] == "PARTICIPANT_STATUS_GOING"
    # What one sees but may not do is 403: a participant cannot check themselves in.
    checked_in = await api.put(path, json={"status": "PARTICIPANT_STATUS_ATTENDED"}, headers=other_user.headers)
    assert checked_in.status_code == 403, checked_in.text


async def test_no_registration_is_404(api: httpx.AsyncClient, event: dict[str, Any], user: User) -> None:
    response = await api.get(resource(event, user), headers=user.headers)
    assert response.status_code == 404, response.text
    assert response.json()["message"] == "no registration for this event", "the service's answer, not a missing route"


async def test_patch_honours_the_update_mask(api: httpx.AsyncClient, event: dict[str, Any], other_user: User) -> None:
    await register(api, event, other_user, guest_count=2)
    path = resource(event, other_user)

    masked = await api.patch(
        path,
        params={"update_mask": "guest_count"},
        json={"guest_count": 4, "status": "PARTICIPANT_STATUS_INTERESTED"},
        headers=other_user.headers,
    )
    assert masked.status_code == 200, masked.text
    assert (masked.json()["guest_count"], masked.json()["status"]) == (4, "PARTICIPANT_STATUS_GOING")

    # A field the mask names but the body leaves out is cleared (guest_count to 0).
    cleared = await api.patch(
        path,
        params={"update_mask": "guest_count"},
        json={"status": "PARTICIPANT_STATUS_INTERESTED"},
        headers=other_user.headers,
    )
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["guest_count"], cleared.json()["status"]) == (0, "PARTICIPANT_STATUS_GOING")

    # Without a mask every field present is written, and only those.
    present = await api.patch(path, json={"status": "PARTICIPANT_STATUS_INTERESTED"}, headers=other_user.headers)
    assert present.status_code == 200, present.text
    assert (present.json()["guest_count"], present.json()["status"]) == (0, "PARTICIPANT_STATUS_INTERESTED")

    # Output-only fields and the identifiers in a mask are ignored; unknown ones are refused.
    ignored = await api.patch(
        path,
        params={"update_mask": "guest_count,user_id,created_at"},
        json={"guest_count": 1},
        headers=other_user.headers,
    )
    assert ignored.status_code == 200, ignored.text
    assert ignored.json()["guest_count"] == 1
    unknown = await api.patch(
        path, params={"update_mask": "guests"}, json={"guest_count": 1}, headers=other_user.headers
    )
    assert unknown.status_code == 400, unknown.text
    assert "update_mask" in unknown.text


async def test_the_body_cannot_name_another_user_than_the_path(
    api: httpx.AsyncClient, db: asyncpg.Pool, event: dict[str, Any], user: User, other_user: User
) -> None:
    await register(api, event, other_user)
    someone = await create_user(db)
    await register(api, event, someone)
    response = await api.put(
        resource(event, other_user),
        json={"user_id": str(someone.id), "status": "PARTICIPANT_STATUS_ATTENDED"},
        headers=user.headers,
    )
    assert response.status_code == 400, response.text
    for who in (other_user, someone):
        status = (await api.get(resource(event, who), headers=user.headers)).json()["status"]
        assert status == "PARTICIPANT_STATUS_GOING"


async def grant(api: httpx.AsyncClient, event: dict[str, Any], owner: User, who: User, role: str) -> None:
    granted = await api.post(
        f"/api/events/{event['id']}/permissions", json={"user_id": str(who.id), "role": role}, headers=owner.headers
    )
    assert granted.status_code == 200, granted.text


async def test_nobody_registers_themselves_for_an_unpublished_event(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User, other_user: User, admin: User
) -> None:
    """CONTRACT §3: one's own registration is for published events only, whatever one's role on the
    event: the owner, an editor and a platform admin get the viewer's answer, with or without naming
    themselves as `user_id`."""
    draft = await create_event(api, user)
    editor, viewer = await create_user(db), await create_user(db)
    await grant(api, draft, user, editor, "EVENT_ROLE_EDITOR")
    await grant(api, draft, user, viewer, "EVENT_ROLE_VIEWER")
    path = f"/api/events/{draft['id']}/participants"

    answers: set[tuple[Any, ...]] = set()
    for who in (viewer, user, editor, admin):
        for body in ({}, {"user_id": str(who.id)}):
            response = await api.post(path, json=body, headers=who.headers)
            answer = response.json()
            reasons = [detail.get("reason") for detail in answer.get("details", [])]
            answers.add((response.status_code, *reasons, answer.get("message")))
    assert answers == {(400, "REGISTRATION_CLOSED", "registration opens once the event is published")}

    # Editors still put other people on a draft's list (README, Notifications: "as its editor,
    # register anyone for it"); that is managing registrations, not registering oneself.
    added = await api.post(path, json={"user_id": str(other_user.id)}, headers=editor.headers)
    assert added.status_code == 200, added.text
    listed = (await api.get(path, headers=user.headers)).json()["participants"]
    assert [p["user_id"] for p in listed] == [str(other_user.id)]


@pytest.mark.parametrize("how", ["back_in_review", "cancelled"])
async def test_one_still_leaves_an_event_that_is_no_longer_published(
    api: httpx.AsyncClient, event: dict[str, Any], user: User, other_user: User, how: str
) -> None:
    """Registrations made while an event was published can be cancelled once it is not, by the owner
    as by anyone; coming back to it (here: going -> interested) waits for it to be published again."""
    for who in (user, other_user):
        await register(api, event, who)
    url = f"/api/events/{event['id']}"
    if how == "back_in_review":
        edited = await api.patch(
            url, params={"update_mask": "description"}, json={"description": "Now with a choir."}, headers=user.headers
        )
        assert edited.json()["status"] == "EVENT_STATUS_PENDING_REVIEW", edited.text
    else:
        cancelled = await api.post(f"{url}:cancel", json={}, headers=user.headers)
        assert cancelled.json()["event"]["status"] == "EVENT_STATUS_CANCELLED", cancelled.text

    for who in (user, other_user):
        path = resource(event, who)
        changed = await api.put(path, json={"status": "PARTICIPANT_STATUS_INTERESTED"}, headers=who.headers)
        assert changed.status_code == 400, changed.text
        assert changed.json()["details"][0]["reason"] == "REGISTRATION_CLOSED"
        assert (await api.get(path, headers=who.headers)).json()["status"] == "PARTICIPANT_STATUS_GOING"
        left = await api.delete(path, headers=who.headers)
        assert left.status_code == 200, left.text
        # Read by the owner: having left an event that is not published, one no longer sees it.
        assert (await api.get(path, headers=user.headers)).json()["status"] == "PARTICIPANT_STATUS_CANCELLED"
