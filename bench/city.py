"""A synthetic city for search benchmarks: `seed_city` writes N events around Bangkok with
English and Thai titles, categories, tags, venues and start times over the next six months.

Most events are published and public; the rest (drafts, pending, private) are there so the
planner has to skip them, as in a real database. Popularity counters get a long-tailed spread.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

CENTER = (13.7563, 100.5018)  # Bangkok
SPREAD_KM = 25.0
KM_PER_DEGREE = 111.32
BATCH = 50_000  # events written per COPY
REBUILD_INDEXES_FROM = 200_000  # events written at once from which indexes are dropped and built again

ENGLISH = [
    "Jazz",
    "Festival",
    "Night",
    "Market",
    "Food",
    "Street",
    "Art",
    "Exhibition",
    "Yoga",
    "Morning",
    "Run",
    "Marathon",
    "Cooking",
    "Class",
    "Thai",
    "Boxing",
    "Muay",
    "Rooftop",
    "Party",
    "Live",
    "Music",
    "Concert",
    "Rock",
    "Indie",
    "Film",
    "Screening",
    "Workshop",
    "Pottery",
    "Photography",
    "Walk",
    "Temple",
    "Tour",
    "River",
    "Cruise",
    "Craft",
    "Beer",
    "Wine",
    "Tasting",
    "Startup",
    "Meetup",
    "Book",
    "Club",
    "Comedy",
    "Show",
    "Dance",
    "Salsa",
    "Tango",
    "Kids",
    "Family",
    "Fair",
]
THAI = [
    "คอนเสิร์ต",
    "ดนตรี",
    "แจ๊ส",
    "เทศกาล",
    "อาหาร",
    "ตลาดนัด",
    "วันอาทิตย์",
    "ริมแม่น้ำ",
    "งานวัด",
    "ศิลปะ",
    "นิทรรศการ",
    "โยคะ",
    "มวยไทย",
    "ทำอาหาร",
    "เวิร์กช็อป",
    "ถ่ายภาพ",
    "ล่องเรือ",
    "ร็อค",
]
CATEGORIES = ["music", "food", "art", "sports", "wellness", "nightlife", "family", "learning", "tours", "film"]
VENUES = ["Riverside Stage", "Lumpini Park", "Warehouse 30", "Siam Hall", "Chinatown Courtyard", "Ari Loft"]
# About 85% listed; the rest must be skipped by every search.
STATUS_MIX = [("published", "public")] * 17 + [
    ("draft", "public"),
    ("pending_review", "public"),
    ("published", "private"),
]

COLUMNS = (
    "id",
    "created_by",
    "title",
    "description",
    "category",
    "tags",
    "starts_at",
    "ends_at",
    "timezone",
    "venue_name",
    "address",
    "latitude",
    "longitude",
    "capacity",
    "visibility",
    "status",
    "city",
)


SYLLABLES = ["ka", "lo", "mi", "ra", "to", "sen", "va", "lu", "bri", "nor", "tal", "ze", "quin", "dor", "pha", "ly"]
THAI_SYLLABLES = ["กา", "ลม", "มิ", "รัก", "ต้น", "แสง", "วา", "ลู", "บุญ", "นอ", "ทอง", "เซ", "ดาว", "ผา", "ใจ"]


class Vocabulary:
    """Common event words plus thousands of made-up names, drawn with a long tail (like real titles)."""

    def __init__(self, rng: random.Random, common: list[str], syllables: list[str], names: int) -> None:
        made_up = {"".join(rng.choices(syllables, k=rng.randint(2, 3))) for _ in range(names)}
        self.words = common + sorted(made_up)
        weights = [1 / (rank + 1) ** 0.9 for rank in range(len(self.words))]
        rng.shuffle(weights)  # common words are not always the most frequent
        # What rng.choices(weights=...) would sum up on every call (the same draws, without the O(words) sum).
        self.cum_weights = list(itertools.accumulate(weights))

    def draw(self, rng: random.Random, count: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cum_weights, k=count)


def _event(rng: random.Random, vocabularies: tuple[Vocabulary, Vocabulary], owner: uuid.UUID, city: str,
           now: datetime) -> tuple[object, ...]:  # fmt: skip
    thai = rng.random() < 0.3
    vocabulary = vocabularies[1 if thai else 0]
    words = vocabulary.draw(rng, rng.randint(2, 4))
    title = ("" if thai else " ").join(words).title()  # Thai writes words without spaces
    description = " ".join(vocabulary.draw(rng, rng.randint(10, 40)))
    starts = now + timedelta(minutes=rng.randint(-60 * 24 * 7, 60 * 24 * 180))
    distance = SPREAD_KM * math.sqrt(rng.random())  # evenly over the city's disc
    bearing = rng.random() * 6.283185
    lat = CENTER[0] + distance * math.cos(bearing) / KM_PER_DEGREE
    lng = CENTER[1] + distance * math.sin(bearing) / (KM_PER_DEGREE * 0.9716)
    status, visibility = rng.choice(STATUS_MIX)
    return (
        uuid.uuid4(), owner, title, description, rng.choice(CATEGORIES),
        rng.sample(["outdoor", "indoor", "free", "18+", "english", "thai", "weekend", "evening"], k=2),
        starts, starts + timedelta(hours=rng.randint(1, 6)), "Asia/Bangkok", rng.choice(VENUES), "",
        lat, lng, rng.choice([None, 50, 200, 1000]), visibility, status, city,
    )  # fmt: skip


async def _drop_indexes(conn: asyncpg.Connection) -> list[str]:
    """Drop the events table's indexes that back no constraint; the statements that create them again."""
    rows = await conn.fetch(
        "select i.indexrelid::regclass::text as name, pg_get_indexdef(i.indexrelid) as definition from pg_index i "
        "where i.indrelid = 'public.events'::regclass "
        "and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid)"
    )
    for row in rows:
        await conn.execute(f"drop index {row['name']}")
    await conn.execute("set maintenance_work_mem = '256MB'")
    return [row["definition"] for row in rows]


