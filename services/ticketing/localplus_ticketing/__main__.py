"""Run the ticketing service: `python -m localplus_ticketing` (address from TICKETING_ADDR). Beside the
gRPC server it expires unpaid orders whose hold ran out, every ORDER_SWEEP_SECONDS."""

import asyncio
import logging

import grpc

from localplus.ticketing.v1 import ticketing_pb2, ticketing_pb2_grpc
from localplus_common.config import Settings
from localplus_common.db import Database
from localplus_common.server import run, serve
from localplus_common.services import TICKETING
from localplus_ticketing import payments, promotions
from localplus_ticketing.payment_provider import PaymentProvider
from localplus_ticketing.service import TicketingService
from localplus_ticketing.settings import TicketingSettings

log = logging.getLogger("localplus_ticketing")


def main() -> None:
    settings = Settings.from_env()
    ticketing = TicketingSettings.from_env()

    def register(server: grpc.aio.Server, db: Database, _: Settings) -> None:
        ticketing_pb2_grpc.add_TicketingServiceServicer_to_server(TicketingService(db, ticketing), server)

    sweep_payments = PaymentProvider(ticketing)

    async def sweep(db: Database) -> None:
        while True:
            await asyncio.sleep(ticketing.sweep_every.total_seconds())
            try:
                expired = await payments.expire_orders(db, sweep_payments)
            except Exception:  # the next sweep tries again
                log.exception("expiring orders failed")
                continue
            if expired:
                log.info("expired %d unpaid orders", expired)
            try:
                # Promotions past their end, refunding what is unspent (and refunds left pending).
                ended = await promotions.end_due(db, sweep_payments)
                await promotions.settle_pending_refunds(db, sweep_payments)
            except Exception:  # the next sweep tries again
                log.exception("ending promotions failed")
                continue
            if ended:
                log.info("ended %d promotions", ended)

    service_name = ticketing_pb2.DESCRIPTOR.services_by_name["TicketingService"].full_name
    run(serve(settings.addresses[TICKETING.name], [service_name], register, background=sweep))


if __name__ == "__main__":
    main()
