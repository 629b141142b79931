"""Translation between the ticketing protos and what the use cases take and return."""

import json
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import asyncpg

from localplus.ticketing.v1 import ticketing_pb2
from localplus_common.errors import invalid_argument
from localplus_common.requests import parse_uuid, set_timestamp, timestamp_or_none
from localplus_ticketing.check_ins import ADMITTED, ALREADY_CHECKED_IN, INVALID, CheckIn, CheckInList, OfflineScan
from localplus_ticketing.orders import NewOrder, NewSeatOrder, OrderView
from localplus_ticketing.sales import EventSales
from localplus_ticketing.seating import PlanInput, PlanView, seat_label
from localplus_ticketing.ticket_types import EDITABLE_FIELDS, NewTicketType

ORDER_STATUS_PREFIX = "ORDER_STATUS_"
TICKET_STATUS_PREFIX = "TICKET_STATUS_"


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
        seat_category=ticket_type.seat_category if ticket_type.HasField("seat_category") else None,
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
        available=row["available"],
    )
    if row["occurrence_id"] is not None:
        ticket_type.occurrence_id = str(row["occurrence_id"])
    if row["seat_category"] is not None:
        ticket_type.seat_category = row["seat_category"]
    set_timestamp(ticket_type, "sales_starts_at", row["sales_starts_at"])
    set_timestamp(ticket_type, "sales_ends_at", row["sales_ends_at"])
    return ticket_type


def new_order(order: ticketing_pb2.Order) -> NewOrder:
    return NewOrder(
        request_id=order.request_id,
        items=tuple(
            (parse_uuid(f"order.items[{index}].ticket_type_id", item.ticket_type_id), item.quantity)
            for index, item in enumerate(order.items)
        ),
    )


def is_seat_order(order: ticketing_pb2.Order) -> bool:
    return bool(order.seats) or order.HasField("best_available")


def new_seat_order(order: ticketing_pb2.Order) -> NewSeatOrder:
    if order.items:
        raise invalid_argument("order.items", "an order holds items, or seats, not both")
    best = order.best_available if order.HasField("best_available") else None
    occurrence_id = order.seats_occurrence_id
    return NewSeatOrder(
        request_id=order.request_id,
        seat_ids=tuple(parse_uuid(f"order.seats[{i}].seat_id", seat.seat_id) for i, seat in enumerate(order.seats)),
        best_available=None
        if best is None
        else (parse_uuid("order.best_available.ticket_type_id", best.ticket_type_id), best.quantity),
        occurrence_id=parse_uuid("order.seats_occurrence_id", occurrence_id) if occurrence_id else None,
    )


def checkout_session(request: ticketing_pb2.CheckoutOrderRequest) -> tuple[str, str] | None:
    """(success_url, cancel_url) for a Checkout Session; None for a PaymentIntent."""
    if request.mode != ticketing_pb2.CHECKOUT_MODE_CHECKOUT_SESSION:
        if request.mode not in (ticketing_pb2.CHECKOUT_MODE_UNSPECIFIED, ticketing_pb2.CHECKOUT_MODE_PAYMENT_INTENT):
            raise invalid_argument(
                "mode", "mode must be CHECKOUT_MODE_PAYMENT_INTENT or CHECKOUT_MODE_CHECKOUT_SESSION"
            )
        return None
    for field in ("success_url", "cancel_url"):
        url: str = getattr(request, field)
        if not url.startswith(("https://", "http://")) or len(url) > 2000:
            raise invalid_argument(field, f"{field} must be an http(s) URL for a Checkout Session")
    return request.success_url, request.cancel_url


