"""Consumer discovery (`GET /api/events`): typo-tolerant English and Thai search, ranking, filters,
geo radius, date range, keyset pagination under concurrent inserts, and the rule that nothing but
published public events ever shows up, whatever the filter, the sort or the caller."""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
import httpx
import pytest

from localplus.events.v1 import events_pb2
from localplus_common.auth import ANONYMOUS
from localplus_common.db import Connection, Database, current_identity
from localplus_events.discovery import plan_search, search
from localplus_events.mapping import search_query
from tests.support import User, add_city, create_event, create_user, iso
from tests.test_bad_input import assert_json_error

Json = dict[str, Any]
Params = dict[str, Any]

BANGKOK = (13.7563, 100.5018)
HIDDEN_KINDS = (
    "draft",
    "pending_review",
    "rejected",
    "private",
    "unlisted",
    "cancelled",
    "cancelled_draft",
    "edited_back_to_review",
)
ORDERS = ("starts_at", "relevance", "distance", "popularity")


def new_city() -> str:
    return f"city-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def city(db: asyncpg.Pool) -> str:
    """A city of the test's own, so that its events are the only ones listed by `city=`."""
    return await add_city(db, new_city())


def when(days: float, hours: float = 0, length_hours: float = 2) -> dict[str, str]:
    """starts_at/ends_at `days` + `hours` from now (negative for the past)."""
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days, hours=hours)
    return {"starts_at": iso(starts), "ends_at": iso(starts + timedelta(hours=length_hours))}


def plain(city: str, title: str, **overrides: Any) -> Json:
    """Event fields with nothing searchable but the title (and what the test adds)."""
    fields: Json = {
        "city": city,
        "title": title,
        "description": "",
        "tags": [],
        "category": "community",
        "venue_name": "",
        "address": "",
        **when(7),
    }
    fields.update(overrides)
    return fields


async def publish(api: httpx.AsyncClient, owner: User, city: str, title: str, **overrides: Any) -> Json:
    return await create_event(api, owner, status="EVENT_STATUS_PUBLISHED", **plain(city, title, **overrides))


def query_string(params: Params) -> str:
    """Spaces as %20, not `+` (see test_plus_in_the_query_string_is_a_space)."""
    return urlencode({name: value for name, value in params.items() if value is not None}, doseq=True, quote_via=quote)


async def list_page(api: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any) -> Json:
    query = {name: value for name, value in params.items() if value not in (None, "")}
    response = await api.get(f"/api/events?{query_string(query)}", headers=headers or {})
    assert response.status_code == 200, f"{query}: {response.status_code} {response.text}"
    body: Json = response.json()
    return body


async def found(api: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any) -> list[Json]:
    params.setdefault("page_size", 100)
    events: list[Json] = (await list_page(api, headers, **params))["events"]
    return events


async def titles(api: httpx.AsyncClient, **params: Any) -> list[str]:
    return [event["title"] for event in await found(api, **params)]


async def list_status(api: httpx.AsyncClient, **params: Any) -> int:
    return (await api.get(f"/api/events?{query_string(params)}")).status_code


def km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Haversine on the IUGG mean radius, as the database computes it."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))


async def save_in_sql(db: asyncpg.Pool, fan: User, event: Json) -> None:
    """A save made behind the API's back (the saves API itself is tested in test_saves_and_stats)."""
    await db.execute(
        "insert into public.event_saves (user_id, event_id) values ($1, $2)", fan.id, uuid.UUID(event["id"])
    )


def starts(event: Json) -> datetime:
    return datetime.fromisoformat(event["starts_at"])


# Free text: typos, partial words, case


async def test_typos_and_partial_words_find_the_event(api: httpx.AsyncClient, user: User, city: str) -> None:
    await publish(api, user, city, "Jazz Festival")
    await publish(api, user, city, "Pottery Workshop")
    await publish(api, user, city, "Sunday Farmers Market")
    await publish(api, user, city, "Muay Thai Night")

    for q in ("jaz festval", "festiv", "jazz festival", "JAZZ", "Festivl", "jazz festivel"):
        assert await titles(api, city=city, q=q) == ["Jazz Festival"], q
    assert await titles(api, city=city, q="potery") == ["Pottery Workshop"]
    assert await titles(api, city=city.upper(), q="Jazz") == ["Jazz Festival"]  # the city slug is case-blind
    assert await titles(api, city=city, q="farmer markt") == ["Sunday Farmers Market"]
    assert await titles(api, city=city, q="xylophone") == []
    # Every word has to match something: one good word does not drag in an unrelated event.
    assert await titles(api, city=city, q="jazz pottery") == []


async def test_a_city_with_spaces_around_it_lists_that_citys_events(
    api: httpx.AsyncClient, user: User, admin: User, city: str
) -> None:
    """`city=%20bangkok%20` was accepted (the city check trims it) but listed nothing (the statement did
    not trim it): it lists the city's events, as every other `city=` filter does."""
    listed = await publish(api, user, city, "Jazz by the river")
    for padded in (f" {city} ", f"  {city.upper()}\t"):
        assert [e["id"] for e in await found(api, city=padded)] == [listed["id"]], repr(padded)
        assert [e["id"] for e in await found(api, city=padded, q="jazz")] == [listed["id"]], repr(padded)
    # The moderation queue and the platform's analytics take it the same way.
    queued = await create_event(api, user, city=city, title="Queued in the city")
    assert (await api.post(f"/api/events/{queued['id']}:submit", json={}, headers=user.headers)).status_code == 200
    queue = await api.get("/api/moderation/events", params={"city": f" {city} "}, headers=admin.headers)
    assert queue.status_code == 200, queue.text
    assert [e["id"] for e in queue.json()["events"]] == [queued["id"]]
    figures = await api.get("/api/analytics", params={"city": f" {city} "}, headers=admin.headers)
    assert figures.status_code == 200, figures.text
    assert figures.json() == (await api.get("/api/analytics", params={"city": city}, headers=admin.headers)).json()


async def test_plus_in_the_query_string_is_a_space(api: httpx.AsyncClient, user: User, city: str) -> None:
    """Browsers (URLSearchParams, forms) and most HTTP clients send a space in a query as `+`."""
    await publish(api, user, city, "Jazz Festival")
    await publish(api, user, city, "Pottery Workshop")
    for raw in ("jazz+pottery", "jazz%20pottery"):
        response = await api.get(f"/api/events?city={city}&q={raw}")
        assert response.status_code == 200, response.text
        assert response.json()["events"] == [], raw
    plus = await api.get(f"/api/events?city={city}&q=jaz+festval")
    assert [event["title"] for event in plus.json()["events"]] == ["Jazz Festival"]
    # httpx, like requests and URLSearchParams, encodes the space as `+`.
    assert "+" in str(httpx.URL("/api/events", params={"q": "jazz pottery"}))
    assert (await api.get("/api/events", params={"city": city, "q": "jazz pottery"})).json()["events"] == []


