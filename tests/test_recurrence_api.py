"""Recurring events through the gateway: occurrences built when the event is written, exceptions per
occurrence that survive rule edits, "this and following" splits, what's on in a city, iCalendar and
JSON feeds with their cache headers, registrations for one occurrence, and bad recurrences as 400s."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import icalendar

from localplus_dev.stack import Stack
from localplus_recurrence import calendars
from tests.support import (
    User,
    add_city,
    businesses_hidden,
    create_event,
    create_user,
    iso,
    registration_statuses,
    service_role_token,
)
from tests.test_bad_input import assert_json_error
from tests.test_telemetry import moved_by, scrape
from tests.ticketing_support import checkout, my_tickets, reserve

LONDON = ZoneInfo("Europe/London")
BACKEND = {"authorization": f"Bearer {service_role_token()}"}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def next_weekday(zone: ZoneInfo, weekday: int, hour: int, *, after_days: int = 2) -> datetime:
    """The first `weekday` (0 = Monday) at `hour` local time at least `after_days` from now, in UTC."""
    day = (datetime.now(zone) + timedelta(days=after_days)).date()
    day += timedelta(days=(weekday - day.weekday()) % 7)
    return datetime(day.year, day.month, day.day, hour, tzinfo=zone).astimezone(UTC)


async def weekly_event(
    api: httpx.AsyncClient, owner: User, rule: str = "FREQ=WEEKLY;BYDAY=TU;COUNT=6", **overrides: Any
) -> dict[str, Any]:
    starts = next_weekday(LONDON, 1, 19)
    body: dict[str, Any] = {
        "starts_at": iso(starts),
        "ends_at": iso(starts + timedelta(hours=2)),
        "timezone": "Europe/London",
        "recurrence": {"rrule": rule},
        "status": "EVENT_STATUS_PUBLISHED",
    }
    return await create_event(api, owner, **(body | overrides))


async def occurrences(api: httpx.AsyncClient, event_id: str, **params: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        response = await api.get(
            f"/api/events/{event_id}/occurrences", params={"page_size": 100, "page_token": token, **params}
        )
        assert response.status_code == 200, response.text
        found += response.json()["occurrences"]
        token = response.json()["next_page_token"]
        if not token:
            return found


async def patch(
    api: httpx.AsyncClient, user: User, event_id: str, occurrence_id: str, body: dict[str, Any], **params: str
) -> httpx.Response:
    return await api.patch(
        f"/api/events/{event_id}/occurrences/{occurrence_id}", json=body, params=params, headers=user.headers
    )


async def set_rule(api: httpx.AsyncClient, user: User, event_id: str, rule: str) -> httpx.Response:
    body = {"recurrence": {"rrule": rule}}
    return await api.patch(
        f"/api/events/{event_id}", params={"update_mask": "recurrence"}, json=body, headers=user.headers
    )


def local(occurrence: dict[str, Any], field: str = "starts_at") -> str:
    return parse_time(occurrence[field]).astimezone(LONDON).strftime("%a %H:%M")


async def test_a_weekly_series_has_a_year_of_occurrences_at_19_00_local(api: httpx.AsyncClient, user: User) -> None:
    event = await weekly_event(api, user, rule="rrule:freq=weekly;byday=tu")
    assert event["recurrence"]["rrule"] == "FREQ=WEEKLY;BYDAY=TU"  # stored normalised
    found = await occurrences(api, event["id"])
    # Unbounded: materialised for the rolling horizon (365 days), never beyond it.
    assert 52 <= len(found) <= 53
    assert parse_time(found[-1]["starts_at"]) < datetime.now(UTC) + timedelta(days=365)
    assert {local(o) for o in found} == {"Tue 19:00"}  # across both DST changes of the year
    assert {parse_time(o["ends_at"]) - parse_time(o["starts_at"]) for o in found} == {timedelta(hours=2)}
    assert found[0]["starts_at"] == event["starts_at"]
    assert len({o["id"] for o in found}) == len(found)


async def test_bad_recurrences_are_400s_and_nothing_is_written(api: httpx.AsyncClient, user: User) -> None:
    starts = next_weekday(LONDON, 1, 19)
    cases = [
        ({"rrule": "FREQ=WEEKLY;BYDAY=ZZ"}, "recurrence.rrule"),
        ({"rrule": "FREQ=SECONDLY"}, "recurrence.rrule"),
        ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "recurrence.rrule"),
        ({"rrule": "FREQ=WEEKLY;BYDAY=WE"}, "recurrence.rrule"),
        # A week later at 19:00 as Paris tells it (an hour ahead of London): no occurrence starts then.
        (
            {"rrule": "FREQ=WEEKLY", "exdates": [iso(starts + timedelta(days=7, hours=-1))]},
            "recurrence.exdates[0]",
        ),
        ({"rrule": ""}, "recurrence.rrule"),
    ]
    title = f"bad recurrence {uuid.uuid4()}"
    for recurrence, field in cases:
        body = {"title": title, "starts_at": iso(starts), "ends_at": iso(starts + timedelta(hours=2)),
                "timezone": "Europe/London", "recurrence": recurrence}  # fmt: skip
        response = await api.post("/api/events", json=body, headers=user.headers)
        assert response.status_code == 400, (recurrence, response.text)
        violations = [d for d in response.json()["details"] if "fieldViolations" in d or "field_violations" in d]
        assert field in response.text and violations, response.text
    mine = await api.get("/api/me/events", headers=user.headers)
    assert title not in mine.text


async def test_a_zero_interval_or_count_is_a_400_naming_the_rule(api: httpx.AsyncClient, user: User) -> None:
    """RFC 5545 wants INTERVAL and COUNT positive; INTERVAL=0 was stored (and put in calendar.ics) with no
    occurrence, INTERVAL=-1 was a 500."""
    starts = next_weekday(LONDON, 1, 19)
    title = f"nonsense recurrence {uuid.uuid4()}"
    for rule, part in (
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
        ("FREQ=WEEKLY;INTERVAL=-1", "INTERVAL"),
        ("FREQ=DAILY;COUNT=0", "COUNT"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY"),
        ("FREQ=MONTHLY;BYDAY=8TU", "BYDAY"),  # was a 500 (dateutil's IndexError)
    ):
        body = {"title": title, "starts_at": iso(starts), "ends_at": iso(starts + timedelta(hours=2)),
                "timezone": "Europe/London", "recurrence": {"rrule": rule}}  # fmt: skip
        response = await api.post("/api/events", json=body, headers=user.headers)
        assert response.status_code == 400, (rule, response.text)
        assert response.json()["code"] == 3, response.text  # INVALID_ARGUMENT
        assert "recurrence.rrule" in response.text and f"{part} must be" in response.json()["message"], response.text
    mine = await api.get("/api/me/events", headers=user.headers)
    assert title not in mine.text


async def test_exceptions_survive_a_rule_change_where_their_occurrence_does(api: httpx.AsyncClient, user: User) -> None:
    event = await weekly_event(api, user)
    first = await occurrences(api, event["id"])
    assert len(first) == 6
    cancel = await patch(api, user, event["id"], first[1]["id"], {"status": "OCCURRENCE_STATUS_CANCELLED"})
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "OCCURRENCE_STATUS_CANCELLED"
    later = parse_time(first[2]["starts_at"]) + timedelta(hours=1)
    moved_to = {"starts_at": iso(later), "ends_at": iso(later + timedelta(hours=2)), "note": "An hour later"}
    move = await patch(api, user, event["id"], first[2]["id"], moved_to)
    assert move.status_code == 200, move.text
    assert move.json()["moved"] and move.json()["original_starts_at"] == first[2]["starts_at"]
    small = await patch(api, user, event["id"], first[4]["id"], {"capacity": 5}, update_mask="capacity")
    assert small.json()["capacity"] == 5

    # Four instead of six: the fifth and sixth go, with the fifth's capacity.
    shorter = await set_rule(api, user, event["id"], "FREQ=WEEKLY;BYDAY=TU;COUNT=4")
    assert shorter.status_code == 200, shorter.text
    after = await occurrences(api, event["id"])
    assert [o["id"] for o in after] == [first[0]["id"], first[1]["id"], first[2]["id"], first[3]["id"]]
    assert after[1]["status"] == "OCCURRENCE_STATUS_CANCELLED"
    assert after[2]["note"] == "An hour later" and parse_time(after[2]["starts_at"]) == later
    # Back to six: the fifth is a new occurrence, without the exception.
    longer = await set_rule(api, user, event["id"], "FREQ=WEEKLY;BYDAY=TU;COUNT=6")
    assert longer.status_code == 200
    again = await occurrences(api, event["id"])
    assert len(again) == 6 and again[4]["id"] != first[4]["id"] and "capacity" not in again[4]
    # Moving the whole series to 20:00 changes every original start: no exception survives.
    starts = parse_time(event["starts_at"]) + timedelta(hours=1)
    moved = await api.patch(f"/api/events/{event['id']}", params={"update_mask": "starts_at,ends_at"},
                            json={"starts_at": iso(starts), "ends_at": iso(starts + timedelta(hours=2))},
                            headers=user.headers)  # fmt: skip
    assert moved.status_code == 200, moved.text
    final = await occurrences(api, event["id"])
    assert {local(o) for o in final} == {"Tue 20:00"}
    assert {o["status"] for o in final} == {"OCCURRENCE_STATUS_SCHEDULED"} and not any(o["note"] for o in final)


async def test_only_editors_change_occurrences_and_one_offs_are_edited_as_events(
    api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    event = await weekly_event(api, user)
    (occurrence, *_) = await occurrences(api, event["id"])
    denied = await patch(api, other_user, event["id"], occurrence["id"], {"note": "mine"})
    assert denied.status_code == 403, denied.text
    anonymous = await api.patch(f"/api/events/{event['id']}/occurrences/{occurrence['id']}", json={"note": "x"})
    assert anonymous.status_code == 401
    missing = await patch(api, user, event["id"], str(uuid.uuid4()), {"note": "x"})
    assert missing.status_code == 404
    one_off = await create_event(api, user, status="EVENT_STATUS_PUBLISHED")
    (single,) = await occurrences(api, one_off["id"])
    assert single["id"] == one_off["id"]
    refused = await patch(api, user, one_off["id"], single["id"], {"note": "x"})
    assert refused.status_code == 400 and "NOT_RECURRING" in refused.text


async def test_this_and_following_splits_the_series_and_leaves_the_earlier_ones_alone(
    api: httpx.AsyncClient, user: User
) -> None:
    event = await weekly_event(api, user)
    before = await occurrences(api, event["id"])
    await patch(api, user, event["id"], before[0]["id"], {"note": "first night"})
    await patch(api, user, event["id"], before[3]["id"], {"note": "guest band"})
    earlier = await occurrences(api, event["id"])
    later = parse_time(before[2]["starts_at"]) + timedelta(hours=1)
    split = await patch(api, user, event["id"], before[2]["id"],
                        {"starts_at": iso(later), "ends_at": iso(later + timedelta(hours=3))},
                        scope="UPDATE_SCOPE_THIS_AND_FOLLOWING")  # fmt: skip
    assert split.status_code == 200, split.text
    new_event_id = split.json()["event_id"]
    assert new_event_id != event["id"] and parse_time(split.json()["starts_at"]) == later

    kept = await occurrences(api, event["id"])
    assert kept == earlier[:2]  # the same rows, ids, times and notes
    old = (await api.get(f"/api/events/{event['id']}")).json()
    assert "UNTIL=" in old["recurrence"]["rrule"] and "COUNT" not in old["recurrence"]["rrule"]
    new = (await api.get(f"/api/events/{new_event_id}")).json()
    assert new["recurrence"]["rrule"] == "FREQ=WEEKLY;BYDAY=TU;COUNT=4"
    assert (new["title"], new["status"], new["created_by"]) == (event["title"], event["status"], event["created_by"])
    following = await occurrences(api, new_event_id)
    assert [local(o) for o in following] == ["Tue 20:00"] * 4
    assert {parse_time(o["ends_at"]) - parse_time(o["starts_at"]) for o in following} == {timedelta(hours=3)}
    assert [o["note"] for o in following] == ["", "guest band", "", ""]  # the exception moved along
    # The owner may edit the new event as the old one.
    edit = await patch(api, user, new_event_id, following[1]["id"], {"note": "changed"})
    assert edit.status_code == 200, edit.text


async def test_a_split_takes_along_the_permissions_still_in_force(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    """An expired grant is not copied to the new event (as a new grant it would be refused)."""
    event = await weekly_event(api, user)
    editor, former = await create_user(db), await create_user(db)
    await db.execute(
        "insert into public.event_permissions (event_id, user_id, role, expires_at) values"
        " ($1, $2, 'editor', now() + interval '30 days'), ($1, $3, 'editor', now() - interval '1 day')",
        uuid.UUID(event["id"]),
        editor.id,
        former.id,
    )
    found = await occurrences(api, event["id"])
    later = parse_time(found[2]["starts_at"]) + timedelta(hours=1)
    split = await patch(api, user, event["id"], found[2]["id"],
                        {"starts_at": iso(later), "ends_at": iso(later + timedelta(hours=3))},
                        scope="UPDATE_SCOPE_THIS_AND_FOLLOWING")  # fmt: skip
    assert split.status_code == 200, split.text
    copied = await db.fetch(
        "select user_id from public.event_permissions where event_id = $1", uuid.UUID(split.json()["event_id"])
    )
    assert [row["user_id"] for row in copied] == [editor.id]


async def test_a_split_keeps_who_granted_each_permission(api: httpx.AsyncClient, db: asyncpg.Pool, user: User) -> None:
    """The new series' permissions said granted_by "" (nobody): the copies were recorded as granted by
    the server that made them. They keep the owner who granted them, whoever splits the series."""
    event = await weekly_event(api, user)
    editor, viewer = await create_user(db), await create_user(db)
    for who, role in ((editor, "EVENT_ROLE_EDITOR"), (viewer, "EVENT_ROLE_VIEWER")):
        grant = {"user_id": str(who.id), "role": role}
        granted = await api.post(f"/api/events/{event['id']}/permissions", json=grant, headers=user.headers)
        assert granted.status_code == 200 and granted.json()["granted_by"] == str(user.id), granted.text
    found = await occurrences(api, event["id"])
    split = await patch(api, editor, event["id"], found[2]["id"], {"capacity": 5}, update_mask="capacity",
                        scope="UPDATE_SCOPE_THIS_AND_FOLLOWING")  # fmt: skip
    assert split.status_code == 200, split.text
    listed = await api.get(f"/api/events/{split.json()['event_id']}/permissions", headers=user.headers)
    assert listed.status_code == 200, listed.text
    granted_by = {p["user_id"]: p["granted_by"] for p in listed.json()["permissions"]}
    assert granted_by == {str(editor.id): str(user.id), str(viewer.id): str(user.id)}, listed.text


async def test_cancelling_this_and_following_ends_the_series(api: httpx.AsyncClient, user: User) -> None:
    event = await weekly_event(api, user)
    found = await occurrences(api, event["id"])
    ended = await patch(api, user, event["id"], found[3]["id"], {"status": "OCCURRENCE_STATUS_CANCELLED"},
                        scope="UPDATE_SCOPE_THIS_AND_FOLLOWING")  # fmt: skip
    assert ended.status_code == 200, ended.text
    assert [o["id"] for o in await occurrences(api, event["id"])] == [o["id"] for o in found[:3]]


async def test_a_split_that_keeps_the_times_keeps_the_occurrences_own_move(api: httpx.AsyncClient, user: User) -> None:
    """A capacity-only "this and following" from an occurrence moved to the next day put it back at its
    original time: its move was dropped as if the split had given it new times."""
    event = await weekly_event(api, user, capacity=10)
    found = await occurrences(api, event["id"])
    wednesday = parse_time(found[2]["starts_at"]) + timedelta(days=1)
    moved = await patch(api, user, event["id"], found[2]["id"],
                        {"starts_at": iso(wednesday), "ends_at": iso(wednesday + timedelta(hours=2))})  # fmt: skip
    assert moved.status_code == 200, moved.text
    split = await patch(api, user, event["id"], found[2]["id"], {"capacity": 5}, update_mask="capacity",
                        scope="UPDATE_SCOPE_THIS_AND_FOLLOWING")  # fmt: skip
    assert split.status_code == 200, split.text
    assert parse_time(split.json()["starts_at"]) == wednesday and split.json()["moved"], split.text
    following = await occurrences(api, split.json()["event_id"])
    assert [local(o) for o in following] == ["Wed 19:00", "Tue 19:00", "Tue 19:00", "Tue 19:00"]
    assert {o["capacity"] for o in following} == {5}


async def test_a_series_cannot_be_split_at_an_added_date_but_can_end_there(api: httpx.AsyncClient, user: User) -> None:
    """An RDATE's occurrence cannot start a series of the rule (its DTSTART must be the rule's first
    instance): the split was a 400 about a starts_at the caller never sent. Ending the series there works."""
    starts = next_weekday(LONDON, 1, 19)
    thursday = starts + timedelta(days=9)
    recurrence = {"rrule": "FREQ=WEEKLY;BYDAY=TU;COUNT=4", "rdates": [iso(thursday)]}
    event = await weekly_event(api, user, recurrence=recurrence)
    found = await occurrences(api, event["id"])
    assert [local(o) for o in found] == ["Tue 19:00", "Tue 19:00", "Thu 19:00", "Tue 19:00", "Tue 19:00"]
    following = {"scope": "UPDATE_SCOPE_THIS_AND_FOLLOWING"}
    refused = await patch(api, user, event["id"], found[2]["id"], {"capacity": 5}, update_mask="capacity", **following)
    assert refused.status_code == 400, refused.text
    assert "RDATE" in refused.json()["message"] and "UPDATE_SCOPE_THIS" in refused.json()["message"], refused.text
    assert await occurrences(api, event["id"]) == found
    ended = await patch(api, user, event["id"], found[2]["id"], {"status": "OCCURRENCE_STATUS_CANCELLED"}, **following)
    assert ended.status_code == 200, ended.text
    assert [o["id"] for o in await occurrences(api, event["id"])] == [o["id"] for o in found[:2]]


async def test_cancelling_this_and_following_from_the_first_occurrence_cancels_the_event(
    api: httpx.AsyncClient, db: asyncpg.Pool, user: User
) -> None:
    """From the first occurrence "this and following" is the whole series: it was a 400 saying the
    rule "yields no occurrence". Cancelling the whole series is cancelling the event, which is the
    owner's (an editor gets the 403 CancelEvent gives); moving it is editing the event (a clear 400)."""
    event = await weekly_event(api, user)
    found = await occurrences(api, event["id"])
    editor = await create_user(db)
    grant = {"user_id": str(editor.id), "role": "EVENT_ROLE_EDITOR"}
    granted = await api.post(f"/api/events/{event['id']}/permissions", json=grant, headers=user.headers)
    assert granted.status_code == 200, granted.text
    cancel = {"status": "OCCURRENCE_STATUS_CANCELLED"}
    following = {"scope": "UPDATE_SCOPE_THIS_AND_FOLLOWING"}
    later = parse_time(found[0]["starts_at"]) + timedelta(hours=1)
    move = {"starts_at": iso(later), "ends_at": iso(later + timedelta(hours=2))}
    moved = await patch(api, user, event["id"], found[0]["id"], move, **following)
    assert moved.status_code == 400, moved.text
    assert "first occurrence" in moved.json()["message"] and f"/api/events/{event['id']}" in moved.json()["message"]
    by_editor = await patch(api, editor, event["id"], found[0]["id"], cancel, **following)
    assert by_editor.status_code == 403 and "cancel" in by_editor.json()["message"], by_editor.text
    assert (await api.get(f"/api/events/{event['id']}")).json()["status"] == "EVENT_STATUS_PUBLISHED"

    ended = await patch(api, user, event["id"], found[0]["id"], cancel, **following)
    assert ended.status_code == 200, ended.text
    assert ended.json()["id"] == found[0]["id"] and ended.json()["status"] == "OCCURRENCE_STATUS_CANCELLED"
    assert (await api.get(f"/api/events/{event['id']}")).json()["status"] == "EVENT_STATUS_CANCELLED"
    after = await occurrences(api, event["id"])
    assert [o["id"] for o in after] == [o["id"] for o in found]
    assert {o["status"] for o in after} == {"OCCURRENCE_STATUS_CANCELLED"}


