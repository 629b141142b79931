"""Translation between protobuf messages and what the use cases take and return: requests become
typed values (ids, column values, dataclasses), rows and results become messages."""

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from google.api import httpbody_pb2
from google.protobuf import field_mask_pb2, json_format

from localplus.events.v1 import events_pb2, schedule_pb2
from localplus_common.errors import ApiError, invalid_argument
from localplus_common.paging import Page, PageRequest, page_request
from localplus_common.requests import (
    optional_uuid,
    parse_uuid,
    set_timestamp,
    text,
    timestamp_or_none,
    timestamp_value,
)
from localplus_common.sponsored import Sponsored
from localplus_events import analytics, notifications
from localplus_events.discovery import SearchQuery
from localplus_events.domain import (
    CATEGORY_SPACES,
    EDITABLE_FIELDS,
    OUTPUT_ONLY_FIELDS,
    PARTICIPANT_EDITABLE_FIELDS,
    PARTICIPANT_FIXED_FIELDS,
    PARTICIPANT_PREFIX,
    ROLE_PREFIX,
    STATUS_PREFIX,
    VISIBILITY_PREFIX,
    category_filter,
    db_to_enum,
    enum_to_db,
    status_name,
)
from localplus_events.events import Split
from localplus_events.imports import Item, ItemResult, QueuedImport, Unreadable
from localplus_events.moderation import QueueFilter
from localplus_events.participants import ParticipantChanges
from localplus_events.places import NewVenue
from localplus_events.stats import BusinessStats, EventStats

TIMESTAMP_FIELDS = ("starts_at", "ends_at", "registration_opens_at", "registration_closes_at")
OPTIONAL_NUMBERS = ("latitude", "longitude", "capacity")
TEXT_FIELDS = ("title", "description", "category", "timezone", "venue_name", "address")

# Requests


def page(request: Any) -> PageRequest:
    """The page a list request asks for (every list request has page_size and page_token)."""
    return page_request(request)


def populated_fields(message: Any, editable: Sequence[str]) -> list[str]:
    """The editable fields the client set, for an update without a mask (AIP-134)."""
    present = {descriptor.name for descriptor, _ in message.ListFields()}
    return [name for name in editable if name in present]


def mask_fields(paths: Sequence[str], editable: Sequence[str], ignored: Sequence[str]) -> list[str]:
    """The fields an update mask names; `ignored` ones (output only, identifiers) are skipped."""
    fields = []
    for path in paths:
        if path == "*":
            return list(editable)
        if path in ignored:
            continue
        if path not in editable:
            raise invalid_argument("update_mask", f"update_mask names unknown field {path[:64]!r}")
        fields.append(path)
    return fields


def update_fields(
    message: Any, mask: field_mask_pb2.FieldMask, editable: Sequence[str], ignored: Sequence[str]
) -> list[str]:
    """What an update writes (AIP-134): the masked fields, or without a mask those present."""
    if mask.paths:
        return mask_fields(mask.paths, editable, ignored)
    return populated_fields(message, editable)


def new_event(request: events_pb2.CreateEventRequest) -> dict[str, Any]:
    """Column values of the event to create: every field the client set."""
    return event_values(request.event, populated_fields(request.event, EDITABLE_FIELDS))


def event_changes(request: events_pb2.UpdateEventRequest) -> dict[str, Any]:
    """Column values an update writes; an unset field in the mask means "clear it"."""
    fields = update_fields(request.event, request.update_mask, EDITABLE_FIELDS, OUTPUT_ONLY_FIELDS)
    return event_values(request.event, fields)


def event_values(event: events_pb2.Event, fields: list[str]) -> dict[str, Any]:
    """Column values for `fields` of `event`; an unset field means "clear it"."""
    values: dict[str, Any] = {}
    for name in fields:
        if name == "city":
            values[name] = text(name, event.city).strip().lower() or None
        elif name in TEXT_FIELDS:
            values[name] = text(name, getattr(event, name))
        elif name in TIMESTAMP_FIELDS:
            values[name] = timestamp_or_none(event, name)
        elif name in OPTIONAL_NUMBERS:
            values[name] = getattr(event, name) if event.HasField(name) else None
        elif name in ("business_id", "venue_id", "seating_plan_id"):
            named = event.HasField(name) and getattr(event, name)
            values[name] = parse_uuid(name, getattr(event, name)) if named else None
        elif name == "tags":
            values[name] = [text(name, tag) for tag in event.tags]
        elif name == "visibility":
            values[name] = _enum_value(event, name, events_pb2.EventVisibility, VISIBILITY_PREFIX)
        elif name == "status":
            values[name] = _enum_value(event, name, events_pb2.EventStatus, STATUS_PREFIX)
        elif name == "recurrence":
            values |= recurrence_values(event.recurrence if event.HasField("recurrence") else None)
    return values