async def test_like_wildcards_in_q_are_not_wildcards(api: httpx.AsyncClient, user: User, city: str) -> None:
    """`%` and `_` are ordinary characters to a person typing a search."""
    await publish(api, user, city, "Jazz Festival")
    await publish(api, user, city, "Half price: 50% off everything")
    assert await titles(api, city=city, q="%") == ["Half price: 50% off everything"]
    assert await titles(api, city=city, q="50%") == ["Half price: 50% off everything"]
    assert await titles(api, city=city, q="%%") == []
    assert await titles(api, city=city, q="_") == []
    assert await titles(api, city=city, q="__") == []
    assert await titles(api, city=city, q="_%_") == []


# Thai (no spaces between words)


async def test_thai_titles(api: httpx.AsyncClient, user: User, city: str) -> None:
    concert = "คอนเสิร์ตดนตรีแจ๊สริมแม่น้ำ"  # jazz concert by the river
    market = "ตลาดนัดวันอาทิตย์"  # Sunday market
    food = "เทศกาลอาหารไทย"  # Thai food festival
    temple = "งานวัดประจำปี"  # annual temple fair
    for title in (concert, market, food, temple):
        await publish(api, user, city, title)

    assert await titles(api, city=city, q="แจ๊ส") == [concert]  # jazz
    assert await titles(api, city=city, q="ดนตรีแจ๊ส") == [concert]  # jazz music
    assert await titles(api, city=city, q="ริมแม่น้ำ") == [concert]  # by the river
    assert await titles(api, city=city, q="อาหาร") == [food]  # food
    assert await titles(api, city=city, q="อาหารไทย") == [food]  # Thai food
    assert await titles(api, city=city, q="ตลาดนัด") == [market]  # weekend market
    assert await titles(api, city=city, q="วันอาทิตย์") == [market]  # Sunday
    assert await titles(api, city=city, q="งานวัด") == [temple]  # temple fair
    assert await titles(api, city=city, q="ฟุตบอล") == []  # football


async def test_thai_typo_still_finds_the_event(api: httpx.AsyncClient, user: User, city: str) -> None:
    concert = "คอนเสิร์ตดนตรีแจ๊สริมแม่น้ำ"
    await publish(api, user, city, concert)
    await publish(api, user, city, "ตลาดนัดวันอาทิตย์")
    # A common misspelling of คอนเสิร์ต (concert), missing its silent final letters.
    assert await titles(api, city=city, q="คอนเสิด") == [concert]


async def test_mixed_thai_and_english(api: httpx.AsyncClient, user: User, city: str) -> None:
    jazz = "Bangkok Jazz Night ดนตรีแจ๊สสด"
    food = "Street Food เทศกาลอาหารริมทาง"
    await publish(api, user, city, jazz, description="วงดนตรีจากเชียงใหม่ (a band from Chiang Mai)")
    await publish(api, user, city, food)
    await publish(api, user, city, "ตลาดนัดวันอาทิตย์")

    assert await titles(api, city=city, q="jazz แจ๊ส") == [jazz]
    assert await titles(api, city=city, q="jaz ดนตรี") == [jazz]
    assert await titles(api, city=city, q="food อาหาร") == [food]
    assert await titles(api, city=city, q="chiang เชียงใหม่") == [jazz]
    assert await titles(api, city=city, q="food แจ๊ส") == []


# Ranking


async def test_title_matches_rank_above_description_matches(api: httpx.AsyncClient, user: User, city: str) -> None:
    # The description-only match starts first, so a start-time order would put it on top.
    in_description = await publish(
        api, user, city, "Evening social", description="Drinks, snacks and a pottery corner.", **when(2)
    )
    in_title = await publish(api, user, city, "Pottery evening", description="Wheel throwing for beginners.", **when(5))
    in_tags = await publish(api, user, city, "Craft fair", tags=["pottery"], **when(3))
    await publish(api, user, city, "Yoga in the park", **when(1))

    orders: list[Params] = [{}, {"order_by": "relevance"}]
    for params in orders:
        ranked = [event["id"] for event in await found(api, city=city, q="pottery", **params)]
        assert ranked[0] == in_title["id"], params
        assert set(ranked) == {in_title["id"], in_description["id"], in_tags["id"]}
    by_time = [event["id"] for event in await found(api, city=city, q="pottery", order_by="starts_at")]
    assert by_time == [in_description["id"], in_tags["id"], in_title["id"]]

    # A typo too: still the title match first.
    assert (await found(api, city=city, q="potery"))[0]["id"] == in_title["id"]


async def test_thai_title_match_ranks_above_thai_description_match(
    api: httpx.AsyncClient, user: User, city: str
) -> None:
    described = await publish(api, user, city, "Night market", description="ร้านอาหารมากมาย", **when(2))
    titled = await publish(api, user, city, "เทศกาลอาหารไทย", **when(6))
    ranked = [event["id"] for event in await found(api, city=city, q="อาหาร")]
    assert ranked == [titled["id"], described["id"]]


# Geo


async def test_near_radius_and_distance_order(api: httpx.AsyncClient, user: User, city: str) -> None:
    lat, lng = BANGKOK
    spots = {
        "Democracy Monument": (lat, lng),
        "Five km north": (lat + 0.045, lng),
        "Nine km east": (lat, lng + 0.08),
        "Fifty km north": (lat + 0.45, lng),
    }
    for index, (title, (at_lat, at_lng)) in enumerate(spots.items()):
        # Start times in the reverse of distance order, so the two sorts differ.
        await publish(api, user, city, title, latitude=at_lat, longitude=at_lng, **when(5 - index))
    await publish(api, user, city, "Nowhere in particular", latitude=None, longitude=None)
    near = f"{lat},{lng}"

    by_distance = await found(api, city=city, near=near, radius_km=10, order_by="distance")
    assert [e["title"] for e in by_distance] == ["Democracy Monument", "Five km north", "Nine km east"]
    distances = [e["distance_km"] for e in by_distance]
    assert distances == sorted(distances)
    for event in by_distance:
        expected = km(lat, lng, *spots[event["title"]])
        assert event["distance_km"] == pytest.approx(expected, abs=0.01), event["title"]
    assert distances[0] == pytest.approx(0, abs=0.001)
    assert distances[1] == pytest.approx(5.0, abs=0.1)

    # The default radius is 10 km; the default order stays by start time and still reports distances.
    by_time = await found(api, city=city, near=near)
    assert [e["title"] for e in by_time] == ["Nine km east", "Five km north", "Democracy Monument"]
    assert all("distance_km" in e for e in by_time)
    assert [e["title"] for e in await found(api, city=city, near=near, radius_km=4)] == ["Democracy Monument"]
    wide = await found(api, city=city, near=near, radius_km=60, order_by="distance")
    assert [e["title"] for e in wide] == [*spots]
    assert wide[-1]["distance_km"] == pytest.approx(50.0, abs=0.5)

    # Without near there is no distance, and events without coordinates are listed again.
    everything = await found(api, city=city)
    assert len(everything) == 5
    assert all(e.get("distance_km") is None for e in everything)


