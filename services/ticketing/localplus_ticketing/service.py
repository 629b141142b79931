"""gRPC entrypoint of the ticketing service: each RPC parses its request, runs one use case and
maps the result back to protos."""

from typing import Any

from grpc.aio import ServicerContext as Context

from localplus.ticketing.v1 import ticketing_pb2, ticketing_pb2_grpc
from localplus_common.db import Database
from localplus_common.paging import page_request
from localplus_common.requests import parse_uuid
from localplus_ticketing import mapping, ticket_types


class TicketingService(ticketing_pb2_grpc.TicketingServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ListTicketTypes(self, request: ticketing_pb2.ListTicketTypesRequest, context: Context) -> Any:
        page = await ticket_types.list_ticket_types(
            self.db, parse_uuid("event_id", request.event_id), page_request(request.page_size, request.page_token)
        )
        return ticketing_pb2.ListTicketTypesResponse(
            ticket_types=[mapping.ticket_type_to_proto(row) for row in page.items],
            next_page_token=page.next_page_token,
        )

    async def CreateTicketType(self, request: ticketing_pb2.CreateTicketTypeRequest, context: Context) -> Any:
        row = await ticket_types.create_ticket_type(
            self.db, parse_uuid("event_id", request.event_id), mapping.new_ticket_type(request.ticket_type)
        )
        return mapping.ticket_type_to_proto(row)
