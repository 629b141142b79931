"""The events API end to end, through the JSON gateway and over gRPC."""

from __future__ import annotations

import asyncio

import grpc
import httpx

from localplus.events.v1 import events_pb2, events_pb2_grpc
from tests.support import User, create_event, event_body


async def test_create_then_read_back_through_the_gateway(api: httpx.AsyncClient, user: User) -> None:
    created = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", capacity=40)
    assert created["created_by"] == str(user.id)
    assert created["status"] == "EVENT_STATUS_PUBLISHED"
    assert created["visibility"] == "EVENT_VISIBILITY_PUBLIC"
    assert created["capacity"] == 40
    assert created["tags"] == ["jazz", "live"]
    assert created["etag"]

    fetched = await api.get(f"/api/events/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


async def test_new_event_is_a_public_draft_hidden_from_others(
    api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    created = await create_event(api, user)
    assert created["status"] == "EVENT_STATUS_DRAFT"
    assert created["visibility"] == "EVENT_VISIBILITY_PUBLIC"
    assert (await api.get(f"/api/events/{created['id']}", headers=other_user.headers)).status_code == 404
    assert (await api.get(f"/api/events/{created['id']}")).status_code == 404
    assert (await api.get(f"/api/events/{created['id']}", headers=user.headers)).status_code == 200


async def test_patch_with_update_mask_and_etag(api: httpx.AsyncClient, user: User) -> None:
    created = await create_event(api, user)
    patched = await api.patch(
        f"/api/events/{created['id']}",
        params={"update_mask": "title,capacity"},
        json={"title": "Jazz at dusk", "capacity": 10, "description": "ignored: not in the mask"},
        headers=user.headers,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["title"] == "Jazz at dusk"
    assert body["capacity"] == 10
    assert body["description"] == created["description"]
    assert body["etag"] != created["etag"]

    stale = await api.patch(
        f"/api/events/{created['id']}",
        json={"title": "Too late", "etag": created["etag"]},
        headers=user.headers,
    )
    assert stale.status_code == 409
    assert "ETAG_MISMATCH" in stale.text


async def test_put_replaces_the_fields_sent(api: httpx.AsyncClient, user: User) -> None:
    created = await create_event(api, user)
    body = event_body(title="Renamed", venue_name="Warehouse 30")
    replaced = await api.put(f"/api/events/{created['id']}", json=body, headers=user.headers)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["title"] == "Renamed"
    assert replaced.json()["venue_name"] == "Warehouse 30"


async def test_delete_answers_empty_object_then_404(api: httpx.AsyncClient, user: User) -> None:
    created = await create_event(api, user)
    deleted = await api.delete(f"/api/events/{created['id']}", headers=user.headers)
    assert deleted.status_code == 200
    assert deleted.json() == {}
    assert (await api.get(f"/api/events/{created['id']}", headers=user.headers)).status_code == 404


async def test_list_pages_through_published_public_events_only(api: httpx.AsyncClient, user: User) -> None:
    mine = {
        (await create_event(api, user, title=f"Listed {i}", status="EVENT_STATUS_PUBLISHED"))["id"] for i in range(5)
    }
    hidden = {
        (await create_event(api, user, title="Draft"))["id"],
        (await create_event(api, user, status="EVENT_STATUS_PUBLISHED", visibility="EVENT_VISIBILITY_PRIVATE"))["id"],
        (await create_event(api, user, status="EVENT_STATUS_PUBLISHED", visibility="EVENT_VISIBILITY_UNLISTED"))["id"],
    }
    seen: list[str] = []
    token = ""
    while True:
        params: dict[str, str | int] = {"page_size": 2, **({"page_token": token} if token else {})}
        page = await api.get("/api/events", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["events"]) <= 2
        seen += [event["id"] for event in body["events"]]
        token = body.get("next_page_token", "")
        if not token:
            break
    assert len(seen) == len(set(seen)), "an event appeared on two pages"
    assert mine <= set(seen)
    assert not hidden & set(seen)


async def test_unlisted_event_is_readable_by_id(api: httpx.AsyncClient, user: User) -> None:
    created = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", visibility="EVENT_VISIBILITY_UNLISTED")
    assert (await api.get(f"/api/events/{created['id']}")).status_code == 200


async def test_registration_waitlist_and_promotion(api: httpx.AsyncClient, user: User, db: object) -> None:
    from tests.support import create_user

    event = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", capacity=1)
    first, second = await create_user(db), await create_user(db)  # type: ignore[arg-type]
    url = f"/api/events/{event['id']}/participants"
    going = await api.post(url, json={}, headers=first.headers)
    assert going.status_code == 200, going.text
    assert going.json()["status"] == "PARTICIPANT_STATUS_GOING"
    waiting = await api.post(url, json={}, headers=second.headers)
    assert waiting.json()["status"] == "PARTICIPANT_STATUS_WAITLISTED"
    again = await api.post(url, json={}, headers=second.headers)
    assert again.status_code == 409

    assert (await api.delete(url, headers=first.headers)).status_code == 200
    mine = await api.get(url, headers=second.headers)
    assert [p["status"] for p in mine.json()["participants"]] == ["PARTICIPANT_STATUS_GOING"]


async def test_grpc_direct_and_through_gateway_agree(
    api: httpx.AsyncClient, user: User, events_channel: grpc.aio.Channel, gateway_channel: grpc.aio.Channel
) -> None:
    created = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    request = events_pb2.GetEventRequest(id=created["id"])
    direct = await events_pb2_grpc.EventsServiceStub(events_channel).GetEvent(request)
    via_gateway = await events_pb2_grpc.EventsServiceStub(gateway_channel).GetEvent(request)
    assert direct == via_gateway
    assert direct.title == created["title"]


async def test_concurrent_patches_without_an_etag_all_apply(api: httpx.AsyncClient, user: User) -> None:
    """Without an etag the caller asked for no version check (AIP-134): each PATCH waits for the one
    before it and applies to what it wrote, where a compare-and-set answered 409 to all but one."""
    created = await create_event(api, user)
    fields = ["title", "description", "venue_name", "address", "category", "capacity"] * 3

    async def patch(n: int, field: str) -> httpx.Response:
        value: str | int = 100 + n if field == "capacity" else f"{field} {n}"
        return await api.patch(
            f"/api/events/{created['id']}", params={"update_mask": field}, json={field: value}, headers=user.headers
        )

    answers = await asyncio.gather(*(patch(n, field) for n, field in enumerate(fields)))
    assert [a.status_code for a in answers] == [200] * len(fields), [a.text for a in answers if a.status_code != 200]
    final = (await api.get(f"/api/events/{created['id']}", headers=user.headers)).json()
    # Every field holds one of the values written to it, and the version counted every write.
    for field in set(fields):
        written = {a.json().get(field) for a in answers} | {created.get(field)}
        assert final.get(field) in written, field
    assert int(final["etag"]) == int(created["etag"]) + len(fields)


async def test_an_etag_still_refuses_a_write_after_a_concurrent_one(api: httpx.AsyncClient, user: User) -> None:
    created = await create_event(api, user)
    answers = await asyncio.gather(
        *(
            api.patch(
                f"/api/events/{created['id']}", json={"title": f"T{n}", "etag": created["etag"]}, headers=user.headers
            )
            for n in range(6)
        )
    )
    assert sorted(a.status_code for a in answers) == [200] + [409] * 5, [a.text for a in answers]


async def test_if_match_makes_a_write_conditional_like_etag(api: httpx.AsyncClient, user: User) -> None:
    """HTTP clients send the version they read as `If-Match` (quoted, weak or bare): a stale one is refused
    with 409 ETAG_MISMATCH like a stale `etag` and writes nothing, where it was ignored and the write
    overwrote whatever had changed meanwhile. `*` asks for no version; an If-Match that disagrees with
    the body's etag is a 400."""
    created = await create_event(api, user)
    url = f"/api/events/{created['id']}"
    moved_on = await api.patch(url, params={"update_mask": "title"}, json={"title": "Moved on"}, headers=user.headers)
    assert moved_on.status_code == 200, moved_on.text
    stale = f'"{created["etag"]}"'
    for header in (stale, f"W/{stale}", created["etag"]):
        refused = await api.patch(
            url,
            params={"update_mask": "title"},
            json={"title": "Lost update"},
            headers=user.headers | {"if-match": header},
        )
        assert refused.status_code == 409, (header, refused.text)
        assert refused.json()["details"][0]["reason"] == "ETAG_MISMATCH"
    deleted = await api.delete(url, headers=user.headers | {"if-match": stale})
    assert deleted.status_code == 409, deleted.text
    current = (await api.get(url, headers=user.headers)).json()
    assert current["title"] == "Moved on"

    both = await api.patch(
        url,
        params={"update_mask": "title"},
        json={"title": "Which one?", "etag": current["etag"]},
        headers=user.headers | {"if-match": stale},
    )
    assert both.status_code == 400, both.text
    fresh = await api.patch(
        url,
        params={"update_mask": "title"},
        json={"title": "Checked"},
        headers=user.headers | {"if-match": f'"{current["etag"]}"'},
    )
    assert fresh.status_code == 200, fresh.text
    anyway = await api.patch(
        url, params={"update_mask": "title"}, json={"title": "Any"}, headers=user.headers | {"if-match": "*"}
    )
    assert anyway.status_code == 200, anyway.text
    gone = await api.delete(url, headers=user.headers | {"if-match": f'"{anyway.json()["etag"]}"'})
    assert gone.status_code == 200, gone.text