@pytest.mark.parametrize(
    "params",
    [
        {"near": "abc"},
        {"near": "13.7563"},
        {"near": "13.7563,"},
        {"near": "13.7563,100.5018,5"},
        {"near": "13.7563;100.5018"},
        {"near": "91,100"},
        {"near": "13.7,181"},
        {"near": "nan,nan"},
        {"near": "inf,100"},
        {"near": "13.7563,100.5018", "radius_km": -1},
        {"near": "13.7563,100.5018", "radius_km": 100000},
        {"near": "13.7563,100.5018", "radius_km": "nan"},
        {"near": "13.7563,100.5018", "radius_km": "ten"},
        {"radius_km": 5},
        {"order_by": "distance"},
    ],
    ids=lambda params: "&".join(f"{k}={v}" for k, v in params.items()),
)
async def test_bad_geo_parameters_are_400(api: httpx.AsyncClient, params: Params) -> None:
    response = await api.get("/api/events", params=params)
    assert response.status_code == 400, response.text


# Date range and the default "not ended yet"


async def test_date_range_and_ended_events(api: httpx.AsyncClient, user: User, city: str) -> None:
    ended = await publish(api, user, city, "Last week's fair", **when(-7))
    ongoing = await publish(api, user, city, "Happening now", **when(0, hours=-1, length_hours=3))
    tomorrow = await publish(api, user, city, "Tomorrow", **when(1))
    in_three = await publish(api, user, city, "In three days", **when(3))
    in_five = await publish(api, user, city, "In five days", **when(5))
    assert ended["status"] == "EVENT_STATUS_PUBLISHED"

    def ids(events: list[Json]) -> list[str]:
        return [event["id"] for event in events]

    assert ids(await found(api, city=city)) == [ongoing["id"], tomorrow["id"], in_three["id"], in_five["id"]]
    now = datetime.now(UTC)
    window: Params = {"starts_after": iso(now + timedelta(days=2)), "starts_before": iso(now + timedelta(days=4))}
    assert ids(await found(api, city=city, **window)) == [in_three["id"]]
    assert ids(await found(api, city=city, starts_after=iso(now + timedelta(days=2)))) == [
        in_three["id"],
        in_five["id"],
    ]
    # An explicit range reaches into the past.
    before = await found(api, city=city, starts_before=iso(now + timedelta(days=2)))
    assert ids(before) == [ended["id"], ongoing["id"], tomorrow["id"]]
    past = await found(api, city=city, starts_after=iso(now - timedelta(days=8)), starts_before=iso(now))
    assert ids(past) == [ended["id"], ongoing["id"]]
    # Other sorts apply the same default.
    assert ended["id"] not in ids(await found(api, city=city, order_by="popularity"))
    assert ended["id"] not in ids(await found(api, city=city, q="fair"))
    assert ids(await found(api, city=city, q="fair", starts_after=iso(now - timedelta(days=8)))) == [ended["id"]]


async def test_a_series_under_way_is_upcoming_until_its_last_occurrence_ends(
    api: httpx.AsyncClient, user: User, city: str
) -> None:
    """A weekly class whose first session is over is still on: the event's own `ends_at` is only its
    first occurrence's end. Found in every order, as long as an occurrence is still to come."""
    place = {"latitude": BANGKOK[0], "longitude": BANGKOK[1]}
    weekly = {"rrule": "FREQ=WEEKLY;COUNT=4"}
    under_way = await publish(api, user, city, "Weekly pottery class", **when(-8), **place, recurrence=weekly)
    await publish(api, user, city, "Pottery course, all over", **when(-30), **place, recurrence=weekly)
    await publish(api, user, city, "Pottery fair, over", **when(-8), **place)
    for order in ORDERS:
        params: Params = {"city": city, "order_by": order}
        if order == "relevance":
            params["q"] = "pottery"
        if order == "distance":
            params["near"] = f"{BANGKOK[0]},{BANGKOK[1]}"
        assert [event["id"] for event in await found(api, **params)] == [under_way["id"]], order
    assert [event["id"] for event in await found(api, q="pottery class", city=city)] == [under_way["id"]]


@pytest.mark.parametrize(
    "params",
    [
        {"starts_after": "yesterday"},
        {"starts_before": "2026-13-45T00:00:00Z"},
        {"starts_after": "2030-01-02T00:00:00Z", "starts_before": "2030-01-01T00:00:00Z"},
        {"starts_after": "2030-01-01T00:00:00Z", "starts_before": "2030-01-01T00:00:00Z"},
    ],
    ids=["words", "no-such-date", "reversed", "empty"],
)
async def test_bad_date_ranges_are_400(api: httpx.AsyncClient, params: Params) -> None:
    assert (await api.get("/api/events", params=params)).status_code == 400


# Category, tags, business, free only


async def test_category_tags_business_and_free_only(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool, city: str
) -> None:
    business_id = uuid.uuid4()
    await db.execute("insert into public.businesses (id, name) values ($1, 'Riverside Bar')", business_id)
    await db.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, 'owner')", business_id, user.id
    )
    paid = await publish(api, user, city, "Jazz outdoors", category="music", tags=["jazz", "outdoor"], **when(1))
    free_ticket = await publish(api, user, city, "Jazz indoors", category="music", tags=["jazz"], **when(2))
    family = await publish(api, user, city, "Family picnic", category="food", tags=["outdoor", "family"], **when(3))
    bar = await publish(api, user, city, "Bar quiz", category="food", business_id=str(business_id), **when(4))

    tickets = f"/api/events/{paid['id']}/ticket-types"
    adult = {"name": "Adult", "currency": "THB", "inventory": 10, "price_minor": "50000"}
    assert (await api.post(tickets, json=adult, headers=user.headers)).status_code == 200
    free = {"name": "Free entry", "currency": "THB", "inventory": 50, "price_minor": "0"}
    created = await api.post(f"/api/events/{free_ticket['id']}/ticket-types", json=free, headers=user.headers)
    assert created.status_code == 200, created.text

    async def ids(**params: Any) -> list[str]:
        return [event["id"] for event in await found(api, city=city, **params)]

    assert await ids(category="music") == [paid["id"], free_ticket["id"]]
    assert await ids(category="food") == [family["id"], bar["id"]]
    assert await ids(category="theatre") == []
    assert await ids(tags="jazz") == [paid["id"], free_ticket["id"]]
    assert await ids(tags=["jazz", "outdoor"]) == [paid["id"]]
    assert await ids(tags=["outdoor"]) == [paid["id"], family["id"]]
    assert await ids(tags=["jazz", "family"]) == []
    assert await ids(business_id=str(business_id)) == [bar["id"]]
    assert [e["id"] for e in await found(api, business_id=str(business_id))] == [bar["id"]]
    # A business that does not exist is a 400 naming it, as an unknown city is; one without events lists none.
    unknown = await api.get("/api/events", params={"business_id": str(uuid.uuid4())})
    assert_json_error(unknown, 400, "INVALID_ARGUMENT", "business_id")
    idle = uuid.uuid4()
    await db.execute("insert into public.businesses (id, name) values ($1, 'Idle Co')", idle)
    assert await ids(business_id=str(idle)) == []
    assert await ids(free_only="true") == [free_ticket["id"], family["id"], bar["id"]]
    assert await ids(free_only="false") == [paid["id"], free_ticket["id"], family["id"], bar["id"]]
    assert await ids(free_only="true", category="music", tags="jazz") == [free_ticket["id"]]
    assert (await api.get("/api/events", params={"business_id": "not-a-uuid"})).status_code == 400


