"""Cities and venues: where events happen. Cities are the server's (a migration seeds them); venues
are added by platform admins and by the owner and editor partners of the venue's business (row-level
security). A `city=` filter anywhere names a city by its slug; an unknown one is a 400 naming it."""

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from localplus_common.access import signed_in
from localplus_common.cities import city_id
from localplus_common.db import Connection, Database
from localplus_common.errors import invalid_argument, permission_denied
from localplus_common.paging import Keyset, Page, PageRequest, decode_keyset, page_of, text_value, uuid_value
from localplus_common.requests import text

BY_NAME_KEYSET: Keyset = {"name": text_value, "id": uuid_value}
MAX_NAME = 200
MAX_ADDRESS = 500
VENUE_COLUMNS = "v.*, c.slug as city"


@dataclass(frozen=True)
class NewVenue:
    city: str
    name: str
    address: str
    latitude: float | None
    longitude: float | None
    business_id: UUID | None


async def list_cities(db: Database, page: PageRequest) -> Page[asyncpg.Record]:
    after = decode_keyset(page, BY_NAME_KEYSET)
    rows = await db.run(
        lambda conn: conn.fetch(
            "select * from public.cities where ($2::text is null or (name, id) > ($2, $3)) order by name, id limit $1",
            page.size + 1,
            *(after or (None, None)),
        ),
        replica=True,
    )
    return page_of(rows, page, BY_NAME_KEYSET)


async def list_venues(db: Database, city: str, business_id: UUID | None, page: PageRequest) -> Page[asyncpg.Record]:
    after = decode_keyset(page, BY_NAME_KEYSET)

    async def list_them(conn: Connection) -> list[asyncpg.Record]:
        in_city = await city_id(conn, city) if city else None
        return await conn.fetch(
            f"""
            select {VENUE_COLUMNS} from public.venues v join public.cities c on c.id = v.city_id
             where ($2::uuid is null or v.city_id = $2) and ($3::uuid is null or v.business_id = $3)
               and ($4::text is null or (v.name, v.id) > ($4, $5))
             order by v.name, v.id
             limit $1
            """,
            page.size + 1,
            in_city,
            business_id,
            *(after or (None, None)),
        )

    return page_of(await db.run(list_them, replica=True), page, BY_NAME_KEYSET)


async def create_venue(db: Database, new: NewVenue) -> asyncpg.Record:
    identity = signed_in()
    _check(new)
    if new.business_id is None and not identity.is_platform_admin:
        raise invalid_argument("venue.business_id", "business_id is required: partners add their business's venues")

    async def create(conn: Connection) -> asyncpg.Record:
        in_city = await city_id(conn, new.city, "venue.city")
        if not identity.is_platform_admin and not await conn.fetchval(
            "select localplus_private.is_business_partner($1, array['owner', 'editor'])", new.business_id
        ):
            raise permission_denied("only owner or editor partners of a business may add its venues")
        venue_id = await conn.fetchval(
            "insert into public.venues (city_id, business_id, name, address, latitude, longitude) "
            "values ($1, $2, $3, $4, $5, $6) returning id",
            in_city,
            new.business_id,
            new.name.strip(),
            new.address,
            new.latitude,
            new.longitude,
        )
        row = await conn.fetchrow(
            f"select {VENUE_COLUMNS} from public.venues v join public.cities c on c.id = v.city_id where v.id = $1",
            venue_id,
        )
        assert row is not None
        return row

    return await db.run(create)


async def at_venue(conn: Connection, venue_id: UUID, values: dict[str, object]) -> dict[str, object]:
    """An event's values with what its venue knows (city, coordinates, name, address, the city's time
    zone) filling whatever the request left unset."""
    venue = await conn.fetchrow(
        "select v.*, c.slug, c.timezone from public.venues v join public.cities c on c.id = v.city_id where v.id = $1",
        venue_id,
    )
    if venue is None:
        raise invalid_argument("venue_id", "there is no such venue")
    known = {
        "city": venue["slug"],
        "timezone": venue["timezone"],
        "venue_name": venue["name"],
        "address": venue["address"],
    }
    if venue["latitude"] is not None and "latitude" not in values and "longitude" not in values:
        known |= {"latitude": venue["latitude"], "longitude": venue["longitude"]}
    return {name: value for name, value in known.items() if not values.get(name)} | values


def _check(new: NewVenue) -> None:
    for field, value, longest in (("name", new.name, MAX_NAME), ("address", new.address, MAX_ADDRESS)):
        text(f"venue.{field}", value)
        if len(value) > longest:
            raise invalid_argument(f"venue.{field}", f"{field} must be at most {longest} characters")
    if not new.name.strip():
        raise invalid_argument("venue.name", "name is required")
    if not new.city:
        raise invalid_argument("venue.city", "city is required (a slug from GET /api/cities)")
    if (new.latitude is None) != (new.longitude is None):
        raise invalid_argument("venue.latitude", "latitude and longitude go together")
    if new.latitude is not None and not -90 <= new.latitude <= 90:
        raise invalid_argument("venue.latitude", "latitude must be between -90 and 90")
    if new.longitude is not None and not -180 <= new.longitude <= 180:
        raise invalid_argument("venue.longitude", "longitude must be between -180 and 180")
