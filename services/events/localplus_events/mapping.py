"""Translation between protobuf messages and database rows."""

from typing import Any

import asyncpg

from localplus.events.v1 import events_pb2
from localplus_common.errors import invalid_argument
from localplus_common.requests import parse_uuid, set_timestamp, timestamp_or_none
from localplus_events.domain import EDITABLE_FIELDS, OUTPUT_ONLY_FIELDS, db_to_enum, enum_to_db

STATUS_PREFIX = "EVENT_STATUS_"
VISIBILITY_PREFIX = "EVENT_VISIBILITY_"
PARTICIPANT_PREFIX = "PARTICIPANT_STATUS_"
ROLE_PREFIX = "EVENT_ROLE_"

TIMESTAMP_FIELDS = ("starts_at", "ends_at", "registration_opens_at", "registration_closes_at")
OPTIONAL_NUMBERS = ("latitude", "longitude", "capacity")
TEXT_FIELDS = ("title", "description", "category", "timezone", "venue_name", "address")


def populated_fields(event: events_pb2.Event) -> list[str]:
    """Fields the client set, for an update without a mask (AIP-134)."""
    present = {descriptor.name for descriptor, _ in event.ListFields()}
    return [name for name in EDITABLE_FIELDS if name in present]


def mask_fields(paths: list[str]) -> list[str]:
    fields = []
    for path in paths:
        if path == "*":
            return list(EDITABLE_FIELDS)
        if path in OUTPUT_ONLY_FIELDS:
            continue
        if path not in EDITABLE_FIELDS:
            raise invalid_argument("update_mask", f"update_mask names unknown field {path[:64]!r}")
        fields.append(path)
    return fields


def event_values(event: events_pb2.Event, fields: list[str]) -> dict[str, Any]:
    """Column values for `fields` of `event`; an unset field means "clear it"."""
    values: dict[str, Any] = {}
    for name in fields:
        if name == "city":
            values[name] = event.city.strip().lower() or None
        elif name in TEXT_FIELDS:
            values[name] = getattr(event, name)
        elif name in TIMESTAMP_FIELDS:
            values[name] = timestamp_or_none(event, name)
        elif name in OPTIONAL_NUMBERS:
            values[name] = getattr(event, name) if event.HasField(name) else None
        elif name == "business_id":
            has_business = event.HasField("business_id") and event.business_id
            values[name] = parse_uuid("business_id", event.business_id) if has_business else None
        elif name == "tags":
            values[name] = list(event.tags)
        elif name == "visibility":
            values[name] = _enum_value(event, name, events_pb2.EventVisibility, VISIBILITY_PREFIX)
        elif name == "status":
            values[name] = _enum_value(event, name, events_pb2.EventStatus, STATUS_PREFIX)
    return values


def _enum_value(event: events_pb2.Event, field: str, enum: Any, prefix: str) -> str:
    return enum_to_db(prefix, enum_name(enum, getattr(event, field), field))


def enum_name(enum: Any, number: int, field: str) -> str:
    """The name of a specified enum value; proto3 JSON also lets through numbers with no name."""
    if number != 0:
        try:
            name: str = enum.Name(number)
            return name
        except ValueError:
            pass
    raise invalid_argument(field, f"{field} must be one of {', '.join(enum.keys()[1:])}")


def event_to_proto(row: asyncpg.Record | dict[str, Any]) -> events_pb2.Event:
    event = events_pb2.Event(
        id=str(row["id"]),
        created_by=str(row["created_by"] or ""),
        title=row["title"],
        description=row["description"],
        category=row["category"],
        tags=row["tags"],
        timezone=row["timezone"],
        venue_name=row["venue_name"],
        address=row["address"],
        visibility=db_to_enum(VISIBILITY_PREFIX, row["visibility"]),
        status=db_to_enum(STATUS_PREFIX, row["status"]),
        etag=str(row["version"]),
        city=row["city"] or "",
        source=row["source"] or "",
        status_reason=row["status_reason"] or "",
    )
    if row["business_id"] is not None:
        event.business_id = str(row["business_id"])
    for name in OPTIONAL_NUMBERS:
        if row[name] is not None:
            setattr(event, name, row[name])
    for name in (*TIMESTAMP_FIELDS, "created_at", "updated_at", "submitted_at", "published_at"):
        set_timestamp(event, name, row[name])
    if row.get("distance_km") is not None:
        event.distance_km = float(row["distance_km"])
    return event


def event_status_name(status: str) -> str:
    return db_to_enum(STATUS_PREFIX, status)


def participant_status_to_db(number: int) -> str:
    return enum_to_db(PARTICIPANT_PREFIX, enum_name(events_pb2.ParticipantStatus, number, "status"))


def participant_to_proto(row: asyncpg.Record | dict[str, Any]) -> events_pb2.Participant:
    participant = events_pb2.Participant(
        event_id=str(row["event_id"]),
        user_id=str(row["user_id"]),
        status=db_to_enum(PARTICIPANT_PREFIX, row["status"]),
        guest_count=row["guest_count"],
    )
    set_timestamp(participant, "created_at", row["created_at"])
    set_timestamp(participant, "updated_at", row["updated_at"])
    return participant


def role_to_db(number: int) -> str:
    return enum_to_db(ROLE_PREFIX, enum_name(events_pb2.EventRole, number, "role"))


def permission_to_proto(row: asyncpg.Record) -> events_pb2.Permission:
    permission = events_pb2.Permission(
        event_id=str(row["event_id"]),
        user_id=str(row["user_id"]),
        role=db_to_enum(ROLE_PREFIX, row["role"]),
        granted_by=str(row["granted_by"] or ""),
    )
    set_timestamp(permission, "expires_at", row["expires_at"])
    set_timestamp(permission, "created_at", row["created_at"])
    return permission


def saved_event_to_proto(row: Any) -> events_pb2.SavedEvent:
    saved = events_pb2.SavedEvent(event_id=str(row["id"]), event=event_to_proto(row))
    set_timestamp(saved, "created_at", row["saved_at"])
    return saved


def my_event_to_proto(row: asyncpg.Record) -> events_pb2.MyEvent:
    """A registration joined with its event (the query renames the registration's columns)."""
    registration = {
        "event_id": row["id"],
        "user_id": row["user_id"],
        "status": row["participant_status"],
        "guest_count": row["guest_count"],
        "created_at": row["registered_at"],
        "updated_at": row["registration_updated_at"],
    }
    return events_pb2.MyEvent(participant=participant_to_proto(registration), event=event_to_proto(row))
