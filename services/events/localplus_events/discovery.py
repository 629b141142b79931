"""What people find: search over published public events, saves, and "my events".

Search is trigram based (pg_trgm), which tolerates typos and partial words and works on Thai,
where words are not separated by spaces. Every listing uses keyset pagination, so inserts
between pages never make an item repeat or go missing."""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import asyncpg

from localplus_common.access import signed_in, visible_event
from localplus_common.cities import city_id, city_slug
from localplus_common.db import Connection, Database
from localplus_common.errors import invalid_argument
from localplus_common.paging import (
    Page,
    PageRequest,
    check_scope,
    decode_keyset,
    decode_page_token,
    encode_page_token,
    page_of,
    time_value,
    token_value,
    uuid_value,
)
from localplus_common.sponsored import Request, Sponsored, Sponsorship
from localplus_events.domain import category_filter, folded_category

ORDERS = ("relevance", "starts_at", "distance", "popularity")
# How many promoted events matching a search are looked at for a page's sponsored slots.
MAX_SPONSORED_CANDIDATES = 50
# Lower than pg_trgm's default 0.6 so one typo per word still matches ("festval" ~ "festival" is 0.55).
WORD_SIMILARITY_THRESHOLD = 0.45
MAX_QUERY_WORDS = 8
MAX_WORD_LENGTH = 64
DEFAULT_RADIUS_KM = 10.0
MAX_RADIUS_KM = 500.0
# As in public.distance_km (the IUGG mean radius).
EARTH_RADIUS_KM = 6371.0088
# Rounding room around the distance that bounds a page nearest first, in km.
REACH_SLACK_KM = 0.001
# Sort keys are similarities (0-1), distances (km) and counts; anything beyond this is not a real key.
MAX_SORT_KEY = Decimal(2**31)
# Not over yet: a one-off event until it ends, a series until its last occurrence does (the event's own
# `ends_at` is its first occurrence's). Only series under way look at their occurrences.
UPCOMING = (
    "(e.ends_at > now() or (e.recurrence_rrule is not null and exists "
    "(select 1 from public.event_occurrences u where u.event_id = e.id and u.ends_at > now())))"
)
SAVED_KEYSET = {"saved_at": time_value, "id": uuid_value}
MY_EVENTS_KEYSET = {"starts_at": time_value, "id": uuid_value}


@dataclass(frozen=True)
class SearchQuery:
    """A search as the client asked for it; empty strings, None and 0 mean "not given"."""

    page: PageRequest
    q: str = ""
    city: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()
    business_id: UUID | None = None
    starts_after: datetime | None = None
    starts_before: datetime | None = None
    # (latitude, longitude)
    near: tuple[float, float] | None = None
    radius_km: float = 0.0
    free_only: bool = False
    order_by: str = ""


@dataclass(frozen=True)
class Near:
    latitude: float
    longitude: float
    radius_km: float


def _near(query: SearchQuery) -> Near | None:
    if query.near is None:
        if query.radius_km:
            raise invalid_argument("radius_km", "radius_km needs near=lat,lng")
        return None
    latitude, longitude = query.near
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise invalid_argument("near", "near is not a point on Earth")
    radius = query.radius_km or DEFAULT_RADIUS_KM
    if not 0 < radius <= MAX_RADIUS_KM:
        raise invalid_argument("radius_km", f"radius_km must be between 0 and {MAX_RADIUS_KM:.0f}")
    return Near(latitude, longitude, radius)


def _query_words(q: str) -> list[str]:
    words = [word[:MAX_WORD_LENGTH] for word in q.lower().split()]
    # One-letter words match nearly everything by trigram; keep them only if they are all there is.
    meaningful = [word for word in words if len(word) > 1] or words
    if len(meaningful) > MAX_QUERY_WORDS:
        raise invalid_argument("q", f"q may have at most {MAX_QUERY_WORDS} words")
    return meaningful


def _contains(word: str) -> str:
    """A LIKE pattern for `word` anywhere, its % and _ taken literally."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class _Sql:
    """Collects conditions and their parameters; values are always bound, never spliced."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def where(self, condition: str) -> None:
        self.conditions.append(condition)