async def test_category_ignores_case_and_spaces_around_it(api: httpx.AsyncClient, user: User, city: str) -> None:
    """`category=Music` found no event of category `music`: it finds every event whose category is the
    same but for case and spaces around it, in every order. Spelled otherwise it is the same filter, so a
    page token is good for it."""
    made = [
        await publish(api, user, city, f"Night {i}", category=spelled, **when(1 + i))
        for i, spelled in enumerate(("music", "Music", " MUSIC "))
    ]
    await publish(api, user, city, "Night of food", category="food", **when(5))
    music = [event["id"] for event in made]
    for asked in ("music", "Music", " music ", "MUSIC\t"):
        assert [e["id"] for e in await found(api, city=city, category=asked)] == music, repr(asked)
        assert sorted(e["id"] for e in await found(api, city=city, category=asked, q="night")) == sorted(music)
        assert [e["id"] for e in await found(api, category=asked, city=city, order_by="popularity")] == music
    assert await found(api, city=city, category="musi") == []

    first = await list_page(api, city=city, category="Music", page_size=1)
    rest = await list_page(api, city=city, category="Music", page_size=10, page_token=first["next_page_token"])
    assert [e["id"] for e in first["events"] + rest["events"]] == music
    again = await list_page(api, city=city, category=" MUSIC", page_size=10, page_token=first["next_page_token"])
    assert [e["id"] for e in again["events"]] == music[1:]
    other = {"city": city, "category": "food", "page_token": first["next_page_token"]}
    assert_json_error(await api.get(f"/api/events?{query_string(other)}"), 400, "INVALID_ARGUMENT", "page_token")


# Popularity


async def test_popularity_order(api: httpx.AsyncClient, user: User, db: asyncpg.Pool, city: str) -> None:
    quiet = await publish(api, user, city, "Quiet one", **when(1))
    busy = await publish(api, user, city, "Busy one", **when(4))
    saved = await publish(api, user, city, "Saved one", **when(3))
    also_quiet = await publish(api, user, city, "Also quiet", **when(2))
    cancelled_only = await publish(api, user, city, "Cancelled registrations only", **when(0.5))
    fans = [await create_user(db) for _ in range(3)]
    for fan in fans:
        joined = await api.post(f"/api/events/{busy['id']}/participants", json={}, headers=fan.headers)
        assert joined.status_code == 200, joined.text
    interested = {"status": "PARTICIPANT_STATUS_INTERESTED"}
    assert (
        await api.post(f"/api/events/{busy['id']}/participants", json=interested, headers=user.headers)
    ).status_code == 200
    for fan in fans[:2]:
        await save_in_sql(db, fan, saved)
    # A cancelled registration is no sign of popularity.
    for fan in fans:
        url = f"/api/events/{cancelled_only['id']}/participants"
        assert (await api.post(url, json={}, headers=fan.headers)).status_code == 200
        assert (await api.delete(url, headers=fan.headers)).status_code == 200

    ranked = [event["id"] for event in await found(api, city=city, order_by="popularity")]
    # Ties (no interest at all) fall back to start time.
    assert ranked == [busy["id"], saved["id"], cancelled_only["id"], quiet["id"], also_quiet["id"]]


# Keyset pagination while events are being added


async def walk(
    api: httpx.AsyncClient, params: Params, between_pages: Callable[[int, list[Json]], Awaitable[None]]
) -> list[Json]:
    """Every event over all pages of size 2, calling `between_pages` after each page but the last."""
    seen: list[Json] = []
    token = ""
    for page_number in range(100):
        page = await list_page(api, **params, page_size=2, page_token=token)
        assert len(page["events"]) <= 2
        seen += page["events"]
        token = page.get("next_page_token", "")
        if not token:
            return seen
        await between_pages(page_number, page["events"])
    raise AssertionError("pagination did not end")


def check_walk(seen: list[Json], initial: list[str], ahead: list[str], behind: list[str]) -> None:
    ids = [event["id"] for event in seen]
    assert len(ids) == len(set(ids)), "an event appeared on two pages"
    missing = set(initial) - set(ids)
    assert not missing, f"{len(missing)} events that existed from the start were skipped"
    assert set(ahead) <= set(ids), "an event added ahead of the cursor was skipped"
    assert not set(behind) & set(ids), "an event added behind the cursor showed up"


async def test_pagination_by_start_time_with_inserts(api: httpx.AsyncClient, user: User, city: str) -> None:
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)

    async def add(title: str, start: datetime) -> Json:
        return await publish(api, user, city, title, starts_at=iso(start), ends_at=iso(start + timedelta(hours=1)))

    initial = [(await add(f"Initial {i}", base + timedelta(hours=i)))["id"] for i in range(7)]
    # Two events share a start time, so the id decides between them.
    initial.append((await add("Initial twin", base + timedelta(hours=3)))["id"])
    ahead: list[str] = []
    behind: list[str] = []
    ties: list[tuple[Json, Json]] = []

    async def insert(page_number: int, page: list[Json]) -> None:
        if page_number > 2:
            return
        cursor = page[-1]
        behind.append((await add("Behind", starts(cursor) - timedelta(minutes=30)))["id"])
        behind.append((await add("Way behind", base - timedelta(hours=5)))["id"])
        ahead.append((await add("Ahead", base + timedelta(hours=10 + page_number)))["id"])
        ahead.append((await add("Just ahead", starts(cursor) + timedelta(minutes=1)))["id"])
        ties.append((await add("Same start as the cursor", starts(cursor)), cursor))

    seen = await walk(api, {"city": city, "order_by": "starts_at"}, insert)
    check_walk(seen, initial, ahead, behind)
    ids = [event["id"] for event in seen]
    for tie, cursor in ties:
        # On an equal start time the id decides which side of the cursor the new event is on.
        assert (tie["id"] in ids) == (uuid.UUID(tie["id"]) > uuid.UUID(cursor["id"]))
    keys = [(starts(event), uuid.UUID(event["id"])) for event in seen]
    assert keys == sorted(keys)
    # Without order_by the order is the same.
    assert [e["id"] for e in await walk(api, {"city": city}, _nothing)] == [
        e["id"] for e in await walk(api, {"city": city, "order_by": "starts_at"}, _nothing)
    ]


async def _nothing(page_number: int, page: list[Json]) -> None:
    return None


