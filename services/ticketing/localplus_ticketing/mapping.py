"""Translation between the ticketing protos and database rows."""

import asyncpg

from localplus.ticketing.v1 import ticketing_pb2
from localplus_common.requests import parse_uuid, set_timestamp, timestamp_or_none
from localplus_ticketing.ticket_types import NewTicketType


def new_ticket_type(ticket_type: ticketing_pb2.TicketType) -> NewTicketType:
    """What a client may set on create; output-only fields and the id are ignored (AIP-203)."""
    occurrence_id = ticket_type.occurrence_id
    return NewTicketType(
        name=ticket_type.name,
        description=ticket_type.description,
        price_minor=ticket_type.price_minor,
        currency=ticket_type.currency,
        inventory=ticket_type.inventory,
        # proto3 sends 0 for a field left out: the default applies.
        min_per_order=ticket_type.min_per_order or None,
        max_per_order=ticket_type.max_per_order or None,
        sales_starts_at=timestamp_or_none(ticket_type, "sales_starts_at", "ticket_type.sales_starts_at"),
        sales_ends_at=timestamp_or_none(ticket_type, "sales_ends_at", "ticket_type.sales_ends_at"),
        hidden=ticket_type.hidden,
        sort_order=ticket_type.sort_order,
        occurrence_id=parse_uuid("ticket_type.occurrence_id", occurrence_id) if occurrence_id else None,
    )


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
