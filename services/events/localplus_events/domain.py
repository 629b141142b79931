"""Event rules that hold whatever the transport: editable fields, enum names and validation.

The database enforces the same constraints (CHECKs, RLS, capacity triggers); checking here
first gives clients a precise message instead of a generic refusal.
"""

import functools
from datetime import datetime
from typing import Any
from zoneinfo import available_timezones

from localplus_common.errors import invalid_argument

# Statuses a person may choose for themselves; "attended" is set by editors at the door.
SELF_SERVICE_STATUSES = ("going", "interested", "cancelled")

EDITABLE_FIELDS = (
    "business_id",
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
    "registration_opens_at",
    "registration_closes_at",
    "city",
    "venue_id",
    "recurrence",
    "seating_plan_id",
)
# The columns the `recurrence` field is stored in, the columns of all editable fields, and those an
# event's occurrences are built from.
RECURRENCE_COLUMNS = ("recurrence_rrule", "recurrence_exdates", "recurrence_rdates")
EDITABLE_COLUMNS = tuple(c for f in EDITABLE_FIELDS for c in (RECURRENCE_COLUMNS if f == "recurrence" else (f,)))
SCHEDULE_COLUMNS = ("starts_at", "ends_at", "timezone", *RECURRENCE_COLUMNS)
OUTPUT_ONLY_FIELDS = (
    "id",
    "created_by",
    "etag",
    "created_at",
    "updated_at",
    "source",
    "status_reason",
    "submitted_at",
    "published_at",
    "distance_km",
)
# What an update of a registration may write, and what a mask may name but an update never writes.
PARTICIPANT_EDITABLE_FIELDS = ("status", "guest_count")
PARTICIPANT_FIXED_FIELDS = ("event_id", "user_id", "occurrence_id", "created_at", "updated_at")
# The longest IANA name is 32 characters ("America/Argentina/ComodRivadavia").
MAX_TIMEZONE_LENGTH = 64


@functools.cache
def _timezone_names() -> frozenset[str]:
    # Read once; a name is looked up in this set and never used as a path (zoneinfo opens a file per
    # name and raised OSError for a 10,000-character one or for a directory such as "America").
    return frozenset(available_timezones())


def validate_timezone(name: str) -> None:
    if not name:
        raise invalid_argument("timezone", "timezone is required (an IANA name such as Asia/Bangkok)")
    if len(name) > MAX_TIMEZONE_LENGTH or name not in _timezone_names():
        raise invalid_argument("timezone", f"timezone {name[:64]!r} is not an IANA time zone")


def validate_event(event: dict[str, Any]) -> None:
    """Check a whole event (after a create, or an update merged onto the stored one)."""
    if not (event.get("title") or "").strip():
        raise invalid_argument("title", "title is required")
    starts_at: datetime | None = event.get("starts_at")
    ends_at: datetime | None = event.get("ends_at")
    if starts_at is None:
        raise invalid_argument("starts_at", "starts_at is required")
    if ends_at is None:
        raise invalid_argument("ends_at", "ends_at is required")
    if ends_at <= starts_at:
        raise invalid_argument("ends_at", "ends_at must be after starts_at")
    validate_timezone(event.get("timezone") or "")
    if (event.get("latitude") is None) != (event.get("longitude") is None):
        raise invalid_argument("latitude", "latitude and longitude go together")
    if event.get("latitude") is not None and not -90 <= event["latitude"] <= 90:
        raise invalid_argument("latitude", "latitude must be between -90 and 90")
    if event.get("longitude") is not None and not -180 <= event["longitude"] <= 180:
        raise invalid_argument("longitude", "longitude must be between -180 and 180")
    if event.get("capacity") is not None and event["capacity"] < 1:
        raise invalid_argument("capacity", "capacity must be at least 1 (leave it unset for no limit)")
    opens, closes = event.get("registration_opens_at"), event.get("registration_closes_at")
    if opens is not None and closes is not None and closes <= opens:
        raise invalid_argument("registration_closes_at", "registration must close after it opens")


# Categories are compared without regard to case or the spaces around them (`Music` is `music`): the
# folded category, as events.category_key holds it (sql/migrations/20261224002200_category_key.sql).
CATEGORY_SPACES = " \t\n\r"


def folded_category(sql: str) -> str:
    """SQL for the folded category of the text `sql` (a column or a parameter)."""
    return f"lower(btrim({sql}, E' \\t\\n\\r'))"


def category_filter(value: str) -> str:
    """A `category=` filter as given, or "" (no filter) when it is only spaces."""
    return value if value.strip(CATEGORY_SPACES) else ""


# Enum value names in the API are these prefixes plus the database value in capitals.
STATUS_PREFIX = "EVENT_STATUS_"
VISIBILITY_PREFIX = "EVENT_VISIBILITY_"
PARTICIPANT_PREFIX = "PARTICIPANT_STATUS_"
ROLE_PREFIX = "EVENT_ROLE_"


def enum_to_db(prefix: str, name: str) -> str:
    """`EVENT_STATUS_PUBLISHED` -> `published`."""
    return name.removeprefix(prefix).lower()


def db_to_enum(prefix: str, value: str) -> str:
    return prefix + value.upper()


def status_name(status: str) -> str:
    """An event status as clients know it, for messages: `published` -> `EVENT_STATUS_PUBLISHED`."""
    return db_to_enum(STATUS_PREFIX, status)
