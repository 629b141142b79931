"""The promotions RPCs of the ticketing service (which holds the Stripe path): each parses its request,
runs one use case of `promotions` and maps the rows back to protos. TicketingService mixes them in."""

from typing import Any

import asyncpg
from grpc.aio import ServicerContext as Context

from localplus.ticketing.v1 import promotions_pb2
from localplus_common.db import Database, current_identity
from localplus_common.errors import invalid_argument
from localplus_common.paging import page_request
from localplus_common.requests import parse_uuid, set_timestamp, timestamp_or_none
from localplus_common.viewers import viewer_key
from localplus_ticketing import promotions
from localplus_ticketing.payment_provider import PaymentProvider
from localplus_ticketing.promotions import EDITABLE, PromotionInput

PLACEMENT = promotions_pb2.PromotionPlacement
BID = promotions_pb2.BidType


def promotion_input(message: promotions_pb2.Promotion, names: list[str]) -> PromotionInput:
    """The named fields of a Promotion message, as the use cases take them."""
    values: dict[str, Any] = {}
    for name in names:
        if name in ("starts_at", "ends_at"):
            values[name] = timestamp_or_none(message, name, f"promotion.{name}")
        elif name == "placements":
            if any(p == PLACEMENT.PROMOTION_PLACEMENT_UNSPECIFIED for p in message.placements):
                raise invalid_argument("promotion.placements", "placements cannot be unspecified")
            values[name] = [PLACEMENT.Name(p).removeprefix("PROMOTION_PLACEMENT_").lower() for p in message.placements]
        elif name == "bid_type":
            values[name] = BID.Name(message.bid_type).removeprefix("BID_TYPE_").lower() if message.bid_type else None
        elif name in ("cities", "categories"):
            values[name] = list(getattr(message, name))
        elif name == "currency":
            values[name] = message.currency or None
        else:
            values[name] = getattr(message, name) or None
    return PromotionInput(**values)


def new_promotion(request: promotions_pb2.CreatePromotionRequest) -> PromotionInput:
    created = promotion_input(request.promotion, list(EDITABLE))
    event_id = parse_uuid("promotion.event_id", request.promotion.event_id)
    return PromotionInput(**{**created.__dict__, "event_id": event_id})


def promotion_changes(request: promotions_pb2.UpdatePromotionRequest) -> PromotionInput:
    if request.HasField("update_mask") and request.update_mask.paths:
        names = list(request.update_mask.paths)
        if "*" in names:
            names = list(EDITABLE)
    else:
        names = [field.name for field, _ in request.promotion.ListFields() if field.name in EDITABLE]
    for name in names:
        if name not in EDITABLE:
            raise invalid_argument("update_mask", f"update_mask names {name[:64]!r}, which cannot be changed")
    return promotion_input(request.promotion, names)


def promotion_to_proto(row: asyncpg.Record) -> promotions_pb2.Promotion:
    message = promotions_pb2.Promotion(
        id=str(row["id"]),
        event_id=str(row["event_id"]),
        business_id=str(row["business_id"]),
        placements=[f"PROMOTION_PLACEMENT_{p.upper()}" for p in row["placements"]],
        cities=row["cities"],
        categories=row["categories"],
        budget_minor=row["budget_minor"],
        currency=row["currency"],
        bid_type=f"BID_TYPE_{row['bid_type'].upper()}",
        bid_minor=row["bid_minor"],
        spent_minor=row["spent_milli"] // 1000,
        status=f"PROMOTION_STATUS_{row['status'].upper()}",
        reject_reason=row["reject_reason"] or "",
        refunded_minor=row["refunded_minor"],
    )
    for name in ("starts_at", "ends_at", "created_at", "updated_at"):
        set_timestamp(message, name, row[name])
    return message