def recurrence_values(recurrence: schedule_pb2.Recurrence | None, field: str = "recurrence") -> dict[str, Any]:
    """The recurrence columns for a Recurrence (None: a one-off event)."""
    if recurrence is None:
        return {"recurrence_rrule": None, "recurrence_exdates": [], "recurrence_rdates": []}
    return {
        "recurrence_rrule": text(f"{field}.rrule", recurrence.rrule),
        "recurrence_exdates": _times(recurrence.exdates, f"{field}.exdates"),
        "recurrence_rdates": _times(recurrence.rdates, f"{field}.rdates"),
    }


def _times(stamps: Sequence[Any], field: str) -> list[datetime]:
    return [timestamp_value(stamp, f"{field}[{i}]") for i, stamp in enumerate(stamps)]


def split(request: events_pb2.SplitEventRequest) -> Split:
    def required(name: str) -> datetime:
        value = timestamp_or_none(request, name)
        if value is None:
            raise invalid_argument(name, f"{name} is required")
        return value

    return Split(
        event_id=parse_uuid("id", request.id),
        split_at=required("split_at"),
        before=recurrence_values(request.recurrence_before, "recurrence_before"),
        starts_at=required("starts_at"),
        ends_at=required("ends_at"),
        after=recurrence_values(request.recurrence_after, "recurrence_after"),
        capacity=request.capacity if request.HasField("capacity") else None,
        etag=request.etag,
    )


def _enum_value(event: events_pb2.Event, field: str, enum: Any, prefix: str) -> str:
    return enum_to_db(prefix, enum_name(enum, getattr(event, field), field))


def enum_name(enum: Any, number: int, field: str) -> str:
    """The name of a specified enum value; proto3 JSON also lets through numbers with no name."""
    if number != 0:
        try:
            name: str = enum.Name(number)
            return name
        except ValueError:
            pass
    raise invalid_argument(field, f"{field} must be one of {', '.join(enum.keys()[1:])}")


def same_category(request: Any) -> Any:
    """`request` with its category as filters compare it (folded_category): `Music` and ` music` are one
    filter, so one scope for page tokens."""
    folded = type(request)()
    folded.CopyFrom(request)
    folded.category = category_filter(request.category).strip(CATEGORY_SPACES).lower()
    return folded


def search_query(request: events_pb2.ListEventsRequest) -> SearchQuery:
    return SearchQuery(
        page=page(same_category(request)),
        q=request.q,
        city=request.city,
        category=request.category,
        tags=tuple(request.tags),
        business_id=optional_uuid("business_id", request.business_id),
        starts_after=timestamp_or_none(request, "starts_after"),
        starts_before=timestamp_or_none(request, "starts_before"),
        near=_point(request.near),
        radius_km=request.radius_km,
        free_only=request.free_only,
        order_by=request.order_by,
    )


def _point(near: str) -> tuple[float, float] | None:
    """`"13.7563,100.5018"` -> (13.7563, 100.5018)."""
    if not near:
        return None
    try:
        latitude, longitude = (float(part) for part in near.split(","))
    except ValueError:
        raise invalid_argument("near", "near must be 'lat,lng', e.g. 13.7563,100.5018") from None
    return latitude, longitude


def queue_filter(request: events_pb2.ListModerationEventsRequest) -> QueueFilter:
    return QueueFilter(city=request.city, category=request.category, source=request.source)


def new_participant(participant: events_pb2.Participant) -> ParticipantChanges:
    """What a registration starts with: the fields the client set (the rest take their defaults)."""
    changes = participant_changes(participant, populated_fields(participant, PARTICIPANT_EDITABLE_FIELDS))
    return replace(changes, occurrence_id=optional_uuid("occurrence_id", participant.occurrence_id))


def participant_update(request: events_pb2.UpdateParticipantRequest) -> ParticipantChanges:
    """What an update writes: the masked fields (an unset one cleared), or without a mask those present."""
    participant = request.participant
    fields = update_fields(participant, request.update_mask, PARTICIPANT_EDITABLE_FIELDS, PARTICIPANT_FIXED_FIELDS)
    changes = participant_changes(participant, fields)
    return replace(changes, occurrence_id=optional_uuid("occurrence_id", participant.occurrence_id))


