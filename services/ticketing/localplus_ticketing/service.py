"""gRPC entrypoint of the ticketing service: each RPC parses its request, runs one use case and
maps the result back to protos."""

from typing import Any
from uuid import UUID

from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from grpc.aio import ServicerContext as Context

from localplus.ticketing.v1 import ticketing_pb2, ticketing_pb2_grpc
from localplus_common.db import Database
from localplus_common.paging import page_request
from localplus_common.requests import parse_uuid
from localplus_ticketing import check_ins, mapping, orders, payments, sales, seating, ticket_types, tickets
from localplus_ticketing.codes import TicketSigner
from localplus_ticketing.payment_provider import PaymentProvider
from localplus_ticketing.promotions_service import PromotionRpcs
from localplus_ticketing.settings import TicketingSettings

STRIPE_SIGNATURE = "stripe-signature"


class TicketingService(PromotionRpcs, ticketing_pb2_grpc.TicketingServiceServicer):
    def __init__(self, db: Database, settings: TicketingSettings) -> None:
        self.db = db
        self.settings = settings
        self.payments = PaymentProvider(settings)
        self.signer = TicketSigner(settings.ticket_signing_key)

    # Ticket types

    async def ListTicketTypes(self, request: ticketing_pb2.ListTicketTypesRequest, context: Context) -> Any:
        page = await ticket_types.list_ticket_types(
            self.db, parse_uuid("event_id", request.event_id), page_request(request)
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

    async def UpdateTicketType(self, request: ticketing_pb2.UpdateTicketTypeRequest, context: Context) -> Any:
        ticket_type_id = parse_uuid("ticket_type.id", request.ticket_type.id)
        row = await ticket_types.update_ticket_type(self.db, ticket_type_id, mapping.ticket_type_changes(request))
        return mapping.ticket_type_to_proto(row)

    async def DeleteTicketType(self, request: ticketing_pb2.DeleteTicketTypeRequest, context: Context) -> Any:
        await ticket_types.delete_ticket_type(self.db, parse_uuid("id", request.id))
        return empty_pb2.Empty()

    # Orders

    async def CreateOrder(self, request: ticketing_pb2.CreateOrderRequest, context: Context) -> Any:
        if mapping.is_seat_order(request.order):
            view = await orders.create_seat_order(self.db, mapping.new_seat_order(request.order), self.settings.hold)
        else:
            view = await orders.create_order(self.db, mapping.new_order(request.order), self.settings.hold)
        return mapping.order_to_proto(view)

    async def GetOrder(self, request: ticketing_pb2.GetOrderRequest, context: Context) -> Any:
        return mapping.order_to_proto(await orders.get_order(self.db, parse_uuid("id", request.id)))

    async def ListMyOrders(self, request: ticketing_pb2.ListMyOrdersRequest, context: Context) -> Any:
        page = await orders.list_my_orders(self.db, page_request(request))
        return ticketing_pb2.ListMyOrdersResponse(
            orders=[mapping.order_to_proto(view) for view in page.items], next_page_token=page.next_page_token
        )

    async def CheckoutOrder(self, request: ticketing_pb2.CheckoutOrderRequest, context: Context) -> Any:
        view = await orders.checkout_order(
            self.db, self.payments, self.signer, parse_uuid("id", request.id), mapping.checkout_session(request)
        )
        return ticketing_pb2.CheckoutOrderResponse(order=mapping.order_to_proto(view))

    async def CancelOrder(self, request: ticketing_pb2.CancelOrderRequest, context: Context) -> Any:
        view = await orders.cancel_order(self.db, self.payments, parse_uuid("id", request.id))
        return ticketing_pb2.CancelOrderResponse(order=mapping.order_to_proto(view))

    async def RefundOrder(self, request: ticketing_pb2.RefundOrderRequest, context: Context) -> Any:
        ticket_ids = [parse_uuid(f"ticket_ids[{i}]", value) for i, value in enumerate(request.ticket_ids)]
        refunded = await orders.refund_order(self.db, parse_uuid("id", request.id), ticket_ids, request.reason)
        if refunded.refund_id is not None:
            await payments.settle_refund(self.db, self.payments, refunded.refund_id)
        return ticketing_pb2.RefundOrderResponse(
            order=mapping.order_to_proto(refunded.view), tickets=[mapping.ticket_to_proto(t) for t in refunded.tickets]
        )

    # Tickets

    async def ListMyTickets(self, request: ticketing_pb2.ListMyTicketsRequest, context: Context) -> Any:
        page = await tickets.list_my_tickets(self.db, page_request(request))
        return ticketing_pb2.ListMyTicketsResponse(
            tickets=[mapping.ticket_to_proto(row) for row in page.items], next_page_token=page.next_page_token
        )

    async def GetTicket(self, request: ticketing_pb2.GetTicketRequest, context: Context) -> Any:
        return mapping.ticket_to_proto(await tickets.get_ticket(self.db, parse_uuid("id", request.id)))

    # E-tickets and check-in

    async def GetTicketQrCode(self, request: ticketing_pb2.GetTicketQrCodeRequest, context: Context) -> Any:
        kind = mapping.qr_kind(context.invocation_metadata() or ())
        content_type, image = await tickets.ticket_qr_code(self.db, parse_uuid("id", request.id), kind)
        return httpbody_pb2.HttpBody(content_type=content_type, data=image)

    async def CreateCheckIn(self, request: ticketing_pb2.CreateCheckInRequest, context: Context) -> Any:
        event_id = parse_uuid("event_id", request.event_id)
        return mapping.check_in_to_proto(await check_ins.check_in(self.db, self.signer, event_id, request.code))

    async def BatchCreateCheckIns(self, request: ticketing_pb2.BatchCreateCheckInsRequest, context: Context) -> Any:
        event_id = parse_uuid("event_id", request.event_id)
        answers = await check_ins.upload_scans(self.db, self.signer, event_id, mapping.offline_scans(request))
        return ticketing_pb2.BatchCreateCheckInsResponse(results=[mapping.check_in_to_proto(a) for a in answers])

    async def GetCheckInList(self, request: ticketing_pb2.GetCheckInListRequest, context: Context) -> Any:
        event_id = parse_uuid("event_id", request.event_id)
        page = page_request(request, max_size=check_ins.MAX_LIST_PAGE, default_size=check_ins.MAX_LIST_PAGE)
        listed = await check_ins.check_in_list(self.db, self.signer, event_id, page)
        return mapping.check_in_list_to_proto(listed)

    # Sales

    async def GetEventSales(self, request: ticketing_pb2.GetEventSalesRequest, context: Context) -> Any:
        figures = await sales.event_sales(self.db, parse_uuid("event_id", request.event_id))
        return mapping.event_sales_to_proto(figures)

    # Stripe

    async def HandleStripeWebhook(self, request: ticketing_pb2.HandleStripeWebhookRequest, context: Context) -> Any:
        signature = next((str(v) for k, v in context.invocation_metadata() or () if k == STRIPE_SIGNATURE), "")
        await payments.handle_webhook(self.db, self.payments, self.signer, request.payload.data, signature)
        return empty_pb2.Empty()

    # Seating

    async def ListSeatingPlans(self, request: ticketing_pb2.ListSeatingPlansRequest, context: Context) -> Any:
        page = await seating.list_plans(self.db, parse_uuid("venue_id", request.venue_id), page_request(request))
        return ticketing_pb2.ListSeatingPlansResponse(
            seating_plans=[mapping.plan_to_proto(row) for row in page.items], next_page_token=page.next_page_token
        )

    async def CreateSeatingPlan(self, request: ticketing_pb2.CreateSeatingPlanRequest, context: Context) -> Any:
        venue_id = parse_uuid("venue_id", request.venue_id)
        view = await seating.create_plan(self.db, venue_id, mapping.plan_input(request.seating_plan))
        return mapping.plan_view_to_proto(view)

    async def GetSeatingPlan(self, request: ticketing_pb2.GetSeatingPlanRequest, context: Context) -> Any:
        return mapping.plan_view_to_proto(await seating.get_plan(self.db, parse_uuid("id", request.id)))

    async def UpdateSeatingPlan(self, request: ticketing_pb2.UpdateSeatingPlanRequest, context: Context) -> Any:
        plan_id = parse_uuid("seating_plan.id", request.seating_plan.id)
        view = await seating.update_plan(self.db, plan_id, mapping.plan_changes(request))
        return mapping.plan_view_to_proto(view)

    async def ListSeats(self, request: ticketing_pb2.ListSeatsRequest, context: Context) -> Any:
        event_id, occurrence_id = _seats_of(request.event_id, request.occurrence_id)
        rows = await seating.list_seats(self.db, event_id, occurrence_id)
        return ticketing_pb2.ListSeatsResponse(seats=[mapping.seat_to_proto(row) for row in rows])

    async def GetSeatMap(self, request: ticketing_pb2.GetSeatMapRequest, context: Context) -> Any:
        event_id, occurrence_id = _seats_of(request.event_id, request.occurrence_id)
        image = await seating.seat_map(self.db, event_id, occurrence_id)
        return httpbody_pb2.HttpBody(content_type="image/svg+xml", data=image)

    async def BlockSeats(self, request: ticketing_pb2.BlockSeatsRequest, context: Context) -> Any:
        event_id, occurrence_id = _seats_of(request.event_id, request.occurrence_id)
        ids = mapping.seat_ids(request.seat_ids)
        rows = await seating.block_seats(self.db, event_id, ids, occurrence_id, block=True)
        return ticketing_pb2.BlockSeatsResponse(seats=[mapping.seat_to_proto(row) for row in rows])

    async def UnblockSeats(self, request: ticketing_pb2.UnblockSeatsRequest, context: Context) -> Any:
        event_id, occurrence_id = _seats_of(request.event_id, request.occurrence_id)
        ids = mapping.seat_ids(request.seat_ids)
        rows = await seating.block_seats(self.db, event_id, ids, occurrence_id, block=False)
        return ticketing_pb2.UnblockSeatsResponse(seats=[mapping.seat_to_proto(row) for row in rows])


def _seats_of(event_id: str, occurrence_id: str) -> tuple[UUID, UUID | None]:
    return parse_uuid("event_id", event_id), parse_uuid("occurrence_id", occurrence_id) if occurrence_id else None