async def test_an_occurrence_cannot_be_moved_onto_another_ones_start(api: httpx.AsyncClient, user: User) -> None:
    """Two sessions of one event at one instant are one instance in RFC 5545's recurrence set (and in
    the feed, two VEVENTs clients show twice): 409. A called-off occurrence's time is free to take."""
    event = await weekly_event(api, user)
    found = await occurrences(api, event["id"])
    onto = {"starts_at": found[2]["starts_at"], "ends_at": found[2]["ends_at"]}
    clash = await patch(api, user, event["id"], found[1]["id"], onto)
    assert clash.status_code == 409, clash.text
    assert found[2]["starts_at"] in clash.json()["message"] or "another occurrence" in clash.json()["message"]
    assert (await occurrences(api, event["id"]))[1]["starts_at"] == found[1]["starts_at"]
    # Cancelled, its time is free: the replacement takes it, and the cancelled one cannot come back onto it.
    called_off = await patch(api, user, event["id"], found[2]["id"], {"status": "OCCURRENCE_STATUS_CANCELLED"})
    assert called_off.status_code == 200, called_off.text
    replaced = await patch(api, user, event["id"], found[1]["id"], onto)
    assert replaced.status_code == 200, replaced.text
    restored = await patch(api, user, event["id"], found[2]["id"], {"status": "OCCURRENCE_STATUS_SCHEDULED"})
    assert restored.status_code == 409, restored.text
    # Moving within its own slot (a later end) is no clash with itself.
    longer = parse_time(found[3]["ends_at"]) + timedelta(hours=1)
    stretched = await patch(api, user, event["id"], found[3]["id"], {"ends_at": iso(longer)}, update_mask="ends_at")
    assert stretched.status_code == 200, stretched.text


