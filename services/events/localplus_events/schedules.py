"""The recurrence service as the events service calls it: it checks a recurrence before the event is
written, and builds the event's occurrences after. The caller's token and deadline go along
(CONTRACT §1).

Consistency: the event (with its schedule) is committed here first; the occurrences are built by
the recurrence service in its own transaction. If that call fails, the event stands and the
recurrence service's horizon job builds the occurrences on its next run (it finds every event
whose occurrences were built from another version of it), so a lost call delays occurrences by at
most RECURRENCE_JOB_SECONDS and never loses a schedule.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any
from uuid import UUID

import grpc

from localplus.events.v1 import schedule_pb2
from localplus.recurrence.v1 import recurrence_pb2, recurrence_pb2_grpc
from localplus_common.calls import Forward, passed_on
from localplus_events.domain import RECURRENCE_COLUMNS

log = logging.getLogger(__name__)


class Schedules:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = recurrence_pb2_grpc.RecurrenceServiceStub(channel)

    async def validate(self, forward: Forward, event: dict[str, Any]) -> dict[str, Any]:
        """The recurrence columns of `event` (which has a rule) as they are to be stored; a 400 from
        the recurrence service for a bad one, passed on."""
        recurrence = schedule_pb2.Recurrence(rrule=event["recurrence_rrule"])
        for column, name in (("recurrence_exdates", "exdates"), ("recurrence_rdates", "rdates")):
            for moment in event[column]:
                getattr(recurrence, name).add().FromDatetime(moment)
        request = recurrence_pb2.ValidateRecurrenceRequest(timezone=event["timezone"], recurrence=recurrence)
        request.starts_at.FromDatetime(event["starts_at"])
        request.ends_at.FromDatetime(event["ends_at"])
        try:
            response = await self._stub.ValidateRecurrence(request, metadata=forward.metadata, timeout=forward.timeout)
        except grpc.aio.AioRpcError as error:
            raise passed_on(error, "recurrence") from None
        stored = response.recurrence
        values = (
            stored.rrule,
            [stamp.ToDatetime(tzinfo=UTC) for stamp in stored.exdates],
            [stamp.ToDatetime(tzinfo=UTC) for stamp in stored.rdates],
        )
        return dict(zip(RECURRENCE_COLUMNS, values, strict=True))

    async def materialize(self, forward: Forward, event_id: UUID) -> None:
        """Ask for the event's occurrences to be built; a failure is logged, the horizon job repairs it."""
        request = recurrence_pb2.MaterializeOccurrencesRequest(event_id=str(event_id))
        try:
            await self._stub.MaterializeOccurrences(request, metadata=forward.metadata, timeout=forward.timeout)
        except grpc.aio.AioRpcError as error:
            log.warning(
                "request_id=%s building the occurrences of event %s failed (%s); the horizon job will",
                forward.request_id,
                event_id,
                error.code().name,
            )
