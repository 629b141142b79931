"""gRPC entrypoint of the recurrence service: each RPC parses its request, runs one use case and
maps the result back to protos."""

from __future__ import annotations

from typing import Any

from google.api import httpbody_pb2
from grpc.aio import ServicerContext as Context

from localplus.recurrence.v1 import recurrence_pb2, recurrence_pb2_grpc
from localplus_common.calls import Forward
from localplus_common.db import Database, current_identity
from localplus_common.paging import page_request
from localplus_common.requests import parse_uuid, timestamp_or_none
from localplus_common.sponsored import Sponsorship
from localplus_common.viewers import viewer_key
from localplus_recurrence import calendars, mapping, materialise, occurrences, rules
from localplus_recurrence.events_client import EventsClient
from localplus_recurrence.settings import RecurrenceSettings

# How long a client may keep a feed before asking again (with If-None-Match).
FEED_MAX_AGE_S = 60


class RecurrenceService(recurrence_pb2_grpc.RecurrenceServiceServicer):
    def __init__(
        self, db: Database, settings: RecurrenceSettings, events: EventsClient, sponsorship: Sponsorship | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.events = events
        self.sponsorship = sponsorship

    async def ListOccurrences(self, request: recurrence_pb2.ListOccurrencesRequest, context: Context) -> Any:
        page = await occurrences.list_occurrences(
            self.db,
            parse_uuid("event_id", request.event_id),
            timestamp_or_none(request, "start"),
            timestamp_or_none(request, "end"),
            page_request(request),
        )
        return mapping.list_response(page.items, page.next_page_token)

    async def UpdateOccurrence(self, request: recurrence_pb2.UpdateOccurrenceRequest, context: Context) -> Any:
        row = await occurrences.update_occurrence(
            self.db,
            self.events,
            self.settings,
            Forward.of(context),
            parse_uuid("event_id", request.event_id),
            parse_uuid("occurrence.id", request.occurrence.id),
            mapping.occurrence_changes(request),
            request.scope == recurrence_pb2.UPDATE_SCOPE_THIS_AND_FOLLOWING,
        )
        return mapping.occurrence_to_proto(row)

    async def SearchOccurrences(self, request: recurrence_pb2.SearchOccurrencesRequest, context: Context) -> Any:
        query = occurrences.OccurrenceSearch(
            request.city,
            timestamp_or_none(request, "start"),
            timestamp_or_none(request, "end"),
            page_request(request),
        )
        viewer = viewer_key(current_identity.get(), context, by_browser=False)
        page, sponsored = await occurrences.search(self.db, query, self.sponsorship, viewer)
        return recurrence_pb2.SearchOccurrencesResponse(
            occurrences=[mapping.listed_to_proto(row) for row in page.items],
            next_page_token=page.next_page_token,
            sponsored=[mapping.sponsored_to_proto(item) for item in sponsored],
        )

    async def GetEventCalendar(self, request: recurrence_pb2.GetEventCalendarRequest, context: Context) -> Any:
        return await self._feed(context, calendars.Feed(event_id=parse_uuid("event_id", request.event_id)), "ics")

    async def GetBusinessCalendar(self, request: recurrence_pb2.GetBusinessCalendarRequest, context: Context) -> Any:
        feed = calendars.Feed(business_id=parse_uuid("business_id", request.business_id))
        return await self._feed(context, feed, "ics")

    async def GetBusinessFeed(self, request: recurrence_pb2.GetBusinessFeedRequest, context: Context) -> Any:
        feed = calendars.Feed(business_id=parse_uuid("business_id", request.business_id))
        return await self._feed(context, feed, "json")

    async def GetCityCalendar(self, request: recurrence_pb2.GetCityCalendarRequest, context: Context) -> Any:
        return await self._feed(context, calendars.Feed(city=calendars.city_slug(request.slug)), "ics")

    async def GetCityFeed(self, request: recurrence_pb2.GetCityFeedRequest, context: Context) -> Any:
        return await self._feed(context, calendars.Feed(city=calendars.city_slug(request.slug)), "json")

    async def _feed(self, context: Context, feed: calendars.Feed, kind: str) -> httpbody_pb2.HttpBody:
        """A feed with its cache headers, sent as initial metadata (HTTP headers through Envoy)."""
        if_none_match = next((v for k, v in context.invocation_metadata() or () if k == "if-none-match"), None)
        document = await calendars.document(
            self.db, feed, kind, if_none_match if isinstance(if_none_match, str) else None
        )
        headers = [("etag", document.etag), ("cache-control", f"public, max-age={FEED_MAX_AGE_S}")]
        if document.last_modified is not None:
            headers.append(("last-modified", document.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT")))
        if document.not_modified:
            headers.append(("x-localplus-not-modified", "1"))
        await context.send_initial_metadata(headers)
        return mapping.http_body(document, kind)

    async def ValidateRecurrence(self, request: recurrence_pb2.ValidateRecurrenceRequest, context: Context) -> Any:
        series = rules.validate(mapping.schedule_of(request))
        recurrence = series.schedule.recurrence
        assert recurrence is not None
        normalised = rules.Recurrence(
            rules.normalise_rule(recurrence.rrule), tuple(sorted(series.exdates)), series.rdates
        )
        return recurrence_pb2.ValidateRecurrenceResponse(recurrence=mapping.recurrence_to_proto(normalised))

    async def MaterializeOccurrences(
        self, request: recurrence_pb2.MaterializeOccurrencesRequest, context: Context
    ) -> Any:
        built = await materialise.materialize(self.db, self.settings, parse_uuid("event_id", request.event_id))
        response = recurrence_pb2.MaterializeOccurrencesResponse(occurrences=built.occurrences)
        response.materialized_through.FromDatetime(built.materialized_through)
        return response
