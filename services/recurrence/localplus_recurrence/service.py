"""gRPC entrypoint of the recurrence service: each RPC parses its request, runs one use case and
maps the result back to protos."""

from typing import Any

from grpc.aio import ServicerContext as Context

from localplus.recurrence.v1 import recurrence_pb2, recurrence_pb2_grpc
from localplus_common.db import Database
from localplus_common.paging import page_request
from localplus_common.requests import parse_uuid, timestamp_or_none
from localplus_recurrence import mapping, occurrences


class RecurrenceService(recurrence_pb2_grpc.RecurrenceServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ListOccurrences(self, request: recurrence_pb2.ListOccurrencesRequest, context: Context) -> Any:
        page = await occurrences.list_occurrences(
            self.db,
            parse_uuid("event_id", request.event_id),
            timestamp_or_none(request, "start"),
            timestamp_or_none(request, "end"),
            page_request(request.page_size, request.page_token),
        )
        return recurrence_pb2.ListOccurrencesResponse(
            occurrences=[mapping.occurrence_to_proto(row) for row in page.items],
            next_page_token=page.next_page_token,
        )