@dataclass(frozen=True)
class SearchPlan:
    """The one SQL statement a search runs, with its parameters."""

    query: str
    params: list[Any]
    limit: int
    order: str


async def search(db: Database, query: SearchQuery) -> Page[asyncpg.Record]:
    """Published public events matching `query`, one page of them."""
    page, _ = await search_with_sponsored(db, query, None, "")
    return page


async def search_with_sponsored(
    db: Database, query: SearchQuery, sponsorship: Sponsorship | None, viewer: str
) -> tuple[Page[asyncpg.Record], list[Sponsored]]:
    """One page of `query`, and beside it the sponsored results for that page (localplus_common.sponsored)
    for `viewer` (who is charged for them: viewers.viewer_key(..., by_browser=False)): promoted events
    found by the same search, in the same transaction, none of them on the page. The page itself is
    built exactly as without promotions."""
    plan = plan_search(query)
    target = Request(q=query.q, city=query.city, category=category_filter(query.category))
    promoted = sponsorship.candidates(target) if sponsorship is not None else []

    async def run(conn: Connection) -> tuple[list[asyncpg.Record], list[asyncpg.Record], set[UUID]]:
        if query.city:
            await city_id(conn, query.city)
        if query.business_id is not None:
            await _require_business_filter(conn, query.business_id)
        rows = await conn.fetch(plan.query, *plan.params)
        if not promoted or sponsorship is None:
            return rows, [], set()
        on_page = [row["id"] for row in rows[: plan.limit]]
        found = plan_search(query, among=promoted, excluding=on_page)
        matched = await conn.fetch(found.query, *found.params)
        return rows, matched, await sponsorship.own_businesses(conn, matched)

    # Only published public events: a moment's replica lag is fine for everyone.
    rows, matched, own = await db.run(run, replica=True)
    page = Page(rows[: plan.limit], _search_page_token(rows, query.page, plan.order))
    if sponsorship is None or not matched:
        return page, []
    return page, await sponsorship.choose(target, len(page.items), matched, own, viewer)


async def _require_business_filter(conn: Connection, business_id: UUID) -> None:
    """A `business_id=` filter names a business, or a 400 naming it (as an unknown city is). Asked of the
    definer function: `businesses` has row-level security that is not the engine's."""
    if not await conn.fetchval("select localplus_private.business_exists($1)", business_id):
        raise invalid_argument("business_id", f"there is no business {str(business_id)!r}")


