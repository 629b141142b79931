"""Translation between the recurrence protos and database rows."""

import asyncpg

from localplus.recurrence.v1 import recurrence_pb2
from localplus_common.requests import set_timestamp

STATUSES = {
    "scheduled": recurrence_pb2.OCCURRENCE_STATUS_SCHEDULED,
    "cancelled": recurrence_pb2.OCCURRENCE_STATUS_CANCELLED,
}


def occurrence_to_proto(row: asyncpg.Record) -> recurrence_pb2.Occurrence:
    occurrence = recurrence_pb2.Occurrence(
        id=str(row["id"]), event_id=str(row["event_id"]), status=STATUSES[row["status"]], note=row["note"]
    )
    for field in ("starts_at", "ends_at", "original_starts_at"):
        set_timestamp(occurrence, field, row[field])
    if row["capacity"] is not None:
        occurrence.capacity = row["capacity"]
    return occurrence