def participant_changes(participant: events_pb2.Participant, fields: list[str]) -> ParticipantChanges:
    return ParticipantChanges(
        status=participant_status_to_db(participant.status) if "status" in fields else None,
        guest_count=participant.guest_count if "guest_count" in fields else None,
    )


def participant_status_to_db(number: int) -> str:
    return enum_to_db(PARTICIPANT_PREFIX, enum_name(events_pb2.ParticipantStatus, number, "status"))


def participant_user(participant: events_pb2.Participant) -> UUID | None:
    """The registration a participant body is about; None for the caller's own."""
    return optional_uuid("user_id", participant.user_id)


def role_to_db(number: int, field: str) -> str:
    return enum_to_db(ROLE_PREFIX, enum_name(events_pb2.EventRole, number, field))


# Responses


def event_to_proto(row: asyncpg.Record | dict[str, Any]) -> events_pb2.Event:
    event = events_pb2.Event(
        id=str(row["id"]),
        created_by=str(row["created_by"] or ""),
        title=row["title"],
        description=row["description"],
        category=row["category"],
        tags=row["tags"],
        timezone=row["timezone"],
        venue_name=row["venue_name"],
        address=row["address"],
        visibility=db_to_enum(VISIBILITY_PREFIX, row["visibility"]),
        status=db_to_enum(STATUS_PREFIX, row["status"]),
        etag=str(row["version"]),
        city=row["city"] or "",
        source=row["source"] or "",
        status_reason=row["status_reason"] or "",
    )
    if row["business_id"] is not None:
        event.business_id = str(row["business_id"])
    if row["venue_id"] is not None:
        event.venue_id = str(row["venue_id"])
    if row["seating_plan_id"] is not None:
        event.seating_plan_id = str(row["seating_plan_id"])
    for name in OPTIONAL_NUMBERS:
        if row[name] is not None:
            setattr(event, name, row[name])
    for name in (*TIMESTAMP_FIELDS, "created_at", "updated_at", "submitted_at", "published_at"):
        set_timestamp(event, name, row[name])
    if row.get("distance_km") is not None:
        event.distance_km = float(row["distance_km"])
    if row["recurrence_rrule"] is not None:
        event.recurrence.rrule = row["recurrence_rrule"]
        for name in ("exdates", "rdates"):
            for moment in row[f"recurrence_{name}"]:
                getattr(event.recurrence, name).add().FromDatetime(moment)
    return event


def participant_to_proto(row: asyncpg.Record | dict[str, Any]) -> events_pb2.Participant:
    participant = events_pb2.Participant(
        event_id=str(row["event_id"]),
        user_id=str(row["user_id"]),
        status=db_to_enum(PARTICIPANT_PREFIX, row["status"]),
        guest_count=row["guest_count"],
        occurrence_id=str(row.get("occurrence_id") or ""),
    )
    set_timestamp(participant, "created_at", row["created_at"])
    set_timestamp(participant, "updated_at", row["updated_at"])
    return participant


def permission_to_proto(row: asyncpg.Record) -> events_pb2.Permission:
    permission = events_pb2.Permission(
        event_id=str(row["event_id"]),
        user_id=str(row["user_id"]),
        role=db_to_enum(ROLE_PREFIX, row["role"]),
        granted_by=str(row["granted_by"] or ""),
    )
    set_timestamp(permission, "expires_at", row["expires_at"])
    set_timestamp(permission, "created_at", row["created_at"])
    return permission


def saved_event_to_proto(row: Any) -> events_pb2.SavedEvent:
    saved = events_pb2.SavedEvent(event_id=str(row["id"]), event=event_to_proto(row))
    set_timestamp(saved, "created_at", row["saved_at"])
    return saved


def my_event_to_proto(row: asyncpg.Record) -> events_pb2.MyEvent:
    """A registration joined with its event (the query renames the registration's columns)."""
    registration = {
        "event_id": row["id"],
        "user_id": row["user_id"],
        "status": row["participant_status"],
        "guest_count": row["guest_count"],
        "occurrence_id": row["occurrence_id"],
        "created_at": row["registered_at"],
        "updated_at": row["registration_updated_at"],
    }
    return events_pb2.MyEvent(participant=participant_to_proto(registration), event=event_to_proto(row))