def plan_search(
    query: SearchQuery, *, among: Sequence[UUID] | None = None, excluding: Sequence[UUID] = ()
) -> SearchPlan:
    """Check a search and turn it into SQL (values bound as parameters). With `among`: the first
    MAX_SPONSORED_CANDIDATES of those events that match it (promoted events) and have not ended,
    none of `excluding` (the page's own), whatever the page token says."""
    if among is not None:
        query = replace(query, page=PageRequest(MAX_SPONSORED_CANDIDATES, ""))
    limit = query.page.size
    words = _query_words(query.q)
    near = _near(query)
    order = query.order_by or ("relevance" if words else "starts_at")
    if order not in ORDERS:
        raise invalid_argument("order_by", f"order_by must be one of {', '.join(ORDERS)}")
    if order == "relevance" and not words:
        raise invalid_argument("order_by", "order_by=relevance needs q")
    if order == "distance" and near is None:
        raise invalid_argument("order_by", "order_by=distance needs near=lat,lng")
    starts_after, starts_before = query.starts_after, query.starts_before
    if starts_after and starts_before and starts_before <= starts_after:
        raise invalid_argument("starts_before", "starts_before must be after starts_after")

    sql = _Sql()
    # Discovery lists only what everyone may see, whoever asks (RLS applies as well).
    sql.where("e.status = 'published' and e.visibility = 'public'")
    if among is not None:
        sql.where(f"e.id = any({sql.param(list(among))}::uuid[])")
        sql.where(f"not e.id = any({sql.param(list(excluding))}::uuid[])")
        sql.where(UPCOMING)
    elif starts_after is None and starts_before is None:
        sql.where(UPCOMING)
    if starts_after is not None:
        sql.where(f"e.starts_at >= {sql.param(starts_after)}")
    if starts_before is not None:
        sql.where(f"e.starts_at < {sql.param(starts_before)}")
    if query.city:
        # search() has checked the slug names a city.
        sql.where(f"e.city_id = (select c.id from public.cities c where c.slug = {sql.param(city_slug(query.city))})")
    if category_filter(query.category):
        # events_listed_category_key_idx: the folded column, compared with leakproof text equality.
        sql.where(f"e.category_key = {folded_category(sql.param(query.category))}")
    if query.tags:
        sql.where(f"e.tags @> {sql.param(list(query.tags))}::text[]")
    if query.business_id is not None:
        sql.where(f"e.business_id = {sql.param(query.business_id)}")
    if query.free_only:
        sql.where("not exists (select 1 from public.ticket_types t where t.event_id = e.id and t.price_minor > 0)")
    score = "0"
    if words:
        q = sql.param(" ".join(words))
        # Every candidate matched somewhere; how well it matches the title decides the order, so
        # title matches rank above description matches (and it is cheap: titles are short).
        score = f"round(word_similarity({q}, lower(e.title))::numeric, 6)"
    distance = "null::numeric"
    box = "null::box"
    lat = lng = ""
    area = None
    if near is not None:
        lat, lng = sql.param(near.latitude), sql.param(near.longitude)
        area = _Area.around(near)
        distance = f"round(public.distance_km({lat}, {lng}, e.latitude, e.longitude)::numeric, 6)"
        sql.where(f"{distance} <= {sql.param(near.radius_km)}")
        if words and area.is_a_box:
            box = (
                f"box(point({sql.param(area.west)}, {sql.param(area.south)}), "
                f"point({sql.param(area.east)}, {sql.param(area.north)}))"
            )
        if not words:
            # The area as plain comparisons, which unlike `<@` RLS lets be index conditions
            # (events_listed_near_idx: float comparisons are leakproof). With words the candidates are
            # in the box already, or within the distance, checked above.
            sql.where(area.condition(sql))
    if words:
        # Text narrows the candidates through its indexes (see listed_event_candidates): every word
        # must match some stretch of the text approximately (trigram word similarity: typos, partial
        # words) or appear in it as is (a Thai word inside a run without spaces), inside the box
        # around `near` if given.
        patterns = [_contains(word) for word in words]
        candidates = (
            f"localplus_private.listed_event_candidates({sql.param(words)}::text[], {sql.param(patterns)}::text[], "
            f"{box}, {sql.param(WORD_SIMILARITY_THRESHOLD)}::real)"
        )
        sql.where(f"e.id in (select {candidates})")
    # The counters are joined only when sorting by them: the join costs on every candidate row.
    by_popularity = order == "popularity"
    popularity = "c.popularity" if by_popularity else "null::integer"
    sort_key, order_sql = {
        "relevance": (score, f"{score} desc, e.starts_at, e.id"),
        # event_counters_popularity_idx delivers the popularity order; ties are sorted by start.
        "popularity": (popularity, "c.popularity desc, e.starts_at, e.id"),
        "starts_at": ("", "e.starts_at, e.id"),
        "distance": (distance, f"{distance}, e.id"),
    }[order]
    position = decode_page_token(query.page.token)
    if position is not None:
        _add_keyset(sql, order, sort_key, position)
        check_scope(position, query.page)

    # Every event has its counters row (created with it).
    counters = "join public.event_counters c on c.event_id = e.id" if by_popularity else ""
    conditions = " and ".join(sql.conditions)
    # One row more than the page: whether another page follows.
    limit_param = sql.param(limit + 1)
    nearest = ""
    # Planar nearest first is no order across the antimeridian: such areas are read whole.
    if order == "distance" and not words and area is not None and not area.wraps:
        nearest = _nearest_first(sql, conditions, distance, lat, lng, limit_param)
    statement = (
        f"{nearest}select e.*, {score} as score, {distance} as distance_km, {popularity} as popularity "
        f"from public.events e {counters} "
        f"where {' and '.join(sql.conditions)} order by {order_sql} limit {limit_param}"
    )
    return SearchPlan(statement, sql.params, limit, order)