async def test_pagination_by_relevance_with_inserts(api: httpx.AsyncClient, user: User, city: str) -> None:
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)

    async def add(title_match: bool, start: datetime) -> str:
        span = {"starts_at": iso(start), "ends_at": iso(start + timedelta(hours=1))}
        if title_match:
            event = await publish(api, user, city, "Pottery class", **span)
        else:
            event = await publish(api, user, city, "Evening social", description="With a pottery corner.", **span)
        return str(event["id"])

    initial = [await add(i < 3, base + timedelta(hours=i)) for i in range(6)]
    ahead: list[str] = []
    behind: list[str] = []

    async def insert(page_number: int, page: list[Json]) -> None:
        if page_number > 2:
            return
        cursor = page[-1]
        at = starts(cursor)
        if cursor["title"] == "Pottery class":
            behind.append(await add(True, at - timedelta(minutes=30)))  # as relevant, starts earlier
            ahead.append(await add(True, at + timedelta(minutes=1)))  # as relevant, starts later
            ahead.append(await add(False, base - timedelta(hours=10)))  # less relevant, however early
        else:
            behind.append(await add(True, base + timedelta(days=30)))  # more relevant, however late
            behind.append(await add(False, at - timedelta(minutes=30)))  # as relevant, starts earlier
            ahead.append(await add(False, at + timedelta(minutes=1)))  # as relevant, starts later

    seen = await walk(api, {"city": city, "q": "pottery"}, insert)
    check_walk(seen, initial, ahead, behind)
    assert {event["title"] for event in seen[-3:]} == {"Evening social"}
    # Title matches first, each group by start time.
    title_first = [event["title"] == "Pottery class" for event in seen]
    assert title_first == sorted(title_first, reverse=True)
    for group in (True, False):
        times = [starts(e) for e, is_title in zip(seen, title_first, strict=True) if is_title == group]
        assert times == sorted(times)
    relevance = await walk(api, {"city": city, "q": "pottery", "order_by": "relevance"}, _nothing)
    assert [e["id"] for e in relevance] == [e["id"] for e in await walk(api, {"city": city, "q": "pottery"}, _nothing)]


async def test_pagination_by_distance_with_inserts(api: httpx.AsyncClient, user: User, city: str) -> None:
    lat, lng = BANGKOK

    async def at(latitude: float, title: str = "Spot") -> Json:
        return await publish(api, user, city, title, latitude=latitude, longitude=lng)

    initial = [(await at(lat + 0.01 * (i + 1)))["id"] for i in range(6)]
    ahead: list[str] = []
    behind: list[str] = []
    ties: list[tuple[Json, Json]] = []

    async def insert(page_number: int, page: list[Json]) -> None:
        if page_number > 1:
            return
        cursor = page[-1]
        behind.append((await at(cursor["latitude"] - 0.005, "Nearer"))["id"])
        ahead.append((await at(cursor["latitude"] + 0.003, "A bit farther"))["id"])
        ahead.append((await at(lat + 0.08 + 0.001 * page_number, "Far"))["id"])
        ties.append((await at(cursor["latitude"], "Same spot as the cursor"), cursor))

    params = {"city": city, "near": f"{lat},{lng}", "radius_km": 20, "order_by": "distance"}
    seen = await walk(api, params, insert)
    check_walk(seen, initial, ahead, behind)
    ids = [event["id"] for event in seen]
    for tie, cursor in ties:
        assert (tie["id"] in ids) == (uuid.UUID(tie["id"]) > uuid.UUID(cursor["id"]))
    distances = [event["distance_km"] for event in seen]
    assert distances == sorted(distances)


# (centre, radius_km, spots within it, spots outside it); a spot (lat, lng) may hold several events.
FAR_NORTH = (
    (80.0, 10.0),
    30,
    # Three events on one spot, mirrored spots at the very same distance, then the planar order (in
    # degrees) far from the true one: half a degree of longitude here is 9.7 km, a fifth of latitude 22 km.
    [(80.05, 10.0), (80.05, 10.0), (80.05, 10.0), (80.0, 10.5), (80.0, 9.5), (80.2, 10.0), (80.15, 10.9),
     (79.9, 8.7), (80.0, 11.4), (80.0, 8.6), (79.8, 10.0)],
    [(80.3, 10.0), (79.7, 10.0), (80.0, 11.7)],
)  # fmt: skip
# Within reach of the pole the area spans every longitude.
NEAR_THE_POLE = (
    (89.95, 0.0),
    20,
    [(89.9, 0.0), (90.0, 0.0), (89.95, 10.0), (89.95, -10.0), (89.99, 15.0), (89.8, 0.0), (89.97, -17.0),
     (89.96, 2.0), (89.96, 2.0)],
    [(89.7, 0.0), (89.75, 5.0)],
)  # fmt: skip


@pytest.mark.parametrize("case", [FAR_NORTH, NEAR_THE_POLE], ids=["far-north", "near-the-pole"])
async def test_distance_pages_make_the_one_big_page(api: httpx.AsyncClient, user: User, city: str, case: Any) -> None:
    """Nearest first, page after page, is exactly the one big page: every event within the radius once,
    by distance and then id, ties (one spot, or two at the same distance) included."""
    (lat, lng), radius, inside, outside = case
    expected = []
    for at_lat, at_lng in inside:
        assert km(lat, lng, at_lat, at_lng) < radius - 0.5
        expected.append((await publish(api, user, city, "Spot", latitude=at_lat, longitude=at_lng))["id"])
    for at_lat, at_lng in outside:
        assert km(lat, lng, at_lat, at_lng) > radius + 0.5
        await publish(api, user, city, "Too far", latitude=at_lat, longitude=at_lng)
    params = {"city": city, "near": f"{lat},{lng}", "radius_km": radius, "order_by": "distance"}

    one_page = await found(api, **params)
    keys = [(event["distance_km"], uuid.UUID(event["id"])) for event in one_page]
    assert keys == sorted(keys)
    assert sorted(event["id"] for event in one_page) == sorted(expected)
    for event in one_page:
        assert event["distance_km"] == pytest.approx(km(lat, lng, event["latitude"], event["longitude"]), abs=1e-5)
    assert len({key for key, _ in keys}) < len(keys), "the case has ties"
    for size in (1, 2, 3):
        paged: list[Json] = []
        token = ""
        while True:
            page = await list_page(api, **params, page_size=size, page_token=token)
            paged += page["events"]
            token = page.get("next_page_token", "")
            if not token:
                break
        assert [event["id"] for event in paged] == [event["id"] for event in one_page], size


def north_of(lat: float, lng: float, distance_km: float) -> tuple[float, float]:
    return lat + math.degrees(distance_km / 6371.0088), lng


def east_of(lat: float, lng: float, distance_km: float) -> tuple[float, float]:
    """The point `distance_km` away on the same latitude (east, wrapped at the antimeridian)."""
    d_lng = 2 * math.asin(math.sin(distance_km / 2 / 6371.0088) / math.cos(math.radians(lat)))
    return lat, (lng + math.degrees(d_lng) + 180) % 360 - 180


# (centre, radius_km, spots within it, spots outside it), as in FAR_NORTH.
AT_THE_EDGE = (
    (13.75, 100.5),
    10,
    # 10 m inside, due north and due east: a degree of latitude is 111.195 km on the database's sphere.
    [north_of(13.75, 100.5, 9.99), east_of(13.75, 100.5, 9.99)],
    [north_of(13.75, 100.5, 10.01), east_of(13.75, 100.5, 10.01)],
)
ACROSS_THE_ANTIMERIDIAN = (
    (-17.0, 179.95),
    20,
    [(-17.0, -179.95), (-16.95, -179.9), (-17.05, 179.99), east_of(-17.0, 179.95, 19.9)],
    [(-17.0, -179.7), (-17.0, 179.7), east_of(-17.0, 179.95, 20.2)],
)
ACROSS_THE_POLE = (
    (89.95, 0.0),
    20,
    [(89.97, 170.0), (89.9, 180.0), (89.95, 90.0), (89.95, -120.0)],
    [(89.7, 180.0), (89.7, 0.0)],
)