def moderation_entry_to_proto(row: asyncpg.Record) -> events_pb2.ModerationLogEntry:
    entry = events_pb2.ModerationLogEntry(
        event_id=str(row["event_id"]),
        actor_id=str(row["actor_id"] or ""),
        to_status=status_name(row["to_status"]),
        reason=row["reason"] or "",
    )
    if row["from_status"]:
        entry.from_status = status_name(row["from_status"])  # type: ignore[assignment]
    set_timestamp(entry, "created_at", row["created_at"])
    return entry


def event_stats_to_proto(stats: EventStats) -> events_pb2.EventStats:
    message = events_pb2.EventStats(
        event_id=str(stats.event_id),
        registrations_per_day=[
            events_pb2.DailyCount(date=day.isoformat(), registrations=count)
            for day, count in stats.registrations_per_day
        ],
        checked_in=stats.checked_in,
        **stats.counts,
    )
    if stats.capacity is not None:
        message.capacity = stats.capacity
    if stats.fill_rate is not None:
        message.fill_rate = stats.fill_rate
    return message


def business_stats_to_proto(stats: BusinessStats) -> events_pb2.BusinessStats:
    return events_pb2.BusinessStats(
        business_id=str(stats.business_id),
        events=stats.events,
        events_by_status={status_name(status): count for status, count in stats.events_by_status.items()},
        **stats.counts,
    )


def list_events_response(
    page: Page[asyncpg.Record], sponsored: Sequence[Sponsored] = ()
) -> events_pb2.ListEventsResponse:
    return events_pb2.ListEventsResponse(
        events=[event_to_proto(row) for row in page.items],
        next_page_token=page.next_page_token,
        sponsored=[
            events_pb2.SponsoredEvent(
                position=item.position, promotion_id=str(item.promotion_id), event=event_to_proto(item.event)
            )
            for item in sponsored
        ],
    )


def list_moderation_events_response(page: Page[asyncpg.Record]) -> events_pb2.ListModerationEventsResponse:
    return events_pb2.ListModerationEventsResponse(
        events=[event_to_proto(row) for row in page.items], next_page_token=page.next_page_token
    )


def list_moderation_log_response(page: Page[asyncpg.Record]) -> events_pb2.ListModerationLogResponse:
    return events_pb2.ListModerationLogResponse(
        entries=[moderation_entry_to_proto(row) for row in page.items], next_page_token=page.next_page_token
    )


def list_saved_events_response(page: Page[asyncpg.Record]) -> events_pb2.ListSavedEventsResponse:
    return events_pb2.ListSavedEventsResponse(
        saved_events=[saved_event_to_proto(row) for row in page.items], next_page_token=page.next_page_token
    )


def list_my_events_response(page: Page[asyncpg.Record]) -> events_pb2.ListMyEventsResponse:
    return events_pb2.ListMyEventsResponse(
        events=[my_event_to_proto(row) for row in page.items], next_page_token=page.next_page_token
    )


def list_participants_response(page: Page[asyncpg.Record]) -> events_pb2.ListParticipantsResponse:
    return events_pb2.ListParticipantsResponse(
        participants=[participant_to_proto(row) for row in page.items], next_page_token=page.next_page_token
    )


def list_permissions_response(page: Page[asyncpg.Record]) -> events_pb2.ListPermissionsResponse:
    return events_pb2.ListPermissionsResponse(
        permissions=[permission_to_proto(row) for row in page.items], next_page_token=page.next_page_token
    )


# Cities and venues


def new_venue(request: events_pb2.CreateVenueRequest) -> NewVenue:
    venue = request.venue
    return NewVenue(
        city=venue.city,
        name=venue.name,
        address=venue.address,
        latitude=venue.latitude if venue.HasField("latitude") else None,
        longitude=venue.longitude if venue.HasField("longitude") else None,
        business_id=parse_uuid("venue.business_id", venue.business_id) if venue.business_id else None,
    )


def city_to_proto(row: asyncpg.Record) -> events_pb2.City:
    return events_pb2.City(
        id=str(row["id"]),
        slug=row["slug"],
        name=row["name"],
        country=row["country"],
        timezone=row["timezone"],
        latitude=row["latitude"],
        longitude=row["longitude"],
    )


def venue_to_proto(row: asyncpg.Record) -> events_pb2.Venue:
    venue = events_pb2.Venue(id=str(row["id"]), city=row["city"], name=row["name"], address=row["address"])
    if row["latitude"] is not None:
        venue.latitude, venue.longitude = row["latitude"], row["longitude"]
    if row["business_id"] is not None:
        venue.business_id = str(row["business_id"])
    return venue


