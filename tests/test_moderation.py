"""The moderation workflow: every transition, the forbidden ones, the log, the queue, and two
moderators racing on one event."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import User, create_event, create_user, service_role_token
from tests.test_bad_input import assert_json_error


async def _post(api: httpx.AsyncClient, event_id: str, verb: str, who: User, **body: Any) -> httpx.Response:
    return await api.post(f"/api/events/{event_id}:{verb}", json=body, headers=who.headers)


async def _log(db: asyncpg.Pool, event_id: str) -> list[tuple[str | None, str]]:
    rows = await db.fetch(
        "select from_status, to_status from public.event_moderation_log where event_id = $1 order by id",
        uuid.UUID(event_id),
    )
    return [(row["from_status"], row["to_status"]) for row in rows]


async def test_submit_approve_publishes_and_logs_every_step(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User, admin: User
) -> None:
    event = await create_event(api, user)
    submitted = await _post(api, event["id"], "submit", user)
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["event"]["status"] == "EVENT_STATUS_PENDING_REVIEW"
    assert submitted.json()["event"]["submitted_at"]
    assert (await api.get(f"/api/events/{event['id']}")).status_code == 404, "pending events are not public"

    approved = await _post(api, event["id"], "approve", admin)
    assert approved.status_code == 200, approved.text
    assert approved.json()["event"]["status"] == "EVENT_STATUS_PUBLISHED"
    assert (await api.get(f"/api/events/{event['id']}")).status_code == 200

    assert await _log(db, event["id"]) == [
        (None, "draft"),
        ("draft", "pending_review"),
        ("pending_review", "published"),
    ]
    log = await api.get(f"/api/events/{event['id']}/moderation-log", headers=user.headers)
    assert log.status_code == 200, log.text
    entries = log.json()["entries"]
    assert [entry["to_status"] for entry in entries] == [
        "EVENT_STATUS_DRAFT",
        "EVENT_STATUS_PENDING_REVIEW",
        "EVENT_STATUS_PUBLISHED",
    ]
    assert entries[2]["actor_id"] == str(admin.id)
    assert entries[1]["actor_id"] == str(user.id)


async def test_reject_needs_a_reason_the_partner_sees_then_resubmit(
    api: httpx.AsyncClient, user: User, admin: User
) -> None:
    event = await create_event(api, user)
    await _post(api, event["id"], "submit", user)
    assert (await _post(api, event["id"], "reject", admin)).status_code == 400
    assert (await _post(api, event["id"], "reject", admin, reason="  ")).status_code == 400

    rejected = await _post(api, event["id"], "reject", admin, reason="Add the venue address")
    assert rejected.status_code == 200, rejected.text
    seen_by_owner = (await api.get(f"/api/events/{event['id']}", headers=user.headers)).json()
    assert seen_by_owner["status"] == "EVENT_STATUS_REJECTED"
    assert seen_by_owner["status_reason"] == "Add the venue address"

    # Editing keeps it rejected; it cannot be published without going through review again.
    edited = await api.patch(
        f"/api/events/{event['id']}",
        params={"update_mask": "address"},
        json={"address": "99 Sukhumvit Rd"},
        headers=user.headers,
    )
    assert edited.json()["status"] == "EVENT_STATUS_REJECTED"
    self_publish = await api.patch(
        f"/api/events/{event['id']}",
        params={"update_mask": "status"},
        json={"status": "EVENT_STATUS_PUBLISHED"},
        headers=user.headers,
    )
    assert self_publish.status_code == 403
    approve_rejected = await _post(api, event["id"], "approve", admin)
    assert approve_rejected.status_code == 409
    assert "INVALID_STATE" in approve_rejected.text

    resubmitted = await _post(api, event["id"], "submit", user)
    assert resubmitted.json()["event"]["status"] == "EVENT_STATUS_PENDING_REVIEW"
    assert resubmitted.json()["event"]["status_reason"] == ""
    assert (await _post(api, event["id"], "approve", admin)).json()["event"]["status"] == "EVENT_STATUS_PUBLISHED"


async def test_partner_cannot_approve_their_own_event(api: httpx.AsyncClient, user: User) -> None:
    event = await create_event(api, user)
    await _post(api, event["id"], "submit", user)
    for verb, body in (("approve", {}), ("reject", {"reason": "no"})):
        response = await _post(api, event["id"], verb, user, **body)
        assert response.status_code == 403, response.text
    created_published = await api.post(
        "/api/events", json={**event, "id": "", "status": "EVENT_STATUS_PUBLISHED"}, headers=user.headers
    )
    assert created_published.status_code == 403


async def test_admin_approving_a_deleted_event_gets_404(api: httpx.AsyncClient, user: User, admin: User) -> None:
    event = await create_event(api, user)
    await _post(api, event["id"], "submit", user)
    assert (await api.delete(f"/api/events/{event['id']}", headers=user.headers)).status_code == 200
    assert (await _post(api, event["id"], "approve", admin)).status_code == 404
    # The history outlives the event, for admins.
    log = await api.get(f"/api/events/{event['id']}/moderation-log", headers=admin.headers)
    assert [e["to_status"] for e in log.json()["entries"]][-1] == "EVENT_STATUS_PENDING_REVIEW"
    # An id that never was an event has no history: 404, as for everything else named by it.
    never = await api.get(f"/api/events/{uuid.uuid4()}/moderation-log", headers=admin.headers)
    assert never.status_code == 404, never.text


async def test_cancel_is_for_owners_and_keeps_the_event_readable(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    editor = await create_user(db)
    grant = await api.post(
        f"/api/events/{event['id']}/permissions",
        json={"user_id": str(editor.id), "role": "EVENT_ROLE_EDITOR"},
        headers=user.headers,
    )
    assert grant.status_code == 200
    assert (await _post(api, event["id"], "cancel", editor)).status_code == 403
    cancelled = await _post(api, event["id"], "cancel", user, reason="Storm warning")
    assert cancelled.status_code == 200
    public_view = await api.get(f"/api/events/{event['id']}")
    assert public_view.status_code == 200
    assert public_view.json()["status"] == "EVENT_STATUS_CANCELLED"
    assert public_view.json()["status_reason"] == "Storm warning"
    assert (await _post(api, event["id"], "cancel", user)).status_code == 409
    assert (await _post(api, event["id"], "submit", user)).status_code == 409


async def test_an_editor_cancelling_by_patch_is_refused_as_by_cancel(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    """Cancelling is the owner's (CONTRACT §3) whichever way it is asked for: an editor who may see and
    edit the event gets 403 for status CANCELLED in a PATCH or PUT, as for :cancel (it was a 400
    FAILED_PRECONDITION saying the event 'cannot go from published to cancelled this way')."""
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    editor = await create_user(db)
    grant = await api.post(
        f"/api/events/{event['id']}/permissions",
        json={"user_id": str(editor.id), "role": "EVENT_ROLE_EDITOR"},
        headers=user.headers,
    )
    assert grant.status_code == 200, grant.text
    url = f"/api/events/{event['id']}"
    patched = await api.patch(
        url, params={"update_mask": "status"}, json={"status": "EVENT_STATUS_CANCELLED"}, headers=editor.headers
    )
    assert patched.status_code == 403, patched.text
    assert patched.json()["details"][0]["reason"] == "PERMISSION_DENIED"
    put = await api.put(url, json={"title": "Still on", "status": "EVENT_STATUS_CANCELLED"}, headers=editor.headers)
    assert put.status_code == 403, put.text
    after = await api.get(url, headers=user.headers)
    assert (after.json()["status"], after.json()["title"]) == ("EVENT_STATUS_PUBLISHED", event["title"])
    owner = await api.patch(
        url, params={"update_mask": "status"}, json={"status": "EVENT_STATUS_CANCELLED"}, headers=user.headers
    )
    assert owner.status_code == 200, owner.text
    assert owner.json()["status"] == "EVENT_STATUS_CANCELLED"


async def test_a_cancelled_draft_never_becomes_public(api: httpx.AsyncClient, user: User) -> None:
    event = await create_event(api, user)
    assert (await _post(api, event["id"], "cancel", user)).status_code == 200
    assert (await api.get(f"/api/events/{event['id']}")).status_code == 404


async def test_content_edits_send_a_published_event_back_to_review_logistics_do_not(
    api: httpx.AsyncClient, user: User
) -> None:
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", capacity=10)
    url = f"/api/events/{event['id']}"
    logistics = await api.patch(url, params={"update_mask": "capacity"}, json={"capacity": 20}, headers=user.headers)
    assert logistics.json()["status"] == "EVENT_STATUS_PUBLISHED"
    content = await api.patch(url, params={"update_mask": "title"}, json={"title": "New name"}, headers=user.headers)
    assert content.status_code == 200
    assert content.json()["status"] == "EVENT_STATUS_PENDING_REVIEW"
    assert (await api.get(url)).status_code == 404


async def test_admin_edits_do_not_trigger_review(api: httpx.AsyncClient, user: User, admin: User) -> None:
    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    fixed = await api.patch(
        f"/api/events/{event['id']}",
        params={"update_mask": "title"},
        json={"title": "Typo fixed"},
        headers=admin.headers,
    )
    assert fixed.json()["status"] == "EVENT_STATUS_PUBLISHED"


async def test_stale_etag_is_refused(api: httpx.AsyncClient, user: User, admin: User) -> None:
    event = await create_event(api, user)
    submitted = (await _post(api, event["id"], "submit", user)).json()["event"]
    stale = await _post(api, event["id"], "approve", admin, etag=event["etag"])
    assert stale.status_code == 409
    assert "ETAG_MISMATCH" in stale.text
    fresh = await _post(api, event["id"], "approve", admin, etag=submitted["etag"])
    assert fresh.status_code == 200


async def test_two_moderators_at_once_exactly_one_wins(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User, admin: User
) -> None:
    second_admin = await create_user(db, admin=True)
    for _ in range(5):
        event = await create_event(api, user)
        await _post(api, event["id"], "submit", user)
        approve, reject = await asyncio.gather(
            _post(api, event["id"], "approve", admin),
            _post(api, event["id"], "reject", second_admin, reason="Duplicate listing"),
        )
        assert sorted([approve.status_code, reject.status_code]) == [200, 409], (approve.text, reject.text)
        loser = approve if approve.status_code == 409 else reject
        winner_status = "EVENT_STATUS_REJECTED" if loser is approve else "EVENT_STATUS_PUBLISHED"
        assert winner_status in loser.text, "the loser is told the current state"
        decisions = [step for step in await _log(db, event["id"]) if step[0] == "pending_review"]
        assert len(decisions) == 1


async def test_moderation_queue_oldest_first_filtered_and_admin_only(
    api: httpx.AsyncClient, user: User, admin: User
) -> None:
    category = f"cat-{uuid.uuid4().hex[:8]}"
    submitted = []
    for i in range(3):
        event = await create_event(api, user, title=f"Queued {i}", category=category)
        await _post(api, event["id"], "submit", user)
        submitted.append(event["id"])
    await create_event(api, user, title="Not submitted", category=category)

    assert (await api.get("/api/moderation/events", headers=user.headers)).status_code == 403
    assert (await api.get("/api/moderation/events")).status_code == 401
    seen: list[str] = []
    token = ""
    while True:
        params: dict[str, str | int] = {"category": category, "page_size": 2}
        if token:
            params["page_token"] = token
        page = await api.get("/api/moderation/events", params=params, headers=admin.headers)
        assert page.status_code == 200, page.text
        seen += [e["id"] for e in page.json()["events"]]
        token = page.json().get("next_page_token", "")
        if not token:
            break
    assert seen == submitted


async def test_the_queue_takes_a_category_whatever_its_case_and_spaces(
    api: httpx.AsyncClient, user: User, admin: User
) -> None:
    """`category=Music` listed no event of category `music`: the category is compared without regard to
    case or spaces around it, as search and analytics do."""
    category = f"cat-{uuid.uuid4().hex[:8]}"
    submitted = []
    for spelled in (category, f" {category.upper()} "):
        event = await create_event(api, user, title="Queued", category=spelled)
        await _post(api, event["id"], "submit", user)
        submitted.append(event["id"])
    for asked in (category, category.upper(), f"  {category.title()} "):
        page = await api.get("/api/moderation/events", params={"category": asked}, headers=admin.headers)
        assert page.status_code == 200, page.text
        assert [e["id"] for e in page.json()["events"]] == submitted, asked


async def test_a_queue_page_token_is_only_good_for_the_filters_that_made_it(
    api: httpx.AsyncClient, user: User, admin: User
) -> None:
    """AIP-158: a moderation queue token sent with another category or source is a 400 naming page_token
    (it went on listing another queue from the first one's position); page_size alone may change."""
    category = f"cat-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        event = await create_event(api, user, title=f"Queued {i}", category=category)
        await _post(api, event["id"], "submit", user)
    first = await api.get(
        "/api/moderation/events", params={"category": category, "page_size": 1}, headers=admin.headers
    )
    token = first.json()["next_page_token"]
    assert token, first.text
    rest = await api.get(
        "/api/moderation/events",
        params={"category": category, "page_size": 5, "page_token": token},
        headers=admin.headers,
    )
    assert rest.status_code == 200 and len(rest.json()["events"]) == 2, rest.text
    for params in ({"category": f"{category}-other"}, {}, {"category": category, "source": "scraper"}):
        refused = await api.get("/api/moderation/events", params={**params, "page_token": token}, headers=admin.headers)
        assert_json_error(refused, 400, "INVALID_ARGUMENT", "page_token")


@pytest.mark.parametrize("status", ["published", "rejected"])
async def test_the_database_refuses_self_publishing_and_keeps_the_log_append_only(
    database_url: str, status: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        owner = uuid.uuid4()
        await conn.execute("insert into auth.users (id) values ($1)", owner)
        event_id = await conn.fetchval(
            "insert into public.events (created_by, title, starts_at, ends_at, timezone) "
            "values ($1, 'Direct', now() + interval '1 day', now() + interval '2 days', 'UTC') returning id",
            owner,
        )
        claims = json.dumps({"sub": str(owner), "role": "authenticated"})
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute(
                    "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
                    claims,
                )
                await conn.execute(
                    "update public.events set status = $2, status_reason = 'x' where id = $1", event_id, status
                )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("delete from public.event_moderation_log where event_id = $1", event_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "update public.event_moderation_log set reason = 'rewritten' where event_id = $1", event_id
            )
    finally:
        await conn.close()


async def test_service_role_may_publish_directly(api: httpx.AsyncClient, user: User) -> None:
    backend = {"authorization": f"Bearer {service_role_token()}"}
    event = await create_event(api, user)
    published = await api.patch(
        f"/api/events/{event['id']}",
        params={"update_mask": "status"},
        json={"status": "EVENT_STATUS_PUBLISHED"},
        headers=backend,
    )
    assert published.status_code == 200, published.text
    assert published.json()["status"] == "EVENT_STATUS_PUBLISHED"


async def test_every_other_transition_by_role(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User, admin: User
) -> None:
    """The rest of the table: editors submit and withdraw, viewers cannot; drafts cannot be
    rejected; a published event can be cancelled but not submitted; admins may publish a draft."""
    event = await create_event(api, user)
    editor, viewer = await create_user(db), await create_user(db)
    for person, role in ((editor, "EVENT_ROLE_EDITOR"), (viewer, "EVENT_ROLE_VIEWER")):
        granted = await api.post(
            f"/api/events/{event['id']}/permissions",
            json={"user_id": str(person.id), "role": role},
            headers=user.headers,
        )
        assert granted.status_code == 200, granted.text
    assert (await _post(api, event["id"], "submit", viewer)).status_code == 403
    assert (await _post(api, event["id"], "reject", admin, reason="not yet submitted")).status_code == 409
    assert (await _post(api, event["id"], "submit", editor)).json()["event"]["status"] == "EVENT_STATUS_PENDING_REVIEW"
    withdrawn = await api.patch(
        f"/api/events/{event['id']}",
        params={"update_mask": "status"},
        json={"status": "EVENT_STATUS_DRAFT"},
        headers=editor.headers,
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "EVENT_STATUS_DRAFT"

    published = await _post(api, event["id"], "approve", admin)
    assert published.json()["event"]["status"] == "EVENT_STATUS_PUBLISHED", "admins publish drafts directly"
    assert (await _post(api, event["id"], "submit", user)).status_code == 409
    assert (await _post(api, event["id"], "approve", admin)).status_code == 409
    assert await _log(db, event["id"]) == [
        (None, "draft"),
        ("draft", "pending_review"),
        ("pending_review", "draft"),
        ("draft", "published"),
    ]
