"""Run the events service: `python -m localplus_events` (address from EVENTS_ADDR). Beside the gRPC
server run the analytics fold job (every ANALYTICS_FOLD_SECONDS it adds the page views recorded since
to the daily rollups, localplus_events.analytics) and the sponsored results' refresh and recording."""

import asyncio
import logging

import grpc

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.calls import channel_to
from localplus_common.config import Settings
from localplus_common.db import Database
from localplus_common.server import run, serve
from localplus_common.services import EVENTS, RECURRENCE
from localplus_common.sponsored import Sponsorship, slots_from_env
from localplus_events import analytics
from localplus_events.schedules import Schedules
from localplus_events.service import EventsService

log = logging.getLogger("localplus_events")
# Sponsored results: live promotions and this process's leases, refreshed and recorded in the background.
sponsorship = Sponsorship(slots_from_env())


def register(server: grpc.aio.Server, db: Database, settings: Settings) -> None:
    schedules = Schedules(channel_to(settings.addresses[RECURRENCE.name]))
    sponsorship.attach(db)
    events_pb2_grpc.add_EventsServiceServicer_to_server(EventsService(db, schedules, sponsorship), server)


async def fold_views(db: Database) -> None:
    every = analytics.fold_every().total_seconds()
    while True:
        await asyncio.sleep(every)
        try:
            await analytics.fold(db)
        except Exception:  # the next run tries again; the views wait in event_views
            log.exception("folding views into the analytics failed")


async def background(db: Database) -> None:
    await asyncio.gather(fold_views(db), sponsorship.run(db))


if __name__ == "__main__":
    service_name = events_pb2.DESCRIPTOR.services_by_name["EventsService"].full_name
    run(serve(Settings.from_env().addresses[EVENTS.name], [service_name], register, background=background))