async def test_a_participant_splitting_the_series_gets_403_whatever_the_body(
    api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    """Who may not change the occurrences learns that first, as for every other edit (the body's
    meaning is checked once the caller may act): a note or restore with this scope was a 400 first."""
    event = await weekly_event(api, user)
    found = await occurrences(api, event["id"])
    joined = await api.post(f"/api/events/{event['id']}/participants", json={}, headers=other_user.headers)
    assert joined.status_code == 200, joined.text
    following = {"scope": "UPDATE_SCOPE_THIS_AND_FOLLOWING"}
    for body in ({"note": "mine"}, {"status": "OCCURRENCE_STATUS_SCHEDULED"}):
        denied = await patch(api, other_user, event["id"], found[2]["id"], body, **following)
        assert denied.status_code == 403, (body, denied.text)
    draft = await weekly_event(api, user, status="EVENT_STATUS_DRAFT")
    rows = await api.get(f"/api/events/{draft['id']}/occurrences", headers=user.headers)
    hidden = rows.json()["occurrences"][1]
    unseen = await patch(api, other_user, draft["id"], hidden["id"], {"note": "x"}, **following)
    assert unseen.status_code == 404, unseen.text
    # The editor still gets the 400 that explains the scope.
    explained = await patch(api, user, event["id"], found[2]["id"], {"note": "x"}, **following)
    assert explained.status_code == 400 and "occurrence.note" in explained.text, explained.text


async def test_a_registrations_occurrence_is_not_changed_by_put(
    api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    """PUT .../participants silently ignored occurrence_id. CONTRACT §6's PUT body is {status?,
    guest_count?, user_id?} and the occurrence is set when registering (as a ticket type keeps what was
    ordered): another one is a 400 naming occurrence_id; sending back the one it has is fine."""
    event = await weekly_event(api, user)
    found = await occurrences(api, event["id"])
    path = f"/api/events/{event['id']}/participants"
    registered = await api.post(path, json={"occurrence_id": found[1]["id"]}, headers=other_user.headers)
    assert registered.status_code == 200, registered.text
    for elsewhere in (found[2]["id"], str(uuid.uuid4())):
        moved = await api.put(path, json={"occurrence_id": elsewhere, "guest_count": 1}, headers=other_user.headers)
        assert moved.status_code == 400, moved.text
        assert "occurrence_id" in moved.text and "register" in moved.json()["message"], moved.text
    again = await api.get(f"{path}/{other_user.id}", headers=other_user.headers)
    assert (again.json()["occurrence_id"], again.json()["guest_count"]) == (found[1]["id"], 0)
    same = await api.put(path, json={**again.json(), "guest_count": 1}, headers=other_user.headers)
    assert same.status_code == 200, same.text
    assert (same.json()["occurrence_id"], same.json()["guest_count"]) == (found[1]["id"], 1)
    # A registration for the whole event does not change to one occurrence either.
    assert (await api.post(path, json={}, headers=user.headers)).status_code == 200
    series_wide = await api.put(path, json={"occurrence_id": found[2]["id"]}, headers=user.headers)
    assert series_wide.status_code == 400 and "occurrence_id" in series_wide.text, series_wide.text


async def test_whats_on_lists_published_public_occurrences_in_the_city(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    city = await add_city(db, f"city-{uuid.uuid4().hex[:8]}")
    await add_city(db, f"{city}-other")
    series = await weekly_event(api, user, city=city)
    once = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", city=city,
                              starts_at=iso(parse_time(series["starts_at"]) + timedelta(days=1, hours=1)),
                              ends_at=iso(parse_time(series["starts_at"]) + timedelta(days=1, hours=3)))  # fmt: skip
    await weekly_event(api, user, city=city, status="EVENT_STATUS_DRAFT")
    await weekly_event(api, user, city=city, visibility="EVENT_VISIBILITY_UNLISTED")
    elsewhere = await weekly_event(api, user, city=f"{city}-other")
    found = await occurrences(api, series["id"])
    await patch(api, user, series["id"], found[1]["id"], {"status": "OCCURRENCE_STATUS_CANCELLED"})

    start = parse_time(series["starts_at"]) - timedelta(hours=1)
    params = {"city": city, "start": iso(start), "end": iso(start + timedelta(days=15)), "page_size": "2"}
    listed, token = [], ""
    while True:
        response = await api.get("/api/occurrences", params={**params, "page_token": token})
        assert response.status_code == 200, response.text
        listed += response.json()["occurrences"]
        token = response.json()["next_page_token"]
        if not token:
            break
    assert [(item["event"]["id"], item["occurrence"]["id"]) for item in listed] == [
        (series["id"], found[0]["id"]), (once["id"], once["id"]), (series["id"], found[2]["id"]),
    ]  # fmt: skip
    assert listed[0]["event"]["title"] == series["title"] and listed[0]["event"]["recurring"]
    unknown = await api.get("/api/occurrences", params={**params, "city": "atlantis"})
    assert unknown.status_code == 400 and "atlantis" in unknown.json()["message"]
    # A blank city names no city, as in search: a 400, not every city.
    blank = await api.get("/api/occurrences", params={**params, "city": " "})
    assert_json_error(blank, 400, "INVALID_ARGUMENT", "city")
    everywhere = await api.get("/api/occurrences", params={**params, "city": "", "page_size": "100"})
    assert elsewhere["id"] in everywhere.text
    too_wide = await api.get("/api/occurrences", params={**params, "end": iso(start + timedelta(days=40))})
    assert too_wide.status_code == 400


async def test_occurrence_page_tokens_are_only_good_for_the_list_that_made_them(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    """AIP-158: an event's occurrences or what's on, a token sent with another event, window or city is a
    400 naming page_token (it listed the wrong occurrences); page_size alone may change."""
    city = await add_city(db, f"city-{uuid.uuid4().hex[:8]}")
    other_city = await add_city(db, f"{city}-other")
    series = await weekly_event(api, user, city=city)
    other = await weekly_event(api, user, city=city)
    start = parse_time(series["starts_at"]) - timedelta(hours=1)
    window = {"start": iso(start), "end": iso(start + timedelta(days=30))}

    path = f"/api/events/{series['id']}/occurrences"
    first = await api.get(path, params={**window, "page_size": 2})
    token = first.json()["next_page_token"]
    assert token, first.text
    rest = await api.get(path, params={**window, "page_size": 3, "page_token": token})
    assert rest.status_code == 200 and len(rest.json()["occurrences"]) == 3, rest.text
    elsewhere: list[tuple[str, dict[str, str]]] = [
        (path, {**window, "start": iso(start + timedelta(days=8))}),
        (path, {**window, "end": iso(start + timedelta(days=20))}),
        (path, {"end": window["end"]}),
        (f"/api/events/{other['id']}/occurrences", window),
    ]
    for url, params in elsewhere:
        refused = await api.get(url, params={**params, "page_size": 2, "page_token": token})
        assert_json_error(refused, 400, "INVALID_ARGUMENT", "page_token")

    first = await api.get("/api/occurrences", params={**window, "city": city, "page_size": 2})
    token = first.json()["next_page_token"]
    assert token, first.text
    rest = await api.get("/api/occurrences", params={**window, "city": city, "page_size": 5, "page_token": token})
    assert rest.status_code == 200, rest.text
    for params in ({**window, "city": other_city}, {**window, "city": ""}, {"city": city, "start": window["start"]}):
        refused = await api.get("/api/occurrences", params={**params, "page_size": 2, "page_token": token})
        assert_json_error(refused, 400, "INVALID_ARGUMENT", "page_token")


async def test_event_calendar_is_icalendar_with_rrule_exdate_and_overrides(api: httpx.AsyncClient, user: User) -> None:
    starts = next_weekday(LONDON, 1, 19)
    skipped = starts + timedelta(days=7)
    event = await weekly_event(
        api, user, recurrence={"rrule": "FREQ=WEEKLY;BYDAY=TU;COUNT=6", "exdates": [iso(skipped)]}
    )
    found = await occurrences(api, event["id"])
    assert len(found) == 5
    await patch(api, user, event["id"], found[1]["id"], {"status": "OCCURRENCE_STATUS_CANCELLED"})
    moved_to = parse_time(found[2]["starts_at"]) + timedelta(days=1)
    await patch(
        api,
        user,
        event["id"],
        found[2]["id"],
        {"starts_at": iso(moved_to), "ends_at": iso(moved_to + timedelta(hours=2))},
    )

    response = await api.get(f"/api/events/{event['id']}/calendar.ics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    calendar = icalendar.Calendar.from_ical(response.text)
    assert [tz["TZID"] for tz in calendar.walk("VTIMEZONE")] == ["Europe/London"]
    master, *overrides = calendar.walk("VEVENT")
    assert isinstance(master, icalendar.Event)
    assert master.uid == f"{event['id']}@localplus"
    (rule,) = master.rrules
    assert (rule["FREQ"], rule["BYDAY"], rule["COUNT"]) == (["WEEKLY"], ["TU"], [6])
    assert master.start == starts and str(master.decoded("DTSTART").tzinfo) == "Europe/London"
    assert master.exdates == [skipped]
    by_id = {o.decoded("RECURRENCE-ID"): o for o in overrides}
    assert set(by_id) == {parse_time(found[1]["starts_at"]), parse_time(found[2]["starts_at"])}
    assert by_id[parse_time(found[1]["starts_at"])]["STATUS"] == "CANCELLED"
    assert by_id[parse_time(found[2]["starts_at"])].decoded("DTSTART") == moved_to
    assert all(o["UID"] == master["UID"] for o in overrides)


async def test_calendar_writes_until_in_utc_as_rfc_5545_asks_beside_a_zoned_start(
    api: httpx.AsyncClient, user: User
) -> None:
    """The API takes UNTIL as a date (the end of that local day) or a floating local time; calendar.ics
    wrote it back as given beside a DTSTART with a TZID, which RFC 5545 forbids (clients read such an
    UNTIL their own way, e.g. as midnight UTC, and drop the last occurrence). It is now the UTC instant."""
    bangkok = ZoneInfo("Asia/Bangkok")
    starts = next_weekday(bangkok, 1, 19)
    last = starts.astimezone(bangkok) + timedelta(days=14)
    for until, instant in (
        (f"{last:%Y%m%d}", datetime(last.year, last.month, last.day, 23, 59, 59, tzinfo=bangkok)),
        (f"{last:%Y%m%dT%H%M%S}", last),
    ):
        event = await weekly_event(api, user, rule=f"FREQ=WEEKLY;UNTIL={until}", starts_at=iso(starts),
                                   ends_at=iso(starts + timedelta(hours=2)), timezone="Asia/Bangkok")  # fmt: skip
        assert len(await occurrences(api, event["id"])) == 3
        assert event["recurrence"]["rrule"] == f"FREQ=WEEKLY;UNTIL={until}"  # stored as given
        response = await api.get(f"/api/events/{event['id']}/calendar.ics")
        (master, *_) = icalendar.Calendar.from_ical(response.text).walk("VEVENT")
        assert isinstance(master, icalendar.Event)
        (rule,) = master.rrules
        assert rule["UNTIL"] == [instant.astimezone(UTC)], response.text
        assert f"UNTIL={instant.astimezone(UTC):%Y%m%dT%H%M%SZ}" in response.text


async def test_feeds_have_etags_and_answer_304_while_nothing_changed(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    business_id = await db.fetchval("insert into public.businesses (name) values ('Feed test') returning id")
    await db.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, 'owner')", business_id, user.id
    )
    city = await add_city(db, f"city-{uuid.uuid4().hex[:8]}")
    await add_city(db, f"{city}-b")
    event = await weekly_event(api, user, city=city, business_id=str(business_id))
    other = await weekly_event(api, user, city=f"{city}-b")
    for path in (f"/api/events/{event['id']}/calendar.ics", f"/api/businesses/{business_id}/calendar.ics",
                 f"/api/businesses/{business_id}/calendar.json", f"/api/cities/{city}/calendar.ics",
                 f"/api/cities/{city}/calendar.json"):  # fmt: skip
        first = await api.get(path)
        assert first.status_code == 200, (path, first.text)
        etag = first.headers["etag"]
        assert first.headers["last-modified"] and "max-age" in first.headers["cache-control"]
        assert event["id"] in first.text and other["id"] not in first.text
        if path.endswith(".ics"):
            assert len(icalendar.Calendar.from_ical(first.text).walk("VEVENT")) == 1
        else:
            feed = first.json()
            assert len(feed["occurrences"]) == 6 and feed["occurrences"][0]["event"]["id"] == event["id"]
        cached = await api.get(path, headers={"if-none-match": etag})
        assert cached.status_code == 304, (path, cached.status_code)
        assert cached.content == b"" and cached.headers["etag"] == etag
        assert (await api.get(path, headers={"if-none-match": '"stale"'})).status_code == 200
        # If-None-Match compares weakly, and `*` matches any current feed (RFC 9110 §13.1.2).
        for matching in (f"W/{etag}", f'"stale", W/{etag}', "*"):
            assert (await api.get(path, headers={"if-none-match": matching})).status_code == 304, matching
    (occurrence, *_) = await occurrences(api, event["id"])
    before = (await api.get(f"/api/cities/{city}/calendar.ics")).headers["etag"]
    await patch(api, user, event["id"], occurrence["id"], {"note": "doors at 18:30"})
    changed = await api.get(f"/api/cities/{city}/calendar.ics", headers={"if-none-match": before})
    assert changed.status_code == 200 and changed.headers["etag"] != before and "doors at 18:30" in changed.text


async def test_json_feeds_print_their_occurrences_like_the_api_does(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    """Nothing upcoming is `{"occurrences": []}`, not `{}`, and an occurrence in a feed has the fields it has
    in GET /api/occurrences (an empty `note`, `moved` false), as in every list the gateway prints."""
    business_id = await db.fetchval("insert into public.businesses (name) values ('Quiet business') returning id")
    city = await add_city(db, f"city-{uuid.uuid4().hex[:8]}")
    for path in (f"/api/businesses/{business_id}/calendar.json", f"/api/cities/{city}/calendar.json"):
        response = await api.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json() == {"occurrences": []}, path

    event = await weekly_event(api, user, city=city)
    start = parse_time(event["starts_at"]) - timedelta(hours=1)
    window = {"city": city, "start": iso(start), "end": iso(start + timedelta(days=2))}
    [listed] = (await api.get("/api/occurrences", params=window)).json()["occurrences"]
    [first, *_] = (await api.get(f"/api/cities/{city}/calendar.json")).json()["occurrences"]
    assert first["occurrence"] == listed["occurrence"]
    assert set(first["event"]) == set(listed["event"])


async def test_a_feed_past_its_limit_holds_the_soonest_events_in_every_form(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """A city with more upcoming events than a feed holds: its iCalendar, its JSON and its ETag all hold
    the events that start first, so the next thing on is in the JSON feed too, and changing it changes
    the ETag (a calendar app polling with If-None-Match sees the change)."""
    city = await add_city(db, f"city-{uuid.uuid4().hex[:8]}")
    later = datetime.now(UTC) + timedelta(days=30)
    try:
        # By id, the soonest event comes last.
        await db.execute(
            "insert into public.events (id, title, starts_at, ends_at, timezone, status, city) "
            "select ('0' || substr(gen_random_uuid()::text, 2))::uuid, 'Later ' || i, $2::timestamptz, "
            "$2::timestamptz + interval '1 hour', 'Asia/Bangkok', 'published', $1 from generate_series(1, $3) i",
            city,
            later,
            calendars.MAX_EVENTS,
        )
        soonest = uuid.UUID("ffffffff" + uuid.uuid4().hex[8:])
        await db.execute(
            "insert into public.events (id, title, starts_at, ends_at, timezone, status, city) "
            "values ($1, 'Tomorrow night', now() + interval '1 day', now() + interval '1 day 2 hours', "
            "'Asia/Bangkok', 'published', $2)",
            soonest,
            city,
        )
        built = "select count(*) from public.event_occurrences o join public.events e on e.id = o.event_id"
        built += " where e.city = $1"
        for _ in range(600):  # the horizon job builds their occurrences
            if await db.fetchval(built, city) > calendars.MAX_EVENTS:
                break
            await asyncio.sleep(0.1)
        ics = await api.get(f"/api/cities/{city}/calendar.ics")
        assert ics.status_code == 200 and str(soonest) in ics.text
        assert len(icalendar.Calendar.from_ical(ics.text).walk("VEVENT")) == calendars.MAX_EVENTS
        feed = (await api.get(f"/api/cities/{city}/calendar.json")).json()["occurrences"]
        assert feed[0]["event"]["id"] == str(soonest) and len(feed) == calendars.MAX_EVENTS
        await db.execute("update public.events set title = 'Tomorrow night, new time' where id = $1", soonest)
        changed = await api.get(f"/api/cities/{city}/calendar.ics", headers={"if-none-match": ics.headers["etag"]})
        assert changed.status_code == 200 and "Tomorrow night\\, new time" in changed.text
    finally:
        await db.execute("delete from public.events where city = $1", city)


async def test_feeds_show_only_what_the_caller_may_see(api: httpx.AsyncClient, user: User, other_user: User) -> None:
    draft = await weekly_event(api, user, status="EVENT_STATUS_DRAFT")
    assert (await api.get(f"/api/events/{draft['id']}/calendar.ics")).status_code == 404
    assert (await api.get(f"/api/events/{draft['id']}/calendar.ics", headers=user.headers)).status_code == 200
    assert (await api.get(f"/api/events/{draft['id']}/occurrences", headers=other_user.headers)).status_code == 404
    assert (await api.get("/api/cities/%20/calendar.ics")).status_code == 400


async def test_the_feeds_of_an_unknown_city_are_404s(api: httpx.AsyncClient, user: User) -> None:
    """Like any unknown resource: not a 400, the slug being well formed."""
    for path in ("/api/cities/atlantis/calendar.ics", "/api/cities/atlantis/calendar.json"):
        for headers in ({}, user.headers):
            response = await api.get(path, headers=headers)
            assert_json_error(response, 404, "NOT_FOUND")
            assert "atlantis" in response.json()["message"] and "etag" not in response.headers, path


async def test_the_feeds_of_an_unknown_business_are_404s(api: httpx.AsyncClient, user: User) -> None:
    """Not an empty feed, which a calendar app would subscribe to without a word."""
    unknown = uuid.uuid4()
    for path in (f"/api/businesses/{unknown}/calendar.ics", f"/api/businesses/{unknown}/calendar.json"):
        for headers in ({}, user.headers):
            response = await api.get(path, headers=headers)
            assert_json_error(response, 404, "NOT_FOUND")
            assert "etag" not in response.headers, path
    # A malformed id is still a 400 naming the field.
    assert_json_error(await api.get("/api/businesses/not-a-uuid/calendar.ics"), 400, "INVALID_ARGUMENT", "business_id")


async def test_business_feeds_do_not_rely_on_the_businesses_own_row_security(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    """`businesses` is LocalPlus's table; on Supabase its policies may hide rows from anonymous callers.
    A real business's feed is still served to them, and an unknown one is still a 404."""
    business_id = await db.fetchval("insert into public.businesses (name) values ('Private books') returning id")
    await db.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, 'owner')", business_id, user.id
    )
    event = await weekly_event(api, user, business_id=str(business_id))
    async with businesses_hidden(db):
        for kind in ("ics", "json"):
            for headers in ({}, user.headers):
                feed = await api.get(f"/api/businesses/{business_id}/calendar.{kind}", headers=headers)
                assert feed.status_code == 200, feed.text
                assert event["id"] in feed.text
            assert (await api.get(f"/api/businesses/{uuid.uuid4()}/calendar.{kind}")).status_code == 404


async def test_a_registration_for_one_occurrence_takes_that_occurrences_place(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    event = await weekly_event(api, user, capacity=10)
    found = await occurrences(api, event["id"])
    await patch(api, user, event["id"], found[1]["id"], {"capacity": 1}, update_mask="capacity")
    first, waiting_user, third = [await create_user(db) for _ in range(3)]
    going = await api.post(
        f"/api/events/{event['id']}/participants", json={"occurrence_id": found[1]["id"]}, headers=first.headers
    )
    assert going.status_code == 200, going.text
    assert going.json()["status"] == "PARTICIPANT_STATUS_GOING" and going.json()["occurrence_id"] == found[1]["id"]
    waiting = await api.post(
        f"/api/events/{event['id']}/participants", json={"occurrence_id": found[1]["id"]}, headers=waiting_user.headers
    )
    assert waiting.json()["status"] == "PARTICIPANT_STATUS_WAITLISTED"
    # Another occurrence has the event's ten places.
    elsewhere = await api.post(
        f"/api/events/{event['id']}/participants", json={"occurrence_id": found[2]["id"]}, headers=third.headers
    )
    assert elsewhere.json()["status"] == "PARTICIPANT_STATUS_GOING"
    going_user = going.json()["user_id"]
    cancel = await api.delete(f"/api/events/{event['id']}/participants/{going_user}", headers=user.headers)
    assert cancel.status_code == 200, cancel.text
    promoted = await api.get(f"/api/events/{event['id']}/participants", headers=waiting_user.headers)
    assert promoted.json()["participants"][0]["status"] == "PARTICIPANT_STATUS_GOING"
    # An occurrence of another event, or none at all, is not one of this event's (404); a cancelled
    # one of its own does not take place (400).
    other = await weekly_event(api, user)
    (foreign, *_) = await occurrences(api, other["id"])
    stranger = await create_user(db)
    for occurrence_id in (foreign["id"], str(uuid.uuid4())):
        refused = await api.post(
            f"/api/events/{event['id']}/participants", json={"occurrence_id": occurrence_id}, headers=stranger.headers
        )
        assert refused.status_code == 404 and "no such occurrence" in refused.text, refused.text
    await patch(api, user, event["id"], found[3]["id"], {"status": "OCCURRENCE_STATUS_CANCELLED"})
    called_off = await api.post(
        f"/api/events/{event['id']}/participants", json={"occurrence_id": found[3]["id"]}, headers=stranger.headers
    )
    assert called_off.status_code == 400 and "OCCURRENCE_CANCELLED" in called_off.text


async def test_a_larger_occurrence_capacity_lets_that_occurrences_waitlist_in(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool, stack: Stack
) -> None:
    """Raising one occurrence's own capacity lets in the head of its waitlist (counted as a promotion),
    nobody of another occurrence's; clearing it (the event's ten places) lets the rest in."""
    metrics_url = stack.metrics_url("recurrence")
    assert metrics_url is not None
    event = await weekly_event(api, user, capacity=10)
    found = await occurrences(api, event["id"])
    for occurrence in found[1:3]:
        capped = await patch(api, user, event["id"], occurrence["id"], {"capacity": 1}, update_mask="capacity")
        assert capped.status_code == 200, capped.text
    people = [await create_user(db) for _ in range(5)]
    for person, occurrence in zip(people, [found[1], found[1], found[1], found[2], found[2]], strict=True):
        registered = await api.post(
            f"/api/events/{event['id']}/participants", json={"occurrence_id": occurrence["id"]}, headers=person.headers
        )
        assert registered.status_code == 200, registered.text

    async def statuses() -> list[str]:
        return await registration_statuses(db, event["id"], people)

    assert await statuses() == ["going", "waitlisted", "waitlisted", "going", "waitlisted"]
    before = await scrape(metrics_url)
    raised = await patch(api, user, event["id"], found[1]["id"], {"capacity": 2}, update_mask="capacity")
    assert raised.status_code == 200, raised.text
    assert await statuses() == ["going", "going", "waitlisted", "going", "waitlisted"]
    assert await moved_by(metrics_url, before, 1, "localplus_waitlist_promotions_total") == 1
    cleared = await patch(api, user, event["id"], found[1]["id"], {}, update_mask="capacity")
    assert cleared.status_code == 200 and cleared.json()["capacity"] == 10, cleared.text
    assert await statuses() == ["going", "going", "going", "going", "waitlisted"]
    assert await moved_by(metrics_url, before, 2, "localplus_waitlist_promotions_total") == 2


async def test_referenced_occurrences_stay_cancelled_when_the_rule_drops_them(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool
) -> None:
    event = await weekly_event(api, user)
    found = await occurrences(api, event["id"])
    guest = await create_user(db)
    registered = await api.post(
        f"/api/events/{event['id']}/participants", json={"occurrence_id": found[5]["id"]}, headers=guest.headers
    )
    assert registered.status_code == 200, registered.text
    shorter = await set_rule(api, user, event["id"], "FREQ=WEEKLY;BYDAY=TU;COUNT=4")
    assert shorter.status_code == 200
    after = await occurrences(api, event["id"])
    assert [o["id"] for o in after] == [o["id"] for o in found[:4]] + [found[5]["id"]]
    assert after[-1]["status"] == "OCCURRENCE_STATUS_CANCELLED"
    # ...and a split is refused while later occurrences are in use.
    refused = await patch(
        api,
        user,
        event["id"],
        found[2]["id"],
        {"capacity": 3},
        update_mask="capacity",
        scope="UPDATE_SCOPE_THIS_AND_FOLLOWING",
    )
    assert refused.status_code in (400, 409), refused.text


async def test_a_ticket_type_for_an_occurrence_of_another_event_is_refused(api: httpx.AsyncClient, user: User) -> None:
    event = await weekly_event(api, user)
    other = await weekly_event(api, user)
    (mine, *_) = await occurrences(api, event["id"])
    (theirs, *_) = await occurrences(api, other["id"])
    body = {"name": "Door", "price_minor": "0", "currency": "THB", "inventory": 10}
    ok = await api.post(
        f"/api/events/{event['id']}/ticket-types", json={**body, "occurrence_id": mine["id"]}, headers=user.headers
    )
    assert ok.status_code == 200, ok.text
    bad = await api.post(
        f"/api/events/{event['id']}/ticket-types", json={**body, "occurrence_id": theirs["id"]}, headers=user.headers
    )
    assert bad.status_code == 400, bad.text


async def test_tickets_for_one_occurrence_carry_it_and_stop_selling_when_it_is_cancelled(
    api: httpx.AsyncClient, user: User, other_user: User
) -> None:
    event = await weekly_event(api, user)
    first, second, *_ = await occurrences(api, event["id"])
    body = {"name": "Door", "price_minor": "0", "currency": "THB", "inventory": 10}
    types: dict[str, str] = {}
    for occurrence in (first, second):
        created = await api.post(
            f"/api/events/{event['id']}/ticket-types",
            json={**body, "occurrence_id": occurrence["id"]},
            headers=user.headers,
        )
        assert created.status_code == 200, created.text
        types[occurrence["id"]] = created.json()["id"]

    reserved = await reserve(api, other_user, types[first["id"]], 2)
    assert reserved.status_code == 200, reserved.text
    assert reserved.json()["occurrence_id"] == first["id"]
    paid = await checkout(api, other_user, reserved.json()["id"])
    assert paid.json()["order"]["status"] == "ORDER_STATUS_PAID", paid.text
    assert {t["occurrence_id"] for t in await my_tickets(api, other_user)} == {first["id"]}

    cancelled = await patch(api, user, event["id"], second["id"], {"status": "OCCURRENCE_STATUS_CANCELLED"})
    assert cancelled.status_code == 200, cancelled.text
    refused = await reserve(api, other_user, types[second["id"]])
    assert refused.status_code == 400, refused.text
    assert refused.json()["details"][0]["reason"] == "SALES_CLOSED"
    assert (await reserve(api, other_user, types[first["id"]])).status_code == 200
