"""The events service as this service calls it (CONTRACT §1: the caller's token and deadline go along,
and the events service's errors come back as they are)."""

from __future__ import annotations

from uuid import UUID

import grpc
from google.protobuf import field_mask_pb2

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.calls import Forward, passed_on
from localplus_recurrence.mapping import recurrence_to_proto
from localplus_recurrence.occurrences import Split
from localplus_recurrence.rules import Recurrence


class EventsClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = events_pb2_grpc.EventsServiceStub(channel)

    async def split_event(self, forward: Forward, split: Split) -> UUID:
        request = events_pb2.SplitEventRequest(
            id=str(split.event_id),
            recurrence_before=recurrence_to_proto(split.before),
            recurrence_after=recurrence_to_proto(split.after),
            etag=split.etag,
        )
        request.split_at.FromDatetime(split.split_at)
        request.starts_at.FromDatetime(split.starts_at)
        request.ends_at.FromDatetime(split.ends_at)
        if split.capacity is not None:
            request.capacity = split.capacity
        try:
            response = await self._stub.SplitEvent(request, metadata=forward.metadata, timeout=forward.timeout)
        except grpc.aio.AioRpcError as error:
            raise passed_on(error, "events") from None
        return UUID(response.new_event.id)

    async def end_series(self, forward: Forward, event_id: UUID, recurrence: Recurrence, etag: str) -> None:
        request = events_pb2.UpdateEventRequest(
            event=events_pb2.Event(id=str(event_id), recurrence=recurrence_to_proto(recurrence), etag=etag),
            update_mask=field_mask_pb2.FieldMask(paths=["recurrence"]),
        )
        try:
            await self._stub.UpdateEvent(request, metadata=forward.metadata, timeout=forward.timeout)
        except grpc.aio.AioRpcError as error:
            raise passed_on(error, "events") from None

    async def cancel_event(self, forward: Forward, event_id: UUID, etag: str) -> None:
        request = events_pb2.CancelEventRequest(id=str(event_id), etag=etag)
        try:
            await self._stub.CancelEvent(request, metadata=forward.metadata, timeout=forward.timeout)
        except grpc.aio.AioRpcError as error:
            raise passed_on(error, "events") from None
