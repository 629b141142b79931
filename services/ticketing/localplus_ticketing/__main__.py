"""Run the ticketing service: `python -m localplus_ticketing` (address from TICKETING_ADDR)."""

import asyncio

import grpc

from localplus.ticketing.v1 import ticketing_pb2, ticketing_pb2_grpc
from localplus_common.config import Settings
from localplus_common.db import Database
from localplus_common.server import serve
from localplus_common.services import TICKETING
from localplus_ticketing.service import TicketingService


def register(server: grpc.aio.Server, db: Database, settings: Settings) -> None:
    ticketing_pb2_grpc.add_TicketingServiceServicer_to_server(TicketingService(db), server)


if __name__ == "__main__":
    service_name = ticketing_pb2.DESCRIPTOR.services_by_name["TicketingService"].full_name
    asyncio.run(serve(Settings.from_env().addresses[TICKETING.name], [service_name], register))