@pytest.mark.parametrize(
    "case", [AT_THE_EDGE, ACROSS_THE_ANTIMERIDIAN, ACROSS_THE_POLE], ids=["edge", "antimeridian", "pole"]
)
async def test_every_order_finds_every_event_within_the_radius(
    api: httpx.AsyncClient, user: User, city: str, case: Any
) -> None:
    """Near me finds the events within the radius by the database's own distance, whatever the order
    and with or without words: up to the radius's last metres, across the antimeridian (longitudes
    from 179.9 to -179.9) and across a pole."""
    (lat, lng), radius, inside, outside = case
    expected = []
    for at_lat, at_lng in inside:
        assert km(lat, lng, at_lat, at_lng) < radius
        expected.append((await publish(api, user, city, "Spot", latitude=at_lat, longitude=at_lng))["id"])
    for at_lat, at_lng in outside:
        assert km(lat, lng, at_lat, at_lng) > radius
        await publish(api, user, city, "Spot", latitude=at_lat, longitude=at_lng)
    near: dict[str, Any] = {"city": city, "near": f"{lat},{lng}", "radius_km": radius}
    orders: list[dict[str, str]] = [
        {},
        {"order_by": "distance"},
        {"order_by": "popularity"},
        {"q": "spot"},
        {"q": "spot", "order_by": "distance"},
    ]
    for params in orders:
        events = await found(api, None, **near, **params)
        assert sorted(event["id"] for event in events) == sorted(expected), params
        if params.get("order_by") == "distance":
            distances = [event["distance_km"] for event in events]
            assert distances == sorted(distances), params


async def test_pagination_by_popularity_with_inserts(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool, city: str
) -> None:
    fans = [await create_user(db) for _ in range(2)]

    async def add(title: str, saves: int, days: float) -> str:
        event = await publish(api, user, city, title, **when(days))
        for fan in fans[:saves]:
            await save_in_sql(db, fan, event)
        return str(event["id"])

    initial = [await add("Two saves", 2, 3), await add("One save", 1, 3)]
    initial += [await add(f"No saves {i}", 0, 2 + i) for i in range(4)]
    ahead: list[str] = []
    behind: list[str] = []

    async def insert(page_number: int, page: list[Json]) -> None:
        if page_number == 0:  # the cursor is on "One save"
            behind.append(await add("Also two saves", 2, 1))
            ahead.append(await add("New, no saves yet", 0, 0.5))
        elif page_number == 1:  # the cursor is on an unsaved event
            behind.append(await add("Unsaved, earlier", 0, 0.25))
            ahead.append(await add("Unsaved, later", 0, 20))

    seen = await walk(api, {"city": city, "order_by": "popularity"}, insert)
    check_walk(seen, initial, ahead, behind)
    assert [e["title"] for e in seen[:2]] == ["Two saves", "One save"]


