"""Translation between the recurrence protos and what the use cases take and return."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from google.api import httpbody_pb2
from google.protobuf import json_format

from localplus.events.v1 import schedule_pb2
from localplus.recurrence.v1 import recurrence_pb2
from localplus_common.errors import invalid_argument
from localplus_common.requests import set_timestamp, text, timestamp_or_none, timestamp_value
from localplus_common.sponsored import Sponsored
from localplus_recurrence.calendars import Document
from localplus_recurrence.occurrences import OccurrenceChanges
from localplus_recurrence.rules import Recurrence, Schedule

STATUSES = {
    "scheduled": recurrence_pb2.OCCURRENCE_STATUS_SCHEDULED,
    "cancelled": recurrence_pb2.OCCURRENCE_STATUS_CANCELLED,
}
EDITABLE = ("status", "starts_at", "ends_at", "capacity", "note")
IGNORED = ("id", "event_id", "original_starts_at", "moved")
ICS_TYPE = "text/calendar; charset=utf-8"
JSON_TYPE = "application/json"

# Requests


def recurrence_of(message: schedule_pb2.Recurrence, field: str = "recurrence") -> Recurrence:
    return Recurrence(
        text(f"{field}.rrule", message.rrule),
        tuple(_times(message, "exdates", field)),
        tuple(_times(message, "rdates", field)),
    )


def _times(message: schedule_pb2.Recurrence, name: str, field: str) -> list[datetime]:
    return [timestamp_value(stamp, f"{field}.{name}[{i}]") for i, stamp in enumerate(getattr(message, name))]


def schedule_of(request: recurrence_pb2.ValidateRecurrenceRequest) -> Schedule:
    starts_at, ends_at = timestamp_or_none(request, "starts_at"), timestamp_or_none(request, "ends_at")
    if starts_at is None or ends_at is None:
        raise invalid_argument("starts_at", "starts_at and ends_at are required")
    if ends_at <= starts_at:
        raise invalid_argument("ends_at", "ends_at must be after starts_at")
    return Schedule(starts_at, ends_at, request.timezone, recurrence_of(request.recurrence))


def occurrence_changes(request: recurrence_pb2.UpdateOccurrenceRequest) -> OccurrenceChanges:
    occurrence = request.occurrence
    if request.update_mask.paths:
        fields = []
        for path in request.update_mask.paths:
            if path in IGNORED:
                continue
            if path not in EDITABLE:
                raise invalid_argument("update_mask", f"update_mask names unknown field {path[:64]!r}")
            fields.append(path)
    else:
        present = {descriptor.name for descriptor, _ in occurrence.ListFields()}
        fields = [name for name in EDITABLE if name in present]
    if not fields:
        raise invalid_argument("update_mask", "name the fields to change (status, starts_at, ends_at, capacity, note)")
    cancelled = None
    if "status" in fields:
        if occurrence.status not in STATUSES.values():
            raise invalid_argument("occurrence.status", "status must be OCCURRENCE_STATUS_SCHEDULED or _CANCELLED")
        cancelled = occurrence.status == recurrence_pb2.OCCURRENCE_STATUS_CANCELLED
    capacity: tuple[bool, int | None] = (False, None)
    if "capacity" in fields:
        value = occurrence.capacity if occurrence.HasField("capacity") else None
        if value is not None and not 1 <= value <= 1_000_000:
            raise invalid_argument("occurrence.capacity", "capacity must be from 1 to 1000000 (unset: the event's)")
        capacity = (True, value)
    starts_at = timestamp_or_none(occurrence, "starts_at", "occurrence.starts_at") if "starts_at" in fields else None
    ends_at = timestamp_or_none(occurrence, "ends_at", "occurrence.ends_at") if "ends_at" in fields else None
    note = text("occurrence.note", occurrence.note) if "note" in fields else None
    if note is not None and len(note) > 2000:
        raise invalid_argument("occurrence.note", "note is longer than 2000 characters")
    return OccurrenceChanges(cancelled, starts_at, ends_at, capacity, note)


# Responses


def occurrence_to_proto(row: asyncpg.Record | dict[str, Any]) -> recurrence_pb2.Occurrence:
    occurrence = recurrence_pb2.Occurrence(
        id=str(row["id"]),
        event_id=str(row["event_id"]),
        status=STATUSES[row["status"]],
        note=row["note"],
        moved=row["moved"],
    )
    for field in ("starts_at", "ends_at", "original_starts_at"):
        set_timestamp(occurrence, field, row[field])
    if row["capacity"] is not None:
        occurrence.capacity = row["capacity"]
    return occurrence


def listed_to_proto(row: asyncpg.Record) -> recurrence_pb2.ListedOccurrence:
    event = recurrence_pb2.EventSummary(
        id=str(row["event_id"]),
        business_id=str(row["business_id"] or ""),
        title=row["title"],
        category=row["category"],
        city=row["city"] or "",
        timezone=row["timezone"],
        venue_name=row["venue_name"],
        address=row["address"],
        recurring=row["recurring"],
    )
    if row["latitude"] is not None:
        event.latitude, event.longitude = row["latitude"], row["longitude"]
    return recurrence_pb2.ListedOccurrence(occurrence=occurrence_to_proto(row), event=event)


def sponsored_to_proto(item: Sponsored) -> recurrence_pb2.SponsoredOccurrence:
    listed = listed_to_proto(item.event)
    return recurrence_pb2.SponsoredOccurrence(
        position=item.position, promotion_id=str(item.promotion_id), event=listed.event, occurrence=listed.occurrence
    )


def recurrence_to_proto(recurrence: Recurrence) -> schedule_pb2.Recurrence:
    message = schedule_pb2.Recurrence(rrule=recurrence.rrule)
    for name in ("exdates", "rdates"):
        for moment in getattr(recurrence, name):
            getattr(message, name).add().FromDatetime(moment)
    return message


def http_body(document: Document, kind: str) -> httpbody_pb2.HttpBody:
    if document.not_modified:
        return httpbody_pb2.HttpBody(content_type=ICS_TYPE if kind == "ics" else JSON_TYPE)
    if kind == "ics":
        return httpbody_pb2.HttpBody(content_type=ICS_TYPE, data=document.ics)
    feed = recurrence_pb2.CalendarFeed(occurrences=[listed_to_proto(row) for row in document.occurrences])
    # Printed here, not by Envoy (an HttpBody passes through as is): with Envoy's print options, so an
    # empty feed is {"occurrences": []} and fields left at their defaults are there, as in every list.
    data = json_format.MessageToJson(
        feed, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=None
    )
    return httpbody_pb2.HttpBody(content_type=JSON_TYPE, data=data.encode())


def list_response(rows: Sequence[asyncpg.Record], token: str) -> recurrence_pb2.ListOccurrencesResponse:
    return recurrence_pb2.ListOccurrencesResponse(
        occurrences=[occurrence_to_proto(row) for row in rows], next_page_token=token
    )