class PromotionRpcs:
    db: Database
    payments: PaymentProvider

    async def CreatePromotion(self, request: promotions_pb2.CreatePromotionRequest, context: Context) -> Any:
        return promotion_to_proto(await promotions.create_promotion(self.db, new_promotion(request)))

    async def GetPromotion(self, request: promotions_pb2.GetPromotionRequest, context: Context) -> Any:
        return promotion_to_proto(await promotions.get_promotion(self.db, parse_uuid("id", request.id)))

    async def UpdatePromotion(self, request: promotions_pb2.UpdatePromotionRequest, context: Context) -> Any:
        promotion_id = parse_uuid("promotion.id", request.promotion.id)
        row = await promotions.update_promotion(self.db, promotion_id, promotion_changes(request))
        return promotion_to_proto(row)

    async def ListBusinessPromotions(
        self, request: promotions_pb2.ListBusinessPromotionsRequest, context: Context
    ) -> Any:
        page = await promotions.business_promotions(
            self.db,
            parse_uuid("business_id", request.business_id),
            page_request(request),
        )
        return promotions_pb2.ListBusinessPromotionsResponse(
            promotions=[promotion_to_proto(row) for row in page.items], next_page_token=page.next_page_token
        )

    async def ListModerationPromotions(
        self, request: promotions_pb2.ListModerationPromotionsRequest, context: Context
    ) -> Any:
        page = await promotions.moderation_queue(self.db, page_request(request))
        return promotions_pb2.ListModerationPromotionsResponse(
            promotions=[promotion_to_proto(row) for row in page.items], next_page_token=page.next_page_token
        )

    async def CheckoutPromotion(self, request: promotions_pb2.CheckoutPromotionRequest, context: Context) -> Any:
        started = await promotions.checkout(self.db, self.payments, parse_uuid("id", request.id))
        return promotions_pb2.CheckoutPromotionResponse(
            promotion=promotion_to_proto(started.promotion),
            payment_intent_id=started.payment_intent_id,
            client_secret=started.client_secret,
        )

    async def CancelPromotion(self, request: promotions_pb2.CancelPromotionRequest, context: Context) -> Any:
        row = await promotions.cancel(self.db, self.payments, parse_uuid("id", request.id))
        return promotions_pb2.CancelPromotionResponse(promotion=promotion_to_proto(row))

    async def ApprovePromotion(self, request: promotions_pb2.ApprovePromotionRequest, context: Context) -> Any:
        row = await promotions.approve(self.db, parse_uuid("id", request.id))
        return promotions_pb2.ApprovePromotionResponse(promotion=promotion_to_proto(row))

    async def RejectPromotion(self, request: promotions_pb2.RejectPromotionRequest, context: Context) -> Any:
        row = await promotions.reject(self.db, self.payments, parse_uuid("id", request.id), request.reason)
        return promotions_pb2.RejectPromotionResponse(promotion=promotion_to_proto(row))

    async def ClickPromotion(self, request: promotions_pb2.ClickPromotionRequest, context: Context) -> Any:
        counted = await promotions.click(
            self.db, parse_uuid("id", request.id), viewer_key(current_identity.get(), context, by_browser=False)
        )
        return promotions_pb2.ClickPromotionResponse(counted=counted)

    async def GetPromotionStats(self, request: promotions_pb2.GetPromotionStatsRequest, context: Context) -> Any:
        figures = await promotions.stats(
            self.db,
            parse_uuid("id", request.id),
            timestamp_or_none(request, "start"),
            timestamp_or_none(request, "end"),
        )
        days = [
            promotions_pb2.PromotionDay(
                date=day["day"].isoformat(),
                impressions=day["impressions"],
                clicks=day["clicks"],
                spent_minor=day["spent_milli"] // 1000,
            )
            for day in figures.days
        ]
        impressions = sum(day.impressions for day in days)
        clicks = sum(day.clicks for day in days)
        return promotions_pb2.PromotionStats(
            promotion_id=str(figures.promotion["id"]),
            days=days,
            impressions=impressions,
            clicks=clicks,
            click_through_rate=clicks / impressions if impressions else 0.0,
            spent_minor=sum(day["spent_milli"] for day in figures.days) // 1000,
            currency=figures.promotion["currency"],
        )
