"""gRPC entrypoint of the events service: checks the request, runs the use case in one
request transaction (row-level security applies) and answers with the resource."""

from typing import Any
from uuid import UUID

import asyncpg
from google.protobuf import empty_pb2
from grpc.aio import ServicerContext as Context

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.access import EDITOR, OWNER, require_rank, signed_in, visible_event
from localplus_common.auth import Identity
from localplus_common.db import Connection, Database
from localplus_common.errors import (
    aborted,
    already_exists,
    invalid_argument,
    not_found,
    permission_denied,
)
from localplus_common.requests import (
    page_size,
    parse_uuid,
    timestamp_or_none,
)
from localplus_events import discovery, mapping, moderation, stats
from localplus_events import repository as repo
from localplus_events.access import check_etag, check_registration_open, time_keyset, time_page_token
from localplus_events.domain import SELF_SERVICE_STATUSES, validate_event


class EventsService(events_pb2_grpc.EventsServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    # Events

    async def ListEvents(self, request: events_pb2.ListEventsRequest, context: Context) -> Any:
        rows, next_token = await discovery.search(self.db, request)
        return events_pb2.ListEventsResponse(
            events=[mapping.event_to_proto(row) for row in rows], next_page_token=next_token
        )

    async def GetEvent(self, request: events_pb2.GetEventRequest, context: Context) -> Any:
        event_id = parse_uuid("id", request.id)
        row = await self.db.run(lambda conn: visible_event(conn, event_id), event_id=event_id)
        return mapping.event_to_proto(row)

    async def CreateEvent(self, request: events_pb2.CreateEventRequest, context: Context) -> Any:
        identity = signed_in()
        values = mapping.event_values(request.event, mapping.populated_fields(request.event))
        values.setdefault("visibility", "public")
        values.setdefault("status", "draft")
        validate_event(values)
        if values["status"] not in ("draft", "pending_review") and not identity.is_platform_admin:
            raise permission_denied("new events start as drafts (or pending review); admins publish them")

        async def create(conn: Connection) -> asyncpg.Record:
            business_id = values.get("business_id")
            if business_id is not None and not identity.is_platform_admin:
                allowed = await conn.fetchval(
                    "select localplus_private.is_business_partner($1, array['owner', 'editor'])", business_id
                )
                if not allowed:
                    raise permission_denied("only owner or editor partners may create events for a business")
            return await repo.insert_event(conn, identity.user_id, values)

        return mapping.event_to_proto(await self.db.run(create))

    async def UpdateEvent(self, request: events_pb2.UpdateEventRequest, context: Context) -> Any:
        signed_in()
        event_id = parse_uuid("event.id", request.event.id)
        if request.HasField("update_mask") and request.update_mask.paths:
            fields = mapping.mask_fields(list(request.update_mask.paths))
        else:
            fields = mapping.populated_fields(request.event)
        changes = mapping.event_values(request.event, fields)

        async def update(conn: Connection) -> asyncpg.Record:
            current = await visible_event(conn, event_id)
            require_rank(current, EDITOR, "edit")
            check_etag(current, request.event.etag)
            merged = {name: current[name] for name in mapping.EDITABLE_FIELDS} | changes
            validate_event(merged)
            if not changes:
                return current
            updated = await repo.update_event(conn, event_id, current["version"], changes)
            if updated is None:
                raise aborted("the event changed meanwhile; read it again and retry", "ETAG_MISMATCH")
            return updated

        return mapping.event_to_proto(await self.db.run(update, event_id=event_id))

    async def DeleteEvent(self, request: events_pb2.DeleteEventRequest, context: Context) -> Any:
        signed_in()
        event_id = parse_uuid("id", request.id)

        async def delete(conn: Connection) -> None:
            current = await visible_event(conn, event_id)
            require_rank(current, OWNER, "delete")
            check_etag(current, request.etag)
            if not await repo.delete_event(conn, event_id, current["version"]):
                raise aborted("the event changed meanwhile; read it again and retry", "ETAG_MISMATCH")

        await self.db.run(delete, event_id=event_id)
        return empty_pb2.Empty()

    # Lifecycle and moderation

    async def SubmitEvent(self, request: events_pb2.SubmitEventRequest, context: Context) -> Any:
        row = await moderation.transition(self.db, request.id, request.etag, moderation.SUBMIT)
        return events_pb2.SubmitEventResponse(event=mapping.event_to_proto(row))

    async def ApproveEvent(self, request: events_pb2.ApproveEventRequest, context: Context) -> Any:
        row = await moderation.transition(self.db, request.id, request.etag, moderation.APPROVE)
        return events_pb2.ApproveEventResponse(event=mapping.event_to_proto(row))

    async def RejectEvent(self, request: events_pb2.RejectEventRequest, context: Context) -> Any:
        row = await moderation.transition(self.db, request.id, request.etag, moderation.REJECT, request.reason)
        return events_pb2.RejectEventResponse(event=mapping.event_to_proto(row))

    async def CancelEvent(self, request: events_pb2.CancelEventRequest, context: Context) -> Any:
        row = await moderation.transition(self.db, request.id, request.etag, moderation.CANCEL, request.reason)
        return events_pb2.CancelEventResponse(event=mapping.event_to_proto(row))

    async def ListModerationEvents(self, request: events_pb2.ListModerationEventsRequest, context: Context) -> Any:
        rows, next_token = await moderation.moderation_queue(self.db, request)
        return events_pb2.ListModerationEventsResponse(
            events=[mapping.event_to_proto(row) for row in rows], next_page_token=next_token
        )

    async def ListModerationLog(self, request: events_pb2.ListModerationLogRequest, context: Context) -> Any:
        return await moderation.moderation_log(self.db, request)

    # Saves, "my events" and figures

    async def SaveEvent(self, request: events_pb2.SaveEventRequest, context: Context) -> Any:
        return mapping.saved_event_to_proto(await discovery.save(self.db, request.event_id))

    async def UnsaveEvent(self, request: events_pb2.UnsaveEventRequest, context: Context) -> Any:
        await discovery.unsave(self.db, request.event_id)
        return empty_pb2.Empty()

    async def ListSavedEvents(self, request: events_pb2.ListSavedEventsRequest, context: Context) -> Any:
        rows, next_token = await discovery.saved_events(self.db, request)
        return events_pb2.ListSavedEventsResponse(
            saved_events=[mapping.saved_event_to_proto(row) for row in rows], next_page_token=next_token
        )

    async def ListMyEvents(self, request: events_pb2.ListMyEventsRequest, context: Context) -> Any:
        rows, next_token = await discovery.my_events(self.db, request)
        return events_pb2.ListMyEventsResponse(
            events=[mapping.my_event_to_proto(row) for row in rows], next_page_token=next_token
        )

    async def GetEventStats(self, request: events_pb2.GetEventStatsRequest, context: Context) -> Any:
        return await stats.event_stats(self.db, request.event_id)

    async def GetBusinessStats(self, request: events_pb2.GetBusinessStatsRequest, context: Context) -> Any:
        return await stats.business_stats(self.db, request.business_id)

    # Participants

    async def ListParticipants(self, request: events_pb2.ListParticipantsRequest, context: Context) -> Any:
        signed_in()
        event_id = parse_uuid("event_id", request.event_id)
        limit = page_size(request.page_size)
        after = time_keyset(request.page_token, "created_at", "user_id")

        async def list_them(conn: Connection) -> list[asyncpg.Record]:
            await visible_event(conn, event_id)
            return await repo.list_participants(conn, event_id, limit, after)

        rows = await self.db.run(list_them, event_id=event_id)
        return events_pb2.ListParticipantsResponse(
            participants=[mapping.participant_to_proto(row) for row in rows],
            next_page_token=time_page_token(rows, limit, "created_at", "user_id"),
        )

    async def CreateParticipant(self, request: events_pb2.CreateParticipantRequest, context: Context) -> Any:
        identity = signed_in()
        event_id = parse_uuid("event_id", request.event_id)
        wanted = request.participant
        user_id = _target_user(identity, wanted.user_id)
        status = mapping.participant_status_to_db(wanted.status) if wanted.status else "going"
        guest_count = wanted.guest_count if wanted.HasField("guest_count") else 0

        async def register(conn: Connection) -> asyncpg.Record:
            event = await visible_event(conn, event_id)
            if user_id != identity.user_id:
                require_rank(event, EDITOR, "register other people for")
            elif status not in SELF_SERVICE_STATUSES or status == "cancelled":
                raise invalid_argument("status", "register as PARTICIPANT_STATUS_GOING or _INTERESTED")
            if event["caller_rank"] < EDITOR:
                await check_registration_open(conn, event)
            row = await repo.register(conn, event_id, user_id, status, guest_count)
            if row is None:
                raise already_exists("already registered; update the registration instead")
            return row

        return mapping.participant_to_proto(await self.db.run(register, event_id=event_id))

    async def UpdateParticipant(self, request: events_pb2.UpdateParticipantRequest, context: Context) -> Any:
        identity = signed_in()
        event_id = parse_uuid("event_id", request.event_id)
        wanted = request.participant
        user_id = _target_user(identity, wanted.user_id)

        async def update(conn: Connection) -> asyncpg.Record:
            event = await visible_event(conn, event_id)
            is_editor = event["caller_rank"] >= EDITOR
            if user_id != identity.user_id and not is_editor:
                raise permission_denied("only editors may change other people's registrations")
            current = await repo.get_participant(conn, event_id, user_id)
            if current is None:
                raise not_found("no registration for this event")
            status = mapping.participant_status_to_db(wanted.status) if wanted.status else current["status"]
            guest_count = wanted.guest_count if wanted.HasField("guest_count") else current["guest_count"]
            if not is_editor:
                if status != current["status"] and status not in SELF_SERVICE_STATUSES:
                    raise permission_denied("only editors may set that status")
                if status != "cancelled":
                    await check_registration_open(conn, event)
            row = await repo.update_participant(conn, event_id, user_id, status, guest_count)
            if row is None:
                raise permission_denied("you may not change this registration")
            return row

        return mapping.participant_to_proto(await self.db.run(update, event_id=event_id))

    async def DeleteParticipant(self, request: events_pb2.DeleteParticipantRequest, context: Context) -> Any:
        identity = signed_in()
        event_id = parse_uuid("event_id", request.event_id)
        user_id = _target_user(identity, request.user_id)

        async def cancel(conn: Connection) -> None:
            event = await visible_event(conn, event_id)
            if user_id != identity.user_id:
                require_rank(event, EDITOR, "cancel other people's registrations for")
            current = await repo.get_participant(conn, event_id, user_id)
            if current is None or current["status"] == "cancelled":
                raise not_found("no active registration for this event")
            await repo.update_participant(conn, event_id, user_id, "cancelled", current["guest_count"])

        await self.db.run(cancel, event_id=event_id)
        return empty_pb2.Empty()

    # Permissions

    async def ListPermissions(self, request: events_pb2.ListPermissionsRequest, context: Context) -> Any:
        signed_in()
        event_id = parse_uuid("event_id", request.event_id)
        limit = page_size(request.page_size)
        after = time_keyset(request.page_token, "created_at", "user_id")

        async def list_them(conn: Connection) -> list[asyncpg.Record]:
            event = await visible_event(conn, event_id)
            require_rank(event, EDITOR, "see who has access to")
            return await repo.list_permissions(conn, event_id, limit, after)

        rows = await self.db.run(list_them, event_id=event_id)
        return events_pb2.ListPermissionsResponse(
            permissions=[mapping.permission_to_proto(row) for row in rows],
            next_page_token=time_page_token(rows, limit, "created_at", "user_id"),
        )

    async def CreatePermission(self, request: events_pb2.CreatePermissionRequest, context: Context) -> Any:
        signed_in()
        event_id = parse_uuid("event_id", request.event_id)
        user_id = parse_uuid("permission.user_id", request.permission.user_id)
        role = mapping.role_to_db(request.permission.role)
        expires_at = timestamp_or_none(request.permission, "expires_at")

        async def grant(conn: Connection) -> asyncpg.Record:
            event = await visible_event(conn, event_id)
            require_rank(event, OWNER, "manage access to")
            if expires_at is not None and expires_at <= await conn.fetchval("select now()"):
                raise invalid_argument("permission.expires_at", "expires_at must be in the future")
            return await repo.grant_permission(conn, event_id, user_id, role, expires_at)

        return mapping.permission_to_proto(await self.db.run(grant, event_id=event_id))

    async def DeletePermission(self, request: events_pb2.DeletePermissionRequest, context: Context) -> Any:
        signed_in()
        event_id = parse_uuid("event_id", request.event_id)
        user_id = parse_uuid("user_id", request.user_id)

        async def revoke(conn: Connection) -> None:
            event = await visible_event(conn, event_id)
            require_rank(event, OWNER, "manage access to")
            if not await repo.revoke_permission(conn, event_id, user_id):
                raise not_found("that user holds no role on this event")

        await self.db.run(revoke, event_id=event_id)
        return empty_pb2.Empty()


def _target_user(identity: Identity, requested: str) -> UUID:
    """The registration a request is about: the caller's own unless an id is given."""
    if requested:
        return parse_uuid("user_id", requested)
    if identity.user_id is None:
        raise invalid_argument("user_id", "user_id is required for service callers")
    return identity.user_id
