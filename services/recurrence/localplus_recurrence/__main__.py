"""Run the recurrence service: `python -m localplus_recurrence` (address from RECURRENCE_ADDR)."""

import asyncio

import grpc

from localplus.recurrence.v1 import recurrence_pb2, recurrence_pb2_grpc
from localplus_common.config import Settings
from localplus_common.db import Database
from localplus_common.server import serve
from localplus_common.services import RECURRENCE
from localplus_recurrence.service import RecurrenceService


def register(server: grpc.aio.Server, db: Database, settings: Settings) -> None:
    recurrence_pb2_grpc.add_RecurrenceServiceServicer_to_server(RecurrenceService(db), server)


if __name__ == "__main__":
    service_name = recurrence_pb2.DESCRIPTOR.services_by_name["RecurrenceService"].full_name
    asyncio.run(serve(Settings.from_env().addresses[RECURRENCE.name], [service_name], register))