async def seed_city(database_url: str, count: int = 100_000, city: str = "bangkok", seed: int = 7) -> None:
    """Write `count` events for `city` (skipped if the city already has that many)."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(database_url)
    try:
        have = await conn.fetchval("select count(*) from public.events where city = $1", city)
        if have >= count:
            return
        # Search checks the city's slug, and the events' trigger resolves their city_id from it.
        await conn.execute(
            "insert into public.cities (slug, name, country, timezone, latitude, longitude, bounds)"
            " values ($1, $1, 'TH', 'Asia/Bangkok', $2::float8, $3::float8,"
            " box(point($3::float8 - 0.3, $2::float8 - 0.3), point($3::float8 + 0.3, $2::float8 + 0.3)))"
            " on conflict (slug) do nothing",
            city,
            CENTER[0],
            CENTER[1],
        )
        owner = uuid.uuid4()
        await conn.execute("insert into auth.users (id, email) values ($1, 'city-seeder@example.test')", owner)
        now = datetime.now(UTC)
        vocabularies = (Vocabulary(rng, ENGLISH, SYLLABLES, 3000), Vocabulary(rng, THAI, THAI_SYLLABLES, 1500))

        def batch(size: int) -> list[tuple[object, ...]]:
            return [_event(rng, vocabularies, owner, city, now) for _ in range(size)]

        # COPY runs the row triggers (search text, counters, moderation log) like any insert; in batches,
        # so a city of millions is never all in memory at once (the rows are the same either way), the
        # next one made in a thread while Postgres writes this one.
        sizes = [min(BATCH, count - start) for start in range(have, count, BATCH)]
        # A big city is written without the events table's own indexes, built again at the end: one
        # build is many times cheaper than a million updates of trigram indexes.
        rebuilt = await _drop_indexes(conn) if count - have >= REBUILD_INDEXES_FROM else []
        rows = batch(sizes[0])
        for size in [*sizes[1:], 0]:
            upcoming = asyncio.create_task(asyncio.to_thread(batch, size))
            await conn.copy_records_to_table("events", schema_name="public", columns=COLUMNS, records=rows)
            rows = await upcoming
        for definition in rebuilt:
            await conn.execute(definition)
        await conn.execute(
            "update public.event_counters c set going = (random() ^ 4 * 300)::int, saves = (random() ^ 4 * 100)::int "
            "from public.events e where e.id = c.event_id and e.city = $1",
            city,
        )
        await conn.execute("analyze public.events; analyze public.event_counters")
    finally:
        await conn.close()
