"""Cities, as every `city=` filter names them (Phase 4): by slug; an unknown one is a 400 naming it,
and a 404 where the city is the resource a path names (its calendar feeds)."""

from uuid import UUID

from localplus_common.db import Connection
from localplus_common.errors import ApiError, invalid_argument, not_found


def city_slug(value: str) -> str:
    """The slug a `city=` parameter names: spaces around it and case do not count. Every city filter reads
    it so, the check that the city exists as well as the statement that filters by it."""
    return value.strip().lower()


async def city_id(conn: Connection, slug: str, field: str = "city") -> UUID:
    """The city a slug names, or a 400 naming the slug."""
    found = await _find(conn, slug)
    if found is None:
        raise _no_city(field, slug)
    return found


async def require_path_city(conn: Connection, slug: str) -> None:
    """The city a path names exists, or a 404 naming the slug."""
    if await _find(conn, slug) is None:
        raise not_found(_unknown(slug))


async def require_cities(conn: Connection, slugs: list[str], field: str) -> None:
    """Every slug names a city, or a 400 naming the first that does not."""
    unknown: list[str] = await conn.fetchval(
        "select coalesce(array_agg(s order by s), '{}') from unnest($1::text[]) s"
        " where not exists (select 1 from public.cities c where c.slug = s)",
        slugs,
    )
    if unknown:
        raise _no_city(field, unknown[0])


async def _find(conn: Connection, slug: str) -> UUID | None:
    found: UUID | None = await conn.fetchval("select id from public.cities where slug = $1", city_slug(slug))
    return found


def _no_city(field: str, slug: str) -> ApiError:
    return invalid_argument(field, _unknown(slug))


def _unknown(slug: str) -> str:
    return f"there is no city {slug[:64]!r}; GET /api/cities lists them"
