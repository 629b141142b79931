"""gRPC entrypoint of the ticketing service."""

from typing import Any

import asyncpg
from grpc.aio import ServicerContext as Context

from localplus.ticketing.v1 import ticketing_pb2, ticketing_pb2_grpc
from localplus_common.access import EDITOR, require_rank, signed_in, visible_event
from localplus_common.db import Connection, Database
from localplus_common.errors import invalid_argument
from localplus_common.requests import parse_uuid, set_timestamp, timestamp_or_none


def ticket_type_to_proto(row: asyncpg.Record) -> ticketing_pb2.TicketType:
    ticket_type = ticketing_pb2.TicketType(
        id=str(row["id"]),
        event_id=str(row["event_id"]),
        name=row["name"],
        description=row["description"],
        price_minor=row["price_minor"],
        currency=row["currency"],
        inventory=row["inventory"],
        min_per_order=row["min_per_order"],
        max_per_order=row["max_per_order"],
        hidden=row["hidden"],
        sort_order=row["sort_order"],
        sold=row["sold"],
        available=row["inventory"] - row["sold"],
    )
    if row["occurrence_id"] is not None:
        ticket_type.occurrence_id = str(row["occurrence_id"])
    set_timestamp(ticket_type, "sales_starts_at", row["sales_starts_at"])
    set_timestamp(ticket_type, "sales_ends_at", row["sales_ends_at"])
    return ticket_type


class TicketingService(ticketing_pb2_grpc.TicketingServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ListTicketTypes(self, request: ticketing_pb2.ListTicketTypesRequest, context: Context) -> Any:
        event_id = parse_uuid("event_id", request.event_id)

        async def list_them(conn: Connection) -> list[asyncpg.Record]:
            await visible_event(conn, event_id)
            return await conn.fetch(
                "select * from public.ticket_types where event_id = $1 order by sort_order, created_at, id",
                event_id,
            )

        rows = await self.db.run(list_them, event_id=event_id)
        return ticketing_pb2.ListTicketTypesResponse(ticket_types=[ticket_type_to_proto(row) for row in rows])

    async def CreateTicketType(self, request: ticketing_pb2.CreateTicketTypeRequest, context: Context) -> Any:
        signed_in()
        event_id = parse_uuid("event_id", request.event_id)
        wanted = request.ticket_type
        if not wanted.name.strip():
            raise invalid_argument("ticket_type.name", "name is required")
        if len(wanted.currency) != 3 or not wanted.currency.isupper():
            raise invalid_argument("ticket_type.currency", "currency must be an ISO 4217 code such as THB")
        occurrence_id = parse_uuid("ticket_type.occurrence_id", wanted.occurrence_id) if wanted.occurrence_id else None
        min_per_order = wanted.min_per_order or 1
        max_per_order = wanted.max_per_order or max(10, min_per_order)

        async def create(conn: Connection) -> asyncpg.Record:
            require_rank(await visible_event(conn, event_id), EDITOR, "add ticket types to")
            row = await conn.fetchrow(
                """
                insert into public.ticket_types (event_id, occurrence_id, name, description, price_minor,
                  currency, inventory, min_per_order, max_per_order, sales_starts_at, sales_ends_at,
                  hidden, sort_order)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                returning *
                """,
                event_id,
                occurrence_id,
                wanted.name,
                wanted.description,
                wanted.price_minor,
                wanted.currency,
                wanted.inventory,
                min_per_order,
                max_per_order,
                timestamp_or_none(wanted, "sales_starts_at"),
                timestamp_or_none(wanted, "sales_ends_at"),
                wanted.hidden,
                wanted.sort_order,
            )
            assert row is not None
            return row

        return ticket_type_to_proto(await self.db.run(create, event_id=event_id))