def order_to_proto(view: OrderView) -> ticketing_pb2.Order:
    order: dict[str, Any] = view.order
    message = ticketing_pb2.Order(
        id=str(order["id"]),
        event_id=str(order["event_id"]),
        buyer_id=str(order["buyer_id"] or ""),
        items=[
            ticketing_pb2.OrderItem(
                ticket_type_id=str(item["ticket_type_id"]),
                quantity=item["quantity"],
                unit_price_minor=item["unit_price_minor"],
            )
            for item in view.items
        ],
        status=ORDER_STATUS_PREFIX + order["status"].upper(),
        total_minor=order["total_minor"],
        currency=order["currency"],
        request_id=order["request_id"],
        confirmation_code=order["confirmation_code"] or "",
        payment_intent_id=order["payment_intent_id"] or "",
        client_secret=order.get("client_secret") or "",
        checkout_url=order.get("checkout_url") or "",
        refunded_minor=order["refunded_minor"],
    )
    if order["occurrence_id"] is not None:
        message.occurrence_id = str(order["occurrence_id"])
    message.seats.extend(
        ticketing_pb2.OrderSeat(
            seat_id=str(seat["seat_id"]),
            zone=seat["zone"],
            row=seat["row_name"],
            number=seat["number"],
            label=seat_label(seat["row_name"], seat["number"]),
            category=seat["category"],
            ticket_type_id=str(seat["ticket_type_id"]),
        )
        for seat in view.seats
    )
    for field in ("expires_at", "created_at", "paid_at"):
        set_timestamp(message, field, order[field])
    return message


def ticket_to_proto(row: asyncpg.Record) -> ticketing_pb2.Ticket:
    ticket = ticketing_pb2.Ticket(
        id=str(row["id"]),
        order_id=str(row["order_id"]),
        event_id=str(row["event_id"]),
        ticket_type_id=str(row["ticket_type_id"]),
        holder_id=str(row["holder_id"] or ""),
        code=row["code"],
        status=TICKET_STATUS_PREFIX + row["status"].upper(),
    )
    if row["occurrence_id"] is not None:
        ticket.occurrence_id = str(row["occurrence_id"])
    if row["seat_number"] is not None:
        ticket.seat.CopyFrom(ticket_seat(row))
    set_timestamp(ticket, "checked_in_at", row["checked_in_at"])
    return ticket


def ticket_seat(row: asyncpg.Record) -> ticketing_pb2.TicketSeat:
    """The seat a ticket row names (its seat_* columns)."""
    return ticketing_pb2.TicketSeat(
        zone=row["seat_zone"],
        row=row["seat_row"],
        number=row["seat_number"],
        label=seat_label(row["seat_row"], row["seat_number"]),
    )


def ticket_type_changes(request: ticketing_pb2.UpdateTicketTypeRequest) -> dict[str, Any]:
    """The fields to change and their new values: the mask's, or every populated one (AIP-134)."""
    wanted = request.ticket_type
    if request.HasField("update_mask") and request.update_mask.paths:
        names = list(request.update_mask.paths)
        if "*" in names:
            names = list(EDITABLE_FIELDS)
    else:
        names = [field.name for field, _ in wanted.ListFields() if field.name in EDITABLE_FIELDS]
    changes: dict[str, Any] = {}
    for name in names:
        if name not in EDITABLE_FIELDS:
            raise invalid_argument("update_mask", f"update_mask names {name[:64]!r}, which cannot be changed")
        if name in ("sales_starts_at", "sales_ends_at"):
            changes[name] = timestamp_or_none(wanted, name, f"ticket_type.{name}")
        elif name == "occurrence_id":
            changes[name] = (
                parse_uuid("ticket_type.occurrence_id", wanted.occurrence_id) if wanted.occurrence_id else None
            )
        elif name == "seat_category":
            changes[name] = wanted.seat_category if wanted.HasField("seat_category") else None
        else:
            changes[name] = getattr(wanted, name)
    return changes


# Check-in

CHECK_IN_RESULTS = {
    ADMITTED: ticketing_pb2.CHECK_IN_RESULT_ADMITTED,
    ALREADY_CHECKED_IN: ticketing_pb2.CHECK_IN_RESULT_ALREADY_CHECKED_IN,
    INVALID: ticketing_pb2.CHECK_IN_RESULT_INVALID,
}
# Envoy's transcoder passes the path a JSON client asked for as this header (gRPC metadata).
ORIGINAL_PATH = "x-envoy-original-path"