def list_cities_response(page: Page[asyncpg.Record]) -> events_pb2.ListCitiesResponse:
    return events_pb2.ListCitiesResponse(
        cities=[city_to_proto(row) for row in page.items], next_page_token=page.next_page_token
    )


def list_venues_response(page: Page[asyncpg.Record]) -> events_pb2.ListVenuesResponse:
    return events_pb2.ListVenuesResponse(
        venues=[venue_to_proto(row) for row in page.items], next_page_token=page.next_page_token
    )


# Imports

SOURCE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
IMPORT_RESULT_PREFIX = "IMPORT_RESULT_"
IMPORT_STATUS_PREFIX = "IMPORT_STATUS_"
IMPORT_DECISIONS = {
    events_pb2.IMPORT_DECISION_MERGE: "merge",
    events_pb2.IMPORT_DECISION_KEEP_SEPARATE: "keep",
    events_pb2.IMPORT_DECISION_REJECT: "reject",
}


def import_items(request: events_pb2.ImportEventsRequest) -> list[Item | Unreadable]:
    """Each item as the use case takes it, or the reason it cannot be read (reported for that item,
    under the external_id the caller sent, which is how a scraper matches results to items)."""
    items: list[Item | Unreadable] = []
    for item in request.items:
        try:
            items.append(import_item(item))
        except ApiError as error:
            items.append(Unreadable(item.external_id, error))
    return items


def import_item(item: events_pb2.ImportItem) -> Item:
    if not SOURCE.fullmatch(item.source):
        raise invalid_argument("source", "source must be lower-case letters, digits, dots, dashes or underscores")
    starts_at = timestamp_or_none(item, "starts_at")
    if starts_at is None:
        raise invalid_argument("starts_at", "starts_at is required")
    return Item(
        source=item.source,
        external_id=text("external_id", item.external_id),
        title=text("title", item.title),
        description=text("description", item.description),
        starts_at=starts_at,
        ends_at=timestamp_or_none(item, "ends_at"),
        timezone=text("timezone", item.timezone),
        venue_name=text("venue_name", item.venue_name),
        latitude=item.latitude if item.HasField("latitude") else None,
        longitude=item.longitude if item.HasField("longitude") else None,
        url=text("url", item.url),
        price_minor=item.price_minor if item.HasField("price_minor") else None,
        currency=text("currency", item.currency),
        image_url=text("image_url", item.image_url),
        raw=json_format.MessageToDict(item.raw) if item.HasField("raw") else None,
    )


def import_results_response(results: list[ItemResult]) -> events_pb2.ImportEventsResponse:
    return events_pb2.ImportEventsResponse(
        results=[
            events_pb2.ImportItemResult(
                external_id=result.external_id,
                result=IMPORT_RESULT_PREFIX + result.result.upper(),
                event_id=str(result.event_id or ""),
                duplicate_of=str(result.duplicate_of or ""),
                score=result.score,
                error=result.error,
            )
            for result in results
        ]
    )


def import_decision(request: events_pb2.ResolveImportRequest) -> str:
    if request.decision not in IMPORT_DECISIONS:
        raise invalid_argument("decision", f"decision must be one of {', '.join(events_pb2.ImportDecision.keys()[1:])}")
    return IMPORT_DECISIONS[request.decision]


def scraper_import_to_proto(queued: QueuedImport) -> events_pb2.ScraperImport:
    record = queued.record
    stored = json.loads(record["item"]) if isinstance(record["item"], str) else record["item"]
    item = events_pb2.ImportItem()
    json_format.ParseDict({k: v for k, v in stored.items() if v is not None}, item, ignore_unknown_fields=True)
    message = events_pb2.ScraperImport(
        id=str(record["id"]),
        item=item,
        status=IMPORT_STATUS_PREFIX + record["status"].upper(),
        event_id=str(record["event_id"] or ""),
        duplicate_of=str(record["duplicate_of"] or ""),
        score=record["score"] or 0.0,
    )
    if queued.candidate is not None:
        message.candidate.CopyFrom(event_to_proto(queued.candidate))
    set_timestamp(message, "created_at", record["created_at"])
    return message


def list_moderation_imports_response(page: Page[QueuedImport]) -> events_pb2.ListModerationImportsResponse:
    return events_pb2.ListModerationImportsResponse(
        imports=[scraper_import_to_proto(queued) for queued in page.items], next_page_token=page.next_page_token
    )