def encode_token(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


async def test_page_tokens_are_checked(api: httpx.AsyncClient, user: User, city: str) -> None:
    for i in range(3):
        await publish(api, user, city, f"Pottery night {i}", latitude=BANGKOK[0] + 0.01 * i, longitude=BANGKOK[1])
    near = f"{BANGKOK[0]},{BANGKOK[1]}"
    tokens = {
        order: (await list_page(api, city=city, q="pottery", near=near, order_by=order, page_size=1))["next_page_token"]
        for order in ORDERS
    }
    assert all(tokens.values())
    for order, token in tokens.items():
        for other in ORDERS:
            status = await list_status(api, city=city, q="pottery", near=near, order_by=other, page_token=token)
            assert status == (200 if other == order else 400), (order, other)
    # With q, relevance is the default order: a start-time token does not fit it.
    assert await list_status(api, city=city, q="pottery", page_token=tokens["starts_at"]) == 400


async def test_a_page_token_is_only_good_for_the_search_that_made_it(
    api: httpx.AsyncClient, user: User, db: asyncpg.Pool, city: str
) -> None:
    """AIP-158: a token sent with other filters than the request that returned it is a 400 naming
    page_token, not a page of some other search; page_size alone may change."""
    other_city = await add_city(db, new_city())
    made = [
        await publish(api, user, city, f"Jazz night {i}", category="music", tags=["jazz"], latitude=BANGKOK[0],
                      longitude=BANGKOK[1] + 0.01 * i, **when(1 + i))
        for i in range(4)
    ]  # fmt: skip
    base: Params = {
        "city": city,
        "category": "music",
        "tags": "jazz",
        "near": f"{BANGKOK[0]},{BANGKOK[1]}",
        "radius_km": 20,
        "starts_after": iso(datetime.now(UTC)),
        "order_by": "popularity",
    }
    first = await list_page(api, **base, page_size=1)
    token = first["next_page_token"]
    rest = await list_page(api, **base, page_size=10, page_token=token)
    assert [e["id"] for e in first["events"] + rest["events"]] == [e["id"] for e in made]
    changes: list[Params] = [
        {"city": other_city},
        {"category": "food"},
        {"tags": ["jazz", "outdoor"]},
        {"near": f"{BANGKOK[0]},{BANGKOK[1] + 0.01}"},
        {"radius_km": 30},
        {"starts_after": iso(datetime.now(UTC) + timedelta(hours=1))},
        {"starts_before": iso(datetime.now(UTC) + timedelta(days=30))},
        {"q": "jazz"},
        {"business_id": str(uuid.uuid4())},
        {"free_only": "true"},
        {"order_by": "starts_at"},
    ]
    for change in changes:
        response = await api.get(f"/api/events?{query_string({**base, **change, 'page_token': token})}")
        assert_json_error(response, 400, "INVALID_ARGUMENT", "page_token")
    # A filter dropped is a change too.
    for name in ("category", "tags", "starts_after"):
        response = await api.get(
            f"/api/events?{query_string({k: v for k, v in base.items() if k != name} | {'page_token': token})}"
        )
        assert_json_error(response, 400, "INVALID_ARGUMENT", "page_token")


async def test_garbage_page_tokens_are_400(api: httpx.AsyncClient, city: str) -> None:
    some_id = str(uuid.uuid4())
    garbage = [
        "garbage",
        "!!!!",
        "%%%",
        encode_token([1, 2, 3]),
        encode_token("starts_at"),
        encode_token({"order": "starts_at"}),
        encode_token({"order": "starts_at", "starts_at": "yesterday", "id": some_id}),
        encode_token({"order": "starts_at", "starts_at": "2030-01-01T00:00:00+00:00", "id": "not-a-uuid"}),
        encode_token({"order": "starts_at", "starts_at": 12, "id": some_id}),
        encode_token({"order": "popularity", "starts_at": "2030-01-01T00:00:00+00:00", "id": some_id, "key": "x"}),
        encode_token({"order": "popularity", "starts_at": "2030-01-01T00:00:00+00:00", "id": some_id}),
        encode_token({"order": "popularity", "starts_at": "2030-01-01T00:00:00+00:00", "id": some_id, "key": None}),
        encode_token({"order": "popularity", "starts_at": "2030-01-01T00:00:00+00:00", "id": some_id, "key": "sNaN"}),
        encode_token({"order": "popularity", "starts_at": "2030-01-01T00:00:00+00:00", "id": some_id, "key": "1e9999"}),
        "A" * 5000,
    ]
    for token in garbage:
        claimed = json.loads(base64.urlsafe_b64decode(token + "==")).get("order") if token.startswith("eyJ") else None
        status = await list_status(api, city=city, order_by=claimed, page_token=token)
        assert status == 400, token


@pytest.mark.parametrize(
    "params",
    [
        {"order_by": "random"},
        {"order_by": "relevance"},
        {"page_size": 101},
        {"page_size": -1},
        {"q": "one two three four five six seven eight nine"},
        {"unknown_filter": "1"},
    ],
    ids=["unknown-order", "relevance-without-q", "page-too-big", "negative-page", "too-many-words", "unknown-param"],
)
async def test_bad_list_parameters_are_400(api: httpx.AsyncClient, params: Params) -> None:
    assert await list_status(api, **params) == 400


# Visibility: only published public events, whatever the filter, the sort or the caller


async def test_hidden_events_never_appear(
    api: httpx.AsyncClient, user: User, admin: User, db: asyncpg.Pool, city: str
) -> None:
    business_id = uuid.uuid4()
    await db.execute("insert into public.businesses (id, name) values ($1, 'Harbour Co')", business_id)
    await db.execute(
        "insert into public.partners (business_id, user_id, role) values ($1, $2, 'owner')", business_id, user.id
    )
    lat, lng = BANGKOK
    shared = plain(
        city,
        "Harbour lantern festival",
        description="Floating lanterns by the harbour.",
        category="festival",
        tags=["lantern", "harbour"],
        business_id=str(business_id),
        latitude=lat,
        longitude=lng,
        **when(2),
    )
    owner = user.headers
    shown = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", **shared)

    hidden: dict[str, Json] = {}
    hidden["draft"] = await create_event(api, user, **shared)
    pending = await create_event(api, user, **shared)
    submitted = await api.post(f"/api/events/{pending['id']}:submit", json={}, headers=owner)
    assert submitted.status_code == 200, submitted.text
    hidden["pending_review"] = submitted.json()["event"]
    rejected = await create_event(api, user, **shared)
    assert (await api.post(f"/api/events/{rejected['id']}:submit", json={}, headers=owner)).status_code == 200
    reject = await api.post(
        f"/api/events/{rejected['id']}:reject", json={"reason": "Add a photo of the venue."}, headers=admin.headers
    )
    assert reject.status_code == 200, reject.text
    hidden["rejected"] = reject.json()["event"]
    hidden["private"] = await create_event(
        api, user, status="EVENT_STATUS_PUBLISHED", **{**shared, "visibility": "EVENT_VISIBILITY_PRIVATE"}
    )
    hidden["unlisted"] = await create_event(
        api, user, status="EVENT_STATUS_PUBLISHED", **{**shared, "visibility": "EVENT_VISIBILITY_UNLISTED"}
    )
    cancelled = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", **shared)
    cancel = await api.post(f"/api/events/{cancelled['id']}:cancel", json={"reason": "Storm"}, headers=owner)
    assert cancel.status_code == 200, cancel.text
    hidden["cancelled"] = cancel.json()["event"]
    cancelled_draft = await create_event(api, user, **shared)
    cancel = await api.post(f"/api/events/{cancelled_draft['id']}:cancel", json={}, headers=owner)
    assert cancel.status_code == 200, cancel.text
    hidden["cancelled_draft"] = cancel.json()["event"]
    edited = await create_event(api, user, status="EVENT_STATUS_PUBLISHED", **shared)
    patched = await api.patch(
        f"/api/events/{edited['id']}",
        params={"update_mask": "title"},
        json={"title": "Harbour lantern festival (new date)"},
        headers=owner,
    )
    assert patched.status_code == 200, patched.text
    hidden["edited_back_to_review"] = patched.json()
    assert set(hidden) == set(HIDDEN_KINDS)
    expected_status = {
        "draft": "EVENT_STATUS_DRAFT",
        "pending_review": "EVENT_STATUS_PENDING_REVIEW",
        "rejected": "EVENT_STATUS_REJECTED",
        "private": "EVENT_STATUS_PUBLISHED",
        "unlisted": "EVENT_STATUS_PUBLISHED",
        "cancelled": "EVENT_STATUS_CANCELLED",
        "cancelled_draft": "EVENT_STATUS_CANCELLED",
        "edited_back_to_review": "EVENT_STATUS_PENDING_REVIEW",
    }
    assert {kind: event["status"] for kind, event in hidden.items()} == expected_status

    # Make the hidden events the most popular, so a leak would show at the top of that sort.
    for event in hidden.values():
        await save_in_sql(db, user, event)

    now = datetime.now(UTC)
    near = {"near": f"{lat},{lng}", "radius_km": 5}
    everything = {
        "city": city,
        "q": "lantern harbor",
        "category": "festival",
        "tags": ["lantern", "harbour"],
        "business_id": str(business_id),
        "starts_after": iso(now + timedelta(days=1)),
        "starts_before": iso(now + timedelta(days=3)),
        **near,
        "free_only": "true",
    }
    filters: list[Params] = [
        {"city": city},
        {"city": city, "q": "lantern"},
        {"city": city, "q": "lanter festvl"},
        {"city": city, "q": "harbour lantern festival"},
        {"city": city, "category": "festival"},
        {"city": city, "tags": ["lantern", "harbour"]},
        {"business_id": str(business_id)},
        {"city": city, "starts_after": everything["starts_after"], "starts_before": everything["starts_before"]},
        {"city": city, "starts_after": iso(now - timedelta(days=30))},
        {"city": city, **near},
        {"city": city, "free_only": "true"},
        everything,
    ]
    callers = {"anonymous": None, "owner": owner, "admin": admin.headers}
    hidden_ids = {event["id"]: kind for kind, event in hidden.items()}
    checked = 0
    for base in filters:
        for order in (None, *ORDERS):
            params = dict(base)
            if order == "relevance":
                params.setdefault("q", "lantern")
            if order == "distance":
                params = {**near, **params}
            params["order_by"] = order
            for caller, headers in callers.items():
                events = await found(api, headers, **params)
                leaked = sorted(hidden_ids[e["id"]] for e in events if e["id"] in hidden_ids)
                assert not leaked, f"{caller} saw {leaked} with {params}"
                assert [e["id"] for e in events] == [shown["id"]], f"{caller} with {params}"
                checked += 1
    assert checked == len(filters) * (1 + len(ORDERS)) * len(callers)

    # The hidden events are all still there for their owner, by id.
    for event in hidden.values():
        assert (await api.get(f"/api/events/{event['id']}", headers=owner)).status_code == 200


# The database itself, on every database the suite runs on (CONTRACT §8: Thai needs a UTF-8 locale)


async def test_thai_trigram_search_on_every_database(database_url: str) -> None:
    concert, market, food = "คอนเสิร์ตดนตรีแจ๊สริมแม่น้ำ", "ตลาดนัดวันอาทิตย์", "เทศกาลอาหารไทย"
    conn = await asyncpg.connect(database_url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            city = new_city()
            for title in (concert, market, food):
                await conn.execute(
                    "insert into public.events (title, starts_at, ends_at, timezone, status, city) values "
                    "($1, now() + interval '7 days', now() + interval '8 days', 'Asia/Bangkok', 'published', $2)",
                    title,
                    city,
                )
            # Under a non-UTF-8 locale pg_trgm makes no trigrams for Thai at all.
            assert await conn.fetchval("select cardinality(show_trgm($1))", concert) > 10
            assert await conn.fetchval("select cardinality(show_trgm('แจ๊ส'))") > 0
            await conn.execute("select set_config('pg_trgm.word_similarity_threshold', '0.45', true)")
            cases = {"แจ๊ส": [concert], "ดนตรีแจ๊ส": [concert], "คอนเสิด": [concert], "อาหาร": [food], "ตลาดนัด": [market]}
            for q, expected in cases.items():
                rows = await conn.fetch(
                    "select title from public.events where city = $1 "
                    "and (search_text %> $2 or search_text like '%' || $2 || '%')",
                    city,
                    q,
                )
                assert [row["title"] for row in rows] == expected, q
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


async def test_the_search_statement_finds_typos_and_thai_on_every_database(database_url: str) -> None:
    """The very statement the service runs for `q` (candidates from localplus_private.listed_event_candidates,
    ranked by trigram word similarity), in an anonymous request's transaction."""
    jazz, pottery, concert = "Jazz Festival", "Pottery Workshop", "คอนเสิร์ตดนตรีแจ๊สริมแม่น้ำ"
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    city = await add_city(pool, new_city())
    try:
        for title in (jazz, pottery, concert, "ตลาดนัดวันอาทิตย์"):
            await pool.execute(
                "insert into public.events (title, starts_at, ends_at, timezone, status, city) values "
                "($1, now() + interval '7 days', now() + interval '8 days', 'Asia/Bangkok', 'published', $2)",
                title,
                city,
            )

        async def search(q: str) -> list[str]:
            plan = plan_search(search_query(events_pb2.ListEventsRequest(city=city, q=q)))
            rows = await Database(pool).run(lambda conn: conn.fetch(plan.query, *plan.params), ANONYMOUS)
            return [row["title"] for row in rows]

        cases = {
            "jaz festval": [jazz],
            "potery": [pottery],
            "แจ๊ส": [concert],  # jazz, inside a run of Thai text
            "คอนเสิด": [concert],  # a misspelt "concert"
            "xylophone": [],
            "jazz pottery": [],
        }
        assert {q: await search(q) for q in cases} == cases
    finally:
        await pool.execute("delete from public.events where city = $1", city)
        await pool.execute("delete from public.cities where slug = $1", city)
        await pool.close()


async def test_category_search_is_indexed_on_every_database(database_url: str) -> None:
    """The category filter, as an anonymous caller: whatever the case of the category asked for and
    of the events', an index scan on the folded category with it as the index condition (row-level
    security allows it, being leakproof), in start order."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    city = await add_city(pool, new_city())
    category = f"Cat-{uuid.uuid4().hex[:8]}"
    try:
        for spelled in (category, f" {category.upper()}"):
            await pool.execute(
                "insert into public.events (title, category, starts_at, ends_at, timezone, status, city) "
                "values ('Spot', $2, now() + interval '7 days', now() + interval '8 days', 'Asia/Bangkok', "
                "'published', $1)",
                city,
                spelled,
            )
        # The planner's choice from statistics that know the folded column (the suite's other tests fill
        # and empty public.events all the time, and autovacuum may not have analysed it yet): a category
        # of two events among many, so only this index makes the scan cheap.
        await pool.execute("analyze public.events")
        db = Database(pool)
        current_identity.set(ANONYMOUS)
        plan = plan_search(search_query(events_pb2.ListEventsRequest(category=category.lower(), page_size=5)))
        rows = await db.run(lambda conn: conn.fetch(plan.query, *plan.params), ANONYMOUS)
        assert [row["category"] for row in rows] == [category, f" {category.upper()}"]

        async def explain(conn: Connection) -> str:
            await conn.execute(
                "set local enable_seqscan = off; set local enable_bitmapscan = off; set local enable_sort = off"
            )
            return "\n".join(row[0] for row in await conn.fetch(f"explain {plan.query}", *plan.params))

        lines = [line.strip() for line in (await db.run(explain, ANONYMOUS)).splitlines()]
        scan = next(i for i, line in enumerate(lines) if "Index Scan using events_listed_category_key_idx" in line)
        assert lines[scan + 1].startswith("Index Cond: (category_key = "), lines
    finally:
        await pool.execute("delete from public.events where city = $1", city)
        await pool.execute("delete from public.cities where slug = $1", city)
        await pool.close()


async def test_nearest_first_on_every_database(database_url: str) -> None:
    """The distance order's statement, as an anonymous caller: nearest first through the index with the
    area as its conditions (row-level security allows them, being leakproof), and page after page the
    same as one big page."""
    (lat, lng), radius, inside, outside = FAR_NORTH
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    city = await add_city(pool, new_city())
    try:
        for at_lat, at_lng in [*inside, *outside]:
            await pool.execute(
                "insert into public.events (title, starts_at, ends_at, timezone, status, city, latitude, longitude) "
                "values ('Spot', now() + interval '7 days', now() + interval '8 days', 'Asia/Bangkok', 'published', "
                "$1, $2, $3)",
                city,
                at_lat,
                at_lng,
            )
        db = Database(pool)

        def request(size: int, token: str = "") -> events_pb2.ListEventsRequest:
            return events_pb2.ListEventsRequest(
                city=city, near=f"{lat},{lng}", radius_km=radius, order_by="distance", page_size=size, page_token=token
            )

        current_identity.set(ANONYMOUS)
        one_page = [row["id"] for row in (await search(db, search_query(request(100)))).items]
        assert len(one_page) == len(inside)
        for size in (1, 2, 3):
            paged: list[uuid.UUID] = []
            token = ""
            while True:
                page = await search(db, search_query(request(size, token)))
                paged += [row["id"] for row in page.items]
                token = page.next_page_token
                if not token:
                    break
            assert paged == one_page, size

        plan = plan_search(search_query(request(2)))

        async def explain(conn: Connection) -> str:
            # The table is tiny: only forbidding the other ways shows whether the index can do it.
            await conn.execute(
                "set local enable_seqscan = off; set local enable_bitmapscan = off; set local enable_sort = off"
            )
            return "\n".join(row[0] for row in await conn.fetch(f"explain {plan.query}", *plan.params))

        lines = [line.strip() for line in (await db.run(explain, ANONYMOUS)).splitlines()]
        knn = "Order By: (point(longitude, latitude) <->"
        nearest = next(i for i, line in enumerate(lines) if line.startswith(knn))
        assert lines[nearest - 2].startswith("->  Index Scan using events_listed_near_idx"), lines
        assert lines[nearest - 1].startswith("Index Cond: ((latitude >= '"), lines
    finally:
        await pool.execute("delete from public.events where city = $1", city)
        await pool.execute("delete from public.cities where slug = $1", city)
        await pool.close()