def qr_kind(metadata: Iterable[tuple[str, Any]]) -> str:
    """The QR image format the request asked for: png for `/api/tickets/{id}/qr.png`, else svg (also for
    native gRPC callers, who have no path to ask with)."""
    path = next((str(value) for key, value in metadata if key == ORIGINAL_PATH), "")
    return "png" if path.partition("?")[0].endswith("/qr.png") else "svg"


def offline_scans(request: ticketing_pb2.BatchCreateCheckInsRequest) -> list[OfflineScan]:
    scans = []
    for index, scan in enumerate(request.check_ins):
        field = f"check_ins[{index}].scanned_at"
        scanned_at = timestamp_or_none(scan, "scanned_at", field)
        if scanned_at is None:
            raise invalid_argument(field, f"{field} is required")
        scans.append(OfflineScan(scan.code, scanned_at, scan.device_id))
    return scans


def check_in_to_proto(check_in: CheckIn) -> ticketing_pb2.CreateCheckInResponse:
    response = ticketing_pb2.CreateCheckInResponse(result=CHECK_IN_RESULTS[check_in.result])
    if check_in.ticket is not None:
        response.ticket.CopyFrom(ticket_to_proto(check_in.ticket))
    set_timestamp(response, "first_checked_in_at", check_in.first_checked_in_at)
    return response


def check_in_list_to_proto(listed: CheckInList) -> ticketing_pb2.CheckInList:
    message = ticketing_pb2.CheckInList(
        event_id=str(listed.event_id),
        public_key=listed.public_key,
        tickets=[
            ticketing_pb2.CheckInListEntry(
                ticket_id=str(row["id"]),
                status=TICKET_STATUS_PREFIX + row["status"].upper(),
                ticket_type_id=str(row["ticket_type_id"]),
            )
            for row in listed.tickets.items
        ],
        next_page_token=listed.tickets.next_page_token,
    )
    for entry, row in zip(message.tickets, listed.tickets.items, strict=True):
        set_timestamp(entry, "checked_in_at", row["checked_in_at"])
        if row["seat_number"] is not None:
            entry.seat.CopyFrom(ticket_seat(row))
    set_timestamp(message, "generated_at", listed.generated_at)
    return message


# Sales


def event_sales_to_proto(sales: EventSales) -> ticketing_pb2.EventSales:
    message = ticketing_pb2.EventSales(
        event_id=str(sales.event_id),
        currency=sales.currency,
        gross_minor=sales.gross_minor,
        refunded_minor=sales.refunded_minor,
        net_minor=sales.gross_minor - sales.refunded_minor,
        tickets_sold=sales.total("sold"),
        tickets_available=sales.total("available"),
        tickets_held=sales.total("held"),
        tickets_blocked=sales.total("blocked"),
        checked_in=sales.total("checked_in"),
        orders_created=sales.orders_created,
        orders_paid=sales.orders_paid,
        ticket_types=[
            ticketing_pb2.TicketTypeSales(
                ticket_type_id=str(row["id"]),
                name=row["name"],
                price_minor=row["price_minor"],
                sold=row["sold"],
                refunded=row["refunded"],
                held=row["held"],
                blocked=row["blocked"],
                available=row["available"],
                gross_minor=row["gross_minor"],
                refunded_minor=row["refunded_minor"],
                net_minor=row["gross_minor"] - row["refunded_minor"],
                checked_in=row["checked_in"],
            )
            for row in sales.ticket_types
        ],
        days=[
            ticketing_pb2.DailySales(
                date=row["day"].isoformat(),
                orders=row["orders"],
                tickets=row["tickets"],
                gross_minor=row["gross_minor"],
                refunded_minor=row["refunded_minor"],
                net_minor=row["gross_minor"] - row["refunded_minor"],
            )
            for row in sales.days
        ],
    )
    if sales.conversion_rate is not None:
        message.conversion_rate = sales.conversion_rate
    return message


# Seating