# Notifications: enum names are these prefixes plus the database value in capitals.
KIND_PREFIX = "NOTIFICATION_KIND_"
CHANNEL_PREFIX = "NOTIFICATION_CHANNEL_"
NOTIFICATION_STATUS_PREFIX = "NOTIFICATION_STATUS_"


def push_subscription_to_proto(row: asyncpg.Record) -> events_pb2.PushSubscription:
    subscription = events_pb2.PushSubscription(
        endpoint=row["endpoint"], keys=events_pb2.PushSubscriptionKeys(p256dh=row["p256dh"], auth=row["auth"])
    )
    set_timestamp(subscription, "created_at", row["created_at"])
    return subscription


def _enum_db(enum: Any, prefix: str, number: int) -> str:
    """The database value of an enum number; "" for unspecified or a number the proto does not name."""
    try:
        return enum_to_db(prefix, enum.Name(number)) if number else ""
    except ValueError:
        return ""


def preference_changes(request: events_pb2.UpdateNotificationSettingsRequest) -> list[notifications.Preference]:
    changes = []
    for index, preference in enumerate(request.settings.preferences):
        kind = _enum_db(events_pb2.NotificationKind, KIND_PREFIX, preference.kind)
        channel = _enum_db(events_pb2.NotificationChannel, CHANNEL_PREFIX, preference.channel)
        if kind not in notifications.KINDS:
            raise invalid_argument(f"settings.preferences[{index}].kind", "kind is required")
        if channel not in notifications.CHANNELS:
            raise invalid_argument(f"settings.preferences[{index}].channel", "channel is required")
        changes.append(notifications.Preference(kind, channel, preference.enabled))
    return changes


def notification_settings_to_proto(preferences: list[notifications.Preference]) -> events_pb2.NotificationSettings:
    return events_pb2.NotificationSettings(
        preferences=[
            events_pb2.NotificationPreference(
                kind=db_to_enum(KIND_PREFIX, preference.kind),
                channel=db_to_enum(CHANNEL_PREFIX, preference.channel),
                enabled=preference.enabled,
            )
            for preference in preferences
        ]
    )


def notification_status(request: events_pb2.ListNotificationsRequest) -> str | None:
    if request.status == events_pb2.NOTIFICATION_STATUS_UNSPECIFIED:
        return None
    status = _enum_db(events_pb2.NotificationStatus, NOTIFICATION_STATUS_PREFIX, request.status)
    if not status:
        raise invalid_argument("status", "status is not a NotificationStatus")
    return status


def notification_to_proto(row: asyncpg.Record) -> events_pb2.Notification:
    notification = events_pb2.Notification(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        kind=db_to_enum(KIND_PREFIX, row["kind"]),
        channel=db_to_enum(CHANNEL_PREFIX, row["channel"]),
        status=db_to_enum(NOTIFICATION_STATUS_PREFIX, row["status"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        event_id=str(row["event_id"] or ""),
        occurrence_id=str(row["occurrence_id"] or ""),
        order_id=str(row["order_id"] or ""),
    )
    if row["status"] == "pending":
        set_timestamp(notification, "next_attempt_at", row["send_after"])
    set_timestamp(notification, "created_at", row["created_at"])
    set_timestamp(notification, "sent_at", row["sent_at"])
    return notification


def list_notifications_response(page: Page[asyncpg.Record]) -> events_pb2.ListNotificationsResponse:
    return events_pb2.ListNotificationsResponse(
        notifications=[notification_to_proto(row) for row in page.items], next_page_token=page.next_page_token
    )


def analytics_to_proto(figures: analytics.Analytics) -> events_pb2.Analytics:
    funnel = figures.funnel()
    return events_pb2.Analytics(
        days=[
            events_pb2.AnalyticsDay(
                date=day.date.isoformat(),
                views=day.views,
                saves=day.saves,
                registrations=day.registrations,
                orders=day.orders,
                tickets=day.tickets,
                revenue_minor=day.revenue_minor,
                refunds_minor=day.refunds_minor,
                check_ins=day.check_ins,
            )
            for day in figures.days
        ],
        funnel=events_pb2.AnalyticsFunnel(**funnel),
        currency=figures.currency,
        start=figures.start.isoformat(),
        end=figures.end.isoformat(),
    )


def analytics_csv(figures: analytics.Analytics) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="text/csv; charset=utf-8", data=figures.csv().encode())
