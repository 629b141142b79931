"""Cities, as every `city=` filter names them (Phase 4): by slug; an unknown one is a 400 naming it."""

from uuid import UUID

from localplus_common.db import Connection
from localplus_common.errors import invalid_argument


async def city_id(conn: Connection, slug: str, field: str = "city") -> UUID:
    """The city a slug names, or a 400 naming the slug."""
    found: UUID | None = await conn.fetchval("select id from public.cities where slug = $1", slug.strip().lower())
    if found is None:
        raise invalid_argument(field, f"there is no city {slug[:64]!r}; GET /api/cities lists them")
    return found