def plan_input(plan: ticketing_pb2.SeatingPlan, fields: Iterable[str] | None = None) -> PlanInput:
    """The plan's `fields` (every one when None) as the use cases take them."""
    wanted = set(fields) if fields is not None else {"name", "zones", "general_admission"}
    zones = [
        {
            "name": zone.name,
            "rows": [
                {
                    "name": row.name,
                    "seats": [
                        {
                            "number": seat.number,
                            "x": seat.x,
                            "y": seat.y,
                            "category": seat.category,
                            "accessible": seat.accessible,
                        }
                        for seat in row.seats
                    ],
                }
                for row in zone.rows
            ],
        }
        for zone in plan.zones
    ]
    areas = [{"name": a.name, "category": a.category, "capacity": a.capacity} for a in plan.general_admission]
    return PlanInput(
        name=plan.name if "name" in wanted else None,
        zones=zones if "zones" in wanted else None,
        general_admission=areas if "general_admission" in wanted else None,
    )


PLAN_FIELDS = ("name", "zones", "general_admission")


def plan_changes(request: ticketing_pb2.UpdateSeatingPlanRequest) -> PlanInput:
    """The fields to change: the mask's, or every one present in the body (AIP-134)."""
    if request.HasField("update_mask") and request.update_mask.paths:
        names = list(request.update_mask.paths)
        if "*" in names:
            names = list(PLAN_FIELDS)
    else:
        names = [field.name for field, _ in request.seating_plan.ListFields() if field.name in PLAN_FIELDS]
    for name in names:
        if name not in PLAN_FIELDS:
            raise invalid_argument("update_mask", f"update_mask names {name[:64]!r}, which cannot be changed")
    return plan_input(request.seating_plan, names)


def plan_to_proto(row: asyncpg.Record, seats: list[asyncpg.Record] | None = None) -> ticketing_pb2.SeatingPlan:
    plan = ticketing_pb2.SeatingPlan(id=str(row["id"]), venue_id=str(row["venue_id"]), name=row["name"])
    for area in json.loads(row["general_admission"]):
        plan.general_admission.add(name=area["name"], category=area["category"], capacity=area["capacity"])
    zones: dict[str, ticketing_pb2.SeatingZone] = {}
    rows: dict[tuple[str, str], ticketing_pb2.SeatingRow] = {}
    for seat in seats or []:
        zone = zones.get(seat["zone"])
        if zone is None:
            zone = zones[seat["zone"]] = plan.zones.add(name=seat["zone"])
        key = (seat["zone"], seat["row_name"])
        row_message = rows.get(key)
        if row_message is None:
            row_message = rows[key] = zone.rows.add(name=seat["row_name"])
        row_message.seats.add(
            number=seat["number"], x=seat["x"], y=seat["y"], category=seat["category"], accessible=seat["accessible"]
        )
    set_timestamp(plan, "created_at", row["created_at"])
    set_timestamp(plan, "updated_at", row["updated_at"])
    return plan


def plan_view_to_proto(view: PlanView) -> ticketing_pb2.SeatingPlan:
    return plan_to_proto(view.plan, view.seats)


SEAT_STATUSES = {
    "available": ticketing_pb2.SEAT_STATUS_AVAILABLE,
    "held": ticketing_pb2.SEAT_STATUS_HELD,
    "sold": ticketing_pb2.SEAT_STATUS_SOLD,
    "blocked": ticketing_pb2.SEAT_STATUS_BLOCKED,
}


def seat_to_proto(row: asyncpg.Record) -> ticketing_pb2.Seat:
    return ticketing_pb2.Seat(
        id=str(row["id"]),
        zone=row["zone"],
        row=row["row_name"],
        number=row["number"],
        label=seat_label(row["row_name"], row["number"]),
        category=row["category"],
        ticket_type_id=str(row["ticket_type_id"] or ""),
        accessible=row["accessible"],
        x=row["x"],
        y=row["y"],
        status=SEAT_STATUSES[row["status"]],
    )


def seat_ids(values: Iterable[str]) -> list[UUID]:
    return [parse_uuid(f"seat_ids[{i}]", value) for i, value in enumerate(values)]