@dataclass(frozen=True)
class _Area:
    """The latitudes and longitudes (degrees) that hold every point within a radius of a centre on
    public.distance_km's sphere, wider by REACH_SLACK_KM against rounding. `west` may lie below -180 or
    `east` above 180 when the area crosses the antimeridian; `all_longitudes` when it reaches a pole."""

    south: float
    north: float
    west: float
    east: float
    all_longitudes: bool

    @classmethod
    def around(cls, near: Near) -> "_Area":
        r = (near.radius_km + REACH_SLACK_KM) / EARTH_RADIUS_KM  # the radius as an angle
        dlat = math.degrees(r)
        latitude = math.radians(near.latitude)
        # A cap reaching a pole spans every longitude; otherwise asin(sin r / cos lat) either way.
        all_longitudes = r + abs(latitude) >= math.pi / 2
        dlng = 180.0 if all_longitudes else math.degrees(math.asin(min(1.0, math.sin(r) / math.cos(latitude))))
        return cls(
            near.latitude - dlat, near.latitude + dlat, near.longitude - dlng, near.longitude + dlng, all_longitudes
        )

    @property
    def wraps(self) -> bool:
        return not self.all_longitudes and (self.west < -180 or self.east > 180)

    @property
    def is_a_box(self) -> bool:
        """Whether one box of (longitude, latitude) holds it."""
        return not self.all_longitudes and not self.wraps

    def condition(self, sql: "_Sql") -> str:
        latitudes = f"e.latitude between {sql.param(self.south)} and {sql.param(self.north)}"
        if self.all_longitudes:
            return latitudes
        if not self.wraps:
            return f"{latitudes} and e.longitude between {sql.param(self.west)} and {sql.param(self.east)}"
        # Both sides of the antimeridian: from `west` to 180 and from -180 to `east`, wrapped.
        west = self.west + 360 if self.west < -180 else self.west
        east = self.east - 360 if self.east > 180 else self.east
        return f"{latitudes} and (e.longitude >= {sql.param(west)} or e.longitude <= {sql.param(east)})"


def _nearest_first(sql: _Sql, conditions: str, distance: str, lat: str, lng: str, limit: str) -> str:
    """Bound a page by distance with a nearest-first index scan (events_listed_near_idx, `<->`) instead
    of reading every event in the area: the first `limit` events that match, in the index's planar
    order, are all within `reach.km`, so the page (the `limit` nearest by great-circle distance, then
    id) is too. It is then read exactly from the events within that reach, found through the same
    index by a box around the cap of that radius (wider by a metre against rounding). The bound holds
    whatever the planar order, which only decides how tight it is. Adds the conditions to `sql` and
    returns the WITH clause they need."""
    sql.where(f"{distance} <= (select km from reach)")
    sql.where(f"e.latitude between {lat} - (select dlat from reach) and {lat} + (select dlat from reach)")
    sql.where(f"e.longitude between {lng} - (select dlng from reach) and {lng} + (select dlng from reach)")
    # A cap of angle r reaching a pole spans every longitude; otherwise asin(sin r / cos lat) either way.
    dlng = f"case when r + radians(abs({lat})) < pi() / 2 then degrees(asin(least(1, sin(r) / cos(radians({lat})))))"
    return (
        f"with nearest as (select {distance} as km from public.events e where {conditions} "
        f"order by point(e.longitude, e.latitude) <-> point({lng}, {lat}) limit {limit}), "
        f"reach as (select km, degrees(r) as dlat, {dlng} else 360 end as dlng "
        f"from (select max(km) as km, (max(km)::float8 + {REACH_SLACK_KM}) / {EARTH_RADIUS_KM} as r from nearest) n) "
    )


