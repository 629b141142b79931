"""Run the recurrence service: `python -m localplus_recurrence` (address from RECURRENCE_ADDR). Beside
the gRPC server runs the horizon job: at start and every RECURRENCE_JOB_SECONDS it builds the
occurrences of every event whose occurrences are missing, stale or short of the horizon."""

import asyncio
import logging
from uuid import UUID

import grpc

from localplus.recurrence.v1 import recurrence_pb2, recurrence_pb2_grpc
from localplus_common.calls import channel_to
from localplus_common.config import Settings
from localplus_common.db import Database
from localplus_common.server import run, serve
from localplus_common.services import EVENTS, RECURRENCE
from localplus_common.sponsored import Sponsorship, slots_from_env
from localplus_recurrence import materialise
from localplus_recurrence.events_client import EventsClient
from localplus_recurrence.service import RecurrenceService
from localplus_recurrence.settings import RecurrenceSettings

log = logging.getLogger("localplus_recurrence")


def main() -> None:
    settings = Settings.from_env()
    recurrence = RecurrenceSettings.from_env()

    # Sponsored results beside "what's on": live promotions and this process's leases (background).
    sponsorship = Sponsorship(slots_from_env())

    def register(server: grpc.aio.Server, db: Database, _: Settings) -> None:
        events = EventsClient(channel_to(settings.addresses[EVENTS.name]))
        sponsorship.attach(db)
        service = RecurrenceService(db, recurrence, events, sponsorship)
        recurrence_pb2_grpc.add_RecurrenceServiceServicer_to_server(service, server)

    async def horizon_job(db: Database) -> None:
        unexpandable: dict[UUID, int] = {}  # warned about once, not on every pass
        while True:
            try:
                built = await materialise.repair(db, recurrence, unexpandable)
            except Exception:  # the next run tries again
                log.exception("the horizon job failed")
            else:
                if built:
                    log.info("built the occurrences of %d events", built)
            await asyncio.sleep(recurrence.job_every.total_seconds())

    service_name = recurrence_pb2.DESCRIPTOR.services_by_name["RecurrenceService"].full_name

    async def background(db: Database) -> None:
        await asyncio.gather(horizon_job(db), sponsorship.run(db))

    run(serve(settings.addresses[RECURRENCE.name], [service_name], register, background=background))


if __name__ == "__main__":
    main()
