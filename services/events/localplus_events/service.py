"""gRPC entrypoint of the events service. Each RPC parses its request into typed values (with
`mapping`), runs one use case (events, participants, permissions, moderation, discovery, stats, analytics),
which opens the request transaction, and maps the result back to a message."""

from dataclasses import replace

from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from grpc.aio import ServicerContext as Context

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.calls import Forward
from localplus_common.db import Database, current_identity
from localplus_common.requests import etag_condition, optional_uuid, parse_uuid, timestamp_or_none
from localplus_common.sponsored import Sponsorship
from localplus_common.viewers import viewer_key
from localplus_events import (
    analytics,
    discovery,
    events,
    imports,
    mapping,
    moderation,
    notifications,
    participants,
    permissions,
    places,
    stats,
)
from localplus_events.events import SchedulesPort


class EventsService(events_pb2_grpc.EventsServiceServicer):
    def __init__(self, db: Database, schedules: SchedulesPort, sponsorship: Sponsorship | None = None) -> None:
        self.db = db
        self.schedules = schedules
        self.sponsorship = sponsorship

    # Events

    async def ListEvents(
        self, request: events_pb2.ListEventsRequest, context: Context
    ) -> events_pb2.ListEventsResponse:
        viewer = viewer_key(current_identity.get(), context, by_browser=False)
        page, sponsored = await discovery.search_with_sponsored(
            self.db, mapping.search_query(request), self.sponsorship, viewer
        )
        return mapping.list_events_response(page, sponsored)

    async def GetEvent(self, request: events_pb2.GetEventRequest, context: Context) -> events_pb2.Event:
        return mapping.event_to_proto(await events.get_event(self.db, parse_uuid("id", request.id)))

    async def CreateEvent(self, request: events_pb2.CreateEventRequest, context: Context) -> events_pb2.Event:
        row = await events.create_event(self.db, self.schedules, Forward.of(context), mapping.new_event(request))
        return mapping.event_to_proto(row)

    async def UpdateEvent(self, request: events_pb2.UpdateEventRequest, context: Context) -> events_pb2.Event:
        event_id = parse_uuid("event.id", request.event.id)
        changes = mapping.event_changes(request)
        etag = etag_condition(request.event.etag, context.invocation_metadata())
        row = await events.update_event(self.db, self.schedules, Forward.of(context), event_id, changes, etag)
        return mapping.event_to_proto(row)

    async def SplitEvent(
        self, request: events_pb2.SplitEventRequest, context: Context
    ) -> events_pb2.SplitEventResponse:
        split = mapping.split(request)
        split = replace(split, etag=etag_condition(split.etag, context.invocation_metadata()))
        updated, created = await events.split_event(self.db, self.schedules, Forward.of(context), split)
        return events_pb2.SplitEventResponse(
            event=mapping.event_to_proto(updated), new_event=mapping.event_to_proto(created)
        )

    async def DeleteEvent(self, request: events_pb2.DeleteEventRequest, context: Context) -> empty_pb2.Empty:
        etag = etag_condition(request.etag, context.invocation_metadata())
        await events.delete_event(self.db, parse_uuid("id", request.id), etag)
        return empty_pb2.Empty()

    # Lifecycle and moderation

    async def SubmitEvent(
        self, request: events_pb2.SubmitEventRequest, context: Context
    ) -> events_pb2.SubmitEventResponse:
        etag = etag_condition(request.etag, context.invocation_metadata())
        row = await moderation.transition(self.db, parse_uuid("id", request.id), etag, moderation.SUBMIT)
        return events_pb2.SubmitEventResponse(event=mapping.event_to_proto(row))

    async def ApproveEvent(
        self, request: events_pb2.ApproveEventRequest, context: Context
    ) -> events_pb2.ApproveEventResponse:
        etag = etag_condition(request.etag, context.invocation_metadata())
        row = await moderation.transition(self.db, parse_uuid("id", request.id), etag, moderation.APPROVE)
        return events_pb2.ApproveEventResponse(event=mapping.event_to_proto(row))

    async def RejectEvent(
        self, request: events_pb2.RejectEventRequest, context: Context
    ) -> events_pb2.RejectEventResponse:
        event_id = parse_uuid("id", request.id)
        etag = etag_condition(request.etag, context.invocation_metadata())
        row = await moderation.transition(self.db, event_id, etag, moderation.REJECT, request.reason)
        return events_pb2.RejectEventResponse(event=mapping.event_to_proto(row))

    async def CancelEvent(
        self, request: events_pb2.CancelEventRequest, context: Context
    ) -> events_pb2.CancelEventResponse:
        event_id = parse_uuid("id", request.id)
        etag = etag_condition(request.etag, context.invocation_metadata())
        row = await moderation.transition(self.db, event_id, etag, moderation.CANCEL, request.reason)
        return events_pb2.CancelEventResponse(event=mapping.event_to_proto(row))

    async def ListModerationEvents(
        self, request: events_pb2.ListModerationEventsRequest, context: Context
    ) -> events_pb2.ListModerationEventsResponse:
        page = await moderation.moderation_queue(
            self.db, mapping.queue_filter(request), mapping.page(mapping.same_category(request))
        )
        return mapping.list_moderation_events_response(page)

    async def ImportEvents(
        self, request: events_pb2.ImportEventsRequest, context: Context
    ) -> events_pb2.ImportEventsResponse:
        return mapping.import_results_response(await imports.import_items(self.db, mapping.import_items(request)))

    async def ListModerationImports(
        self, request: events_pb2.ListModerationImportsRequest, context: Context
    ) -> events_pb2.ListModerationImportsResponse:
        page = await imports.list_moderation_imports(self.db, request.source, mapping.page(request))
        return mapping.list_moderation_imports_response(page)

    async def ResolveImport(
        self, request: events_pb2.ResolveImportRequest, context: Context
    ) -> events_pb2.ResolveImportResponse:
        resolved = await imports.resolve_import(self.db, parse_uuid("id", request.id), mapping.import_decision(request))
        return events_pb2.ResolveImportResponse(scraper_import=mapping.scraper_import_to_proto(resolved))

    async def ListModerationLog(
        self, request: events_pb2.ListModerationLogRequest, context: Context
    ) -> events_pb2.ListModerationLogResponse:
        event_id = parse_uuid("event_id", request.event_id)
        return mapping.list_moderation_log_response(
            await moderation.moderation_log(self.db, event_id, mapping.page(request))
        )

    # Saves, "my events" and figures

    async def SaveEvent(self, request: events_pb2.SaveEventRequest, context: Context) -> events_pb2.SavedEvent:
        return mapping.saved_event_to_proto(await discovery.save(self.db, parse_uuid("event_id", request.event_id)))

    async def UnsaveEvent(self, request: events_pb2.UnsaveEventRequest, context: Context) -> empty_pb2.Empty:
        await discovery.unsave(self.db, parse_uuid("event_id", request.event_id))
        return empty_pb2.Empty()

    async def ListSavedEvents(
        self, request: events_pb2.ListSavedEventsRequest, context: Context
    ) -> events_pb2.ListSavedEventsResponse:
        return mapping.list_saved_events_response(await discovery.saved_events(self.db, mapping.page(request)))

    async def ListMyEvents(
        self, request: events_pb2.ListMyEventsRequest, context: Context
    ) -> events_pb2.ListMyEventsResponse:
        return mapping.list_my_events_response(await discovery.my_events(self.db, mapping.page(request)))

    async def GetEventStats(self, request: events_pb2.GetEventStatsRequest, context: Context) -> events_pb2.EventStats:
        return mapping.event_stats_to_proto(await stats.event_stats(self.db, parse_uuid("event_id", request.event_id)))

    async def GetBusinessStats(
        self, request: events_pb2.GetBusinessStatsRequest, context: Context
    ) -> events_pb2.BusinessStats:
        business_id = parse_uuid("business_id", request.business_id)
        return mapping.business_stats_to_proto(await stats.business_stats(self.db, business_id))

    # Participants

    async def ListParticipants(
        self, request: events_pb2.ListParticipantsRequest, context: Context
    ) -> events_pb2.ListParticipantsResponse:
        event_id = parse_uuid("event_id", request.event_id)
        return mapping.list_participants_response(
            await participants.list_participants(self.db, event_id, mapping.page(request))
        )

    async def GetParticipant(
        self, request: events_pb2.GetParticipantRequest, context: Context
    ) -> events_pb2.Participant:
        event_id = parse_uuid("event_id", request.event_id)
        user_id = optional_uuid("user_id", request.user_id)
        return mapping.participant_to_proto(await participants.get_participant(self.db, event_id, user_id))

    async def CreateParticipant(
        self, request: events_pb2.CreateParticipantRequest, context: Context
    ) -> events_pb2.Participant:
        event_id = parse_uuid("event_id", request.event_id)
        user_id = mapping.participant_user(request.participant)
        wanted = mapping.new_participant(request.participant)
        return mapping.participant_to_proto(await participants.create_participant(self.db, event_id, user_id, wanted))

    async def UpdateParticipant(
        self, request: events_pb2.UpdateParticipantRequest, context: Context
    ) -> events_pb2.Participant:
        event_id = parse_uuid("event_id", request.event_id)
        user_id = mapping.participant_user(request.participant)
        changes = mapping.participant_update(request)
        return mapping.participant_to_proto(await participants.update_participant(self.db, event_id, user_id, changes))

    async def DeleteParticipant(
        self, request: events_pb2.DeleteParticipantRequest, context: Context
    ) -> empty_pb2.Empty:
        event_id = parse_uuid("event_id", request.event_id)
        await participants.delete_participant(self.db, event_id, optional_uuid("user_id", request.user_id))
        return empty_pb2.Empty()

    # Permissions

    async def ListPermissions(
        self, request: events_pb2.ListPermissionsRequest, context: Context
    ) -> events_pb2.ListPermissionsResponse:
        event_id = parse_uuid("event_id", request.event_id)
        return mapping.list_permissions_response(
            await permissions.list_permissions(self.db, event_id, mapping.page(request))
        )

    async def CreatePermission(
        self, request: events_pb2.CreatePermissionRequest, context: Context
    ) -> events_pb2.Permission:
        wanted = request.permission
        row = await permissions.create_permission(
            self.db,
            parse_uuid("event_id", request.event_id),
            parse_uuid("permission.user_id", wanted.user_id),
            mapping.role_to_db(wanted.role, "permission.role"),
            timestamp_or_none(wanted, "expires_at", "permission.expires_at"),
        )
        return mapping.permission_to_proto(row)

    async def DeletePermission(self, request: events_pb2.DeletePermissionRequest, context: Context) -> empty_pb2.Empty:
        event_id = parse_uuid("event_id", request.event_id)
        await permissions.delete_permission(self.db, event_id, parse_uuid("user_id", request.user_id))
        return empty_pb2.Empty()

    # Cities and venues

    async def ListCities(
        self, request: events_pb2.ListCitiesRequest, context: Context
    ) -> events_pb2.ListCitiesResponse:
        return mapping.list_cities_response(await places.list_cities(self.db, mapping.page(request)))

    async def ListVenues(
        self, request: events_pb2.ListVenuesRequest, context: Context
    ) -> events_pb2.ListVenuesResponse:
        business_id = optional_uuid("business_id", request.business_id)
        page = await places.list_venues(self.db, request.city, business_id, mapping.page(request))
        return mapping.list_venues_response(page)

    async def CreateVenue(self, request: events_pb2.CreateVenueRequest, context: Context) -> events_pb2.Venue:
        return mapping.venue_to_proto(await places.create_venue(self.db, mapping.new_venue(request)))

    # Notifications

    async def PutPushSubscription(
        self, request: events_pb2.PutPushSubscriptionRequest, context: Context
    ) -> events_pb2.PushSubscription:
        subscription = request.subscription
        row = await notifications.put_push_subscription(
            self.db, subscription.endpoint, subscription.keys.p256dh, subscription.keys.auth
        )
        return mapping.push_subscription_to_proto(row)

    async def DeletePushSubscription(
        self, request: events_pb2.DeletePushSubscriptionRequest, context: Context
    ) -> empty_pb2.Empty:
        await notifications.delete_push_subscription(self.db, request.endpoint)
        return empty_pb2.Empty()

    async def GetNotificationSettings(
        self, request: events_pb2.GetNotificationSettingsRequest, context: Context
    ) -> events_pb2.NotificationSettings:
        return mapping.notification_settings_to_proto(await notifications.notification_settings(self.db))

    async def UpdateNotificationSettings(
        self, request: events_pb2.UpdateNotificationSettingsRequest, context: Context
    ) -> events_pb2.NotificationSettings:
        changes = mapping.preference_changes(request)
        return mapping.notification_settings_to_proto(
            await notifications.update_notification_settings(self.db, changes)
        )

    async def GetUnsubscribePage(
        self, request: events_pb2.GetUnsubscribePageRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        page = notifications.unsubscribe_page(request.token)
        return httpbody_pb2.HttpBody(content_type="text/html; charset=utf-8", data=page.encode())

    async def Unsubscribe(self, request: events_pb2.UnsubscribeRequest, context: Context) -> httpbody_pb2.HttpBody:
        page = await notifications.unsubscribe(self.db, request.token)
        return httpbody_pb2.HttpBody(content_type="text/html; charset=utf-8", data=page.encode())

    async def ListNotifications(
        self, request: events_pb2.ListNotificationsRequest, context: Context
    ) -> events_pb2.ListNotificationsResponse:
        status = mapping.notification_status(request)
        page = await notifications.list_notifications(self.db, status, mapping.page(request))
        return mapping.list_notifications_response(page)

    async def RetryNotification(
        self, request: events_pb2.RetryNotificationRequest, context: Context
    ) -> events_pb2.RetryNotificationResponse:
        row = await notifications.retry_notification(self.db, parse_uuid("id", request.id))
        return events_pb2.RetryNotificationResponse(notification=mapping.notification_to_proto(row))

    # Analytics

    async def RecordEventView(
        self, request: events_pb2.RecordEventViewRequest, context: Context
    ) -> events_pb2.RecordEventViewResponse:
        event_id = parse_uuid("id", request.id)
        viewer = viewer_key(current_identity.get(), context)
        return events_pb2.RecordEventViewResponse(counted=await analytics.record_view(self.db, event_id, viewer))

    async def GetEventAnalytics(
        self, request: events_pb2.GetEventAnalyticsRequest, context: Context
    ) -> events_pb2.Analytics:
        return mapping.analytics_to_proto(await self._event_analytics(request))

    async def GetEventAnalyticsCsv(
        self, request: events_pb2.GetEventAnalyticsCsvRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        return mapping.analytics_csv(await self._event_analytics(request))

    async def _event_analytics(
        self, request: events_pb2.GetEventAnalyticsRequest | events_pb2.GetEventAnalyticsCsvRequest
    ) -> analytics.Analytics:
        event_id = parse_uuid("event_id", request.event_id)
        return await analytics.event_analytics(self.db, event_id, analytics.date_range(request.start, request.end))

    async def GetBusinessAnalytics(
        self, request: events_pb2.GetBusinessAnalyticsRequest, context: Context
    ) -> events_pb2.Analytics:
        return mapping.analytics_to_proto(await self._business_analytics(request))

    async def GetBusinessAnalyticsCsv(
        self, request: events_pb2.GetBusinessAnalyticsCsvRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        return mapping.analytics_csv(await self._business_analytics(request))

    async def _business_analytics(
        self, request: events_pb2.GetBusinessAnalyticsRequest | events_pb2.GetBusinessAnalyticsCsvRequest
    ) -> analytics.Analytics:
        business_id = parse_uuid("business_id", request.business_id)
        days = analytics.date_range(request.start, request.end)
        return await analytics.business_analytics(self.db, business_id, days)

    async def GetPlatformAnalytics(
        self, request: events_pb2.GetPlatformAnalyticsRequest, context: Context
    ) -> events_pb2.Analytics:
        return mapping.analytics_to_proto(await self._platform_analytics(request))

    async def GetPlatformAnalyticsCsv(
        self, request: events_pb2.GetPlatformAnalyticsCsvRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        return mapping.analytics_csv(await self._platform_analytics(request))

    async def _platform_analytics(
        self, request: events_pb2.GetPlatformAnalyticsRequest | events_pb2.GetPlatformAnalyticsCsvRequest
    ) -> analytics.Analytics:
        days = analytics.date_range(request.start, request.end)
        return await analytics.platform_analytics(self.db, request.city, request.category.strip(), days)