def _add_keyset(sql: _Sql, order: str, sort_key: str, position: dict[str, Any]) -> None:
    """Continue after the last row of the previous page, in the same order."""
    event_id = sql.param(token_value(position, "id", uuid_value))
    if order == "distance":
        sql.where(f"({sort_key}, e.id) > ({sql.param(_token_decimal(position))}, {event_id})")
        return
    starts_at = sql.param(token_value(position, "starts_at", time_value))
    if order == "starts_at":
        sql.where(f"(e.starts_at, e.id) > ({starts_at}, {event_id})")
        return
    # A descending score, then ascending start and id.
    key = sql.param(_token_decimal(position))
    sql.where(f"({sort_key} < {key} or ({sort_key} = {key} and (e.starts_at, e.id) > ({starts_at}, {event_id})))")


def _token_decimal(position: dict[str, Any]) -> Decimal:
    try:
        key = Decimal(str(position["key"]))
    except (KeyError, InvalidOperation):
        key = Decimal("NaN")
    if not key.is_finite() or abs(key) > MAX_SORT_KEY:
        raise invalid_argument("page_token", "page_token is not valid")
    return key


def _search_page_token(rows: list[asyncpg.Record], page: PageRequest, order: str) -> str:
    if len(rows) <= page.size:
        return ""
    last = rows[page.size - 1]
    key = {"relevance": last["score"], "popularity": last["popularity"], "distance": last["distance_km"]}.get(order)
    # The scope holds q and order_by, so it also ties the token to the order its key is for.
    return encode_page_token(
        {"starts_at": last["starts_at"].isoformat(), "id": str(last["id"]), "key": str(key)}, page.scope
    )


# Saves and "my events"


async def save(db: Database, event_id: UUID) -> dict[str, Any]:
    """Save an event for the caller; the event's row plus `saved_at`. Saving twice keeps the first save
    (and its place in the list)."""
    identity = signed_in()

    async def run(conn: Connection) -> dict[str, Any]:
        event = await visible_event(conn, event_id)
        saved_at: datetime = await conn.fetchval(
            """
            with saved as (
              insert into public.event_saves (user_id, event_id) values ($1, $2)
              on conflict (user_id, event_id) do nothing
              returning created_at
            )
            select created_at from saved
            union all
            select created_at from public.event_saves where user_id = $1 and event_id = $2
            limit 1
            """,
            identity.user_id,
            event_id,
        )
        return {**dict(event), "saved_at": saved_at}

    return await db.run(run, event_id=event_id)


async def unsave(db: Database, event_id: UUID) -> None:
    identity = signed_in()
    await db.run(
        lambda conn: conn.execute(
            "delete from public.event_saves where user_id = $1 and event_id = $2", identity.user_id, event_id
        )
    )


async def saved_events(db: Database, page: PageRequest) -> Page[asyncpg.Record]:
    """The caller's saved events (rows with `saved_at`), most recently saved first."""
    identity = signed_in()
    after = decode_keyset(page, SAVED_KEYSET)
    rows = await db.run(
        lambda conn: conn.fetch(
            """
            select e.*, s.created_at as saved_at
              from public.event_saves s join public.events e on e.id = s.event_id
             where s.user_id = $1 and ($3::timestamptz is null or (s.created_at, s.event_id) < ($3, $4))
             order by s.created_at desc, s.event_id desc
             limit $2
            """,
            identity.user_id,
            page.size + 1,
            *(after or (None, None)),
        )
    )
    return page_of(rows, page, SAVED_KEYSET)


async def my_events(db: Database, page: PageRequest) -> Page[asyncpg.Record]:
    """The caller's registrations joined with their events, soonest event first."""
    identity = signed_in()
    after = decode_keyset(page, MY_EVENTS_KEYSET)
    rows = await db.run(
        lambda conn: conn.fetch(
            """
            select e.*, p.user_id, p.status as participant_status, p.guest_count, p.occurrence_id,
                   p.created_at as registered_at, p.updated_at as registration_updated_at
              from public.event_participants p join public.events e on e.id = p.event_id
             where p.user_id = $1 and ($3::timestamptz is null or (e.starts_at, e.id) > ($3, $4))
             order by e.starts_at, e.id
             limit $2
            """,
            identity.user_id,
            page.size + 1,
            *(after or (None, None)),
        )
    )
    return page_of(rows, page, MY_EVENTS_KEYSET)
