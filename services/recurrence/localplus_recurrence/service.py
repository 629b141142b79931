"""gRPC entrypoint of the recurrence service."""

from datetime import datetime
from typing import Any

import asyncpg
from grpc.aio import ServicerContext as Context

from localplus.recurrence.v1 import recurrence_pb2, recurrence_pb2_grpc
from localplus_common.access import visible_event
from localplus_common.db import Database
from localplus_common.errors import invalid_argument
from localplus_common.requests import parse_uuid, set_timestamp, timestamp_or_none


def single_occurrence(event: asyncpg.Record) -> recurrence_pb2.Occurrence:
    """A one-off event has exactly one occurrence, identified by the event's own id."""
    occurrence = recurrence_pb2.Occurrence(
        id=str(event["id"]),
        event_id=str(event["id"]),
        status=(
            recurrence_pb2.OCCURRENCE_STATUS_CANCELLED
            if event["status"] == "cancelled"
            else recurrence_pb2.OCCURRENCE_STATUS_SCHEDULED
        ),
    )
    for field, column in (("starts_at", "starts_at"), ("ends_at", "ends_at"), ("original_starts_at", "starts_at")):
        set_timestamp(occurrence, field, event[column])
    if event["capacity"] is not None:
        occurrence.capacity = event["capacity"]
    return occurrence


def _within(starts_at: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or starts_at >= start) and (end is None or starts_at < end)


class RecurrenceService(recurrence_pb2_grpc.RecurrenceServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ListOccurrences(self, request: recurrence_pb2.ListOccurrencesRequest, context: Context) -> Any:
        event_id = parse_uuid("event_id", request.event_id)
        start = timestamp_or_none(request, "start")
        end = timestamp_or_none(request, "end")
        if start is not None and end is not None and end <= start:
            raise invalid_argument("end", "end must be after start")
        event = await self.db.run(lambda conn: visible_event(conn, event_id), event_id=event_id)
        occurrences = [single_occurrence(event)] if _within(event["starts_at"], start, end) else []
        return recurrence_pb2.ListOccurrencesResponse(occurrences=occurrences)
