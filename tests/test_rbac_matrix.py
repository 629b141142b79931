"""CONTRACT §3 as a table: every Phase 0 action, for every kind of caller, on public, unlisted,
private and draft events, through the JSON gateway (and a cross-section over native gRPC).

Each cell arranges its own data straight in SQL (a business, the event, its creator, one other
attendee, one permission holder and the caller's own tie to the event), makes one request, checks
the status the table names and that a refused request changed nothing, then deletes what it made.
`tests/test_rls_sql.py` runs the same actors and events against the row-level security policies
directly, as Supabase's own REST would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.config import DEV_JWT_SECRET
from localplus_dev.token import mint
from tests.support import User, event_body, service_role_token

# Who calls. The caller's tie to the event is arranged in SQL (see `arrange`).
ACTORS: dict[str, str] = {
    "anonymous": "no token at all",
    "stranger": "signed in, no tie to the event",
    "participant": "registered (going) for the event, no role",
    "viewer": "event_permissions row, role viewer",
    "editor": "event_permissions row, role editor",
    "owner": "event_permissions row, role owner",
    "creator": "the event's created_by (owner by definition)",
    "expired": "event_permissions row, role editor, expired yesterday: just a stranger",
    "other_business_partner": "owner partner of another business: just a stranger",
    "business_owner": "partners row on the event's business, role owner",
    "business_editor": "partners row on the event's business, role editor",
    "business_viewer": "partners row on the event's business, role viewer",
    "admin": "platform admin (app_metadata.role = admin)",
}

# The events, all belonging to one business: (visibility, status) in the database.
KINDS: dict[str, tuple[str, str]] = {
    "public": ("public", "published"),
    # Unlisted: readable by anyone who has the id once published, never listed (events.proto).
    "unlisted": ("unlisted", "published"),
    "private": ("private", "published"),
    "draft": ("public", "draft"),
}

ACTIONS: tuple[str, ...] = (
    "get_event",  # 1  GET    /api/events/{id}
    "list_events",  # 2  GET    /api/events (paged): is the event listed?
    "patch_event",  # 3  PATCH  /api/events/{id}?update_mask=title
    "put_event",  # 4  PUT    /api/events/{id} (the whole event, no mask)
    "delete_event",  # 5  DELETE /api/events/{id}
    "get_participants",  # 6  GET    /api/events/{id}/participants
    "register",  # 7  POST   /api/events/{id}/participants {} (the caller, going)
    "register_other",  # 8  POST   /api/events/{id}/participants {user_id: <newcomer>}
    "update_own",  # 9  PUT    /api/events/{id}/participants {status: INTERESTED} (the caller's own)
    "cancel_own",  # 10 DELETE /api/events/{id}/participants (the caller's own)
    "update_other_participant",  # 11 PUT /api/events/{id}/participants {user_id: <attendee>, status: ATTENDED}
    "cancel_other",  # 12 DELETE /api/events/{id}/participants?user_id=<attendee>
    "get_permissions",  # 13 GET    /api/events/{id}/permissions
    "grant_permission",  # 14 POST   /api/events/{id}/permissions {user_id: <newcomer>, role: VIEWER}
    "revoke_permission",  # 15 DELETE /api/events/{id}/permissions/{grantee}
)

Expect = int | str
LISTED, ABSENT = "listed", "absent"  # list_events: 200, and the event is (not) among the results
ALL, OWN = "all", "own"  # get_participants: 200 with every registration / only the caller's own

# fmt: off
# The matrix, CONTRACT §3; columns numbered as in ACTIONS. An invisible event or registration is 404,
# visible but not allowed is 403, anonymous writes 401 (Envoy refuses them; anonymous reads of
# participants and permissions are refused by the service). 400 = FAILED_PRECONDITION with reason
# REGISTRATION_CLOSED: one's own registration needs a published event. 409 = already registered.
# update_own / cancel_own are 404 for whoever holds no registration; update_other_participant /
# cancel_other (11, 12) for whoever may not see the attendee's (everyone below editor). Editors and up
# manage registrations, so they may add other people even to a draft (column 8), but registering
# themselves (column 7) is 400 there like for anyone: the rule is the event's, not the caller's rank.
# A participant may always cancel. participant/draft/update_own (column 9) is 400 REGISTRATION_CLOSED
# like register (column 7): the same rule, the same answer.
EXPECTED: dict[str, dict[str, tuple[Expect, ...]]] = {
        #            1    2       3    4    5    6    7    8    9    10   11   12   13   14   15
    "anonymous": {
        "public":   (200, LISTED, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401),
        "unlisted": (200, ABSENT, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401),
        "private":  (404, ABSENT, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401),
        "draft":    (404, ABSENT, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401),
    },
    "stranger": {
        "public":   (200, LISTED, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "unlisted": (200, ABSENT, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "private":  (404, ABSENT, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404),
        "draft":    (404, ABSENT, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404),
    },
    "participant": {
        "public":   (200, LISTED, 403, 403, 403, OWN, 409, 403, 200, 200, 404, 404, 403, 403, 403),
        "unlisted": (200, ABSENT, 403, 403, 403, OWN, 409, 403, 200, 200, 404, 404, 403, 403, 403),
        "private":  (200, ABSENT, 403, 403, 403, OWN, 409, 403, 200, 200, 404, 404, 403, 403, 403),
        "draft":    (200, ABSENT, 403, 403, 403, OWN, 400, 403, 400, 200, 404, 404, 403, 403, 403),
    },
    "viewer": {
        "public":   (200, LISTED, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "unlisted": (200, ABSENT, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "private":  (200, ABSENT, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "draft":    (200, ABSENT, 403, 403, 403, OWN, 400, 403, 404, 404, 404, 404, 403, 403, 403),
    },
    "editor": {
        "public":   (200, LISTED, 200, 200, 403, ALL, 200, 200, 404, 404, 200, 200, 200, 403, 403),
        "unlisted": (200, ABSENT, 200, 200, 403, ALL, 200, 200, 404, 404, 200, 200, 200, 403, 403),
        "private":  (200, ABSENT, 200, 200, 403, ALL, 200, 200, 404, 404, 200, 200, 200, 403, 403),
        "draft":    (200, ABSENT, 200, 200, 403, ALL, 400, 200, 404, 404, 200, 200, 200, 403, 403),
    },
    "owner": {
        "public":   (200, LISTED, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "unlisted": (200, ABSENT, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "private":  (200, ABSENT, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "draft":    (200, ABSENT, 200, 200, 200, ALL, 400, 200, 404, 404, 200, 200, 200, 200, 200),
    },
    "creator": {
        "public":   (200, LISTED, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "unlisted": (200, ABSENT, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "private":  (200, ABSENT, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "draft":    (200, ABSENT, 200, 200, 200, ALL, 400, 200, 404, 404, 200, 200, 200, 200, 200),
    },
    "expired": {
        "public":   (200, LISTED, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "unlisted": (200, ABSENT, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "private":  (404, ABSENT, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404),
        "draft":    (404, ABSENT, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404),
    },
    "other_business_partner": {
        "public":   (200, LISTED, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "unlisted": (200, ABSENT, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "private":  (404, ABSENT, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404),
        "draft":    (404, ABSENT, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404),
    },
    "business_owner": {
        "public":   (200, LISTED, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "unlisted": (200, ABSENT, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "private":  (200, ABSENT, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "draft":    (200, ABSENT, 200, 200, 200, ALL, 400, 200, 404, 404, 200, 200, 200, 200, 200),
    },
    "business_editor": {
        "public":   (200, LISTED, 200, 200, 403, ALL, 200, 200, 404, 404, 200, 200, 200, 403, 403),
        "unlisted": (200, ABSENT, 200, 200, 403, ALL, 200, 200, 404, 404, 200, 200, 200, 403, 403),
        "private":  (200, ABSENT, 200, 200, 403, ALL, 200, 200, 404, 404, 200, 200, 200, 403, 403),
        "draft":    (200, ABSENT, 200, 200, 403, ALL, 400, 200, 404, 404, 200, 200, 200, 403, 403),
    },
    "business_viewer": {
        "public":   (200, LISTED, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "unlisted": (200, ABSENT, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "private":  (200, ABSENT, 403, 403, 403, OWN, 200, 403, 404, 404, 404, 404, 403, 403, 403),
        "draft":    (200, ABSENT, 403, 403, 403, OWN, 400, 403, 404, 404, 404, 404, 403, 403, 403),
    },
    "admin": {
        "public":   (200, LISTED, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "unlisted": (200, ABSENT, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "private":  (200, ABSENT, 200, 200, 200, ALL, 200, 200, 404, 404, 200, 200, 200, 200, 200),
        "draft":    (200, ABSENT, 200, 200, 200, ALL, 400, 200, 404, 404, 200, 200, 200, 200, 200),
    },
}

# POST /api/events with the event's business_id: only its owner/editor partners (and admins).
CREATE_FOR_BUSINESS: dict[str, int] = {
    "anonymous": 401, "stranger": 403, "participant": 403, "viewer": 403, "editor": 403, "owner": 403,
    "creator": 403, "expired": 403, "other_business_partner": 403, "business_owner": 200,
    "business_editor": 200, "business_viewer": 403, "admin": 200,
}
# fmt: on

NEW_TITLE = "Renamed by the RBAC matrix"
PERMISSION_ACTORS = {"viewer": "viewer", "editor": "editor", "owner": "owner", "expired": "editor"}
PARTNER_ACTORS = {"business_owner": "owner", "business_editor": "editor", "business_viewer": "viewer"}


def expected(actor: str, kind: str, action: str) -> Expect:
    return EXPECTED[actor][kind][ACTIONS.index(action)]


def test_the_table_covers_every_actor_kind_and_action() -> None:
    assert set(EXPECTED) == set(ACTORS) == set(CREATE_FOR_BUSINESS)
    for actor, rows in EXPECTED.items():
        assert set(rows) == set(KINDS), actor
        for kind, row in rows.items():
            assert len(row) == len(ACTIONS), (actor, kind)


# Arrangement


@dataclass(frozen=True)
class Scene:
    """One event of one kind with everybody around it, and the one caller under test."""

    actor_name: str
    kind: str
    event_id: uuid.UUID
    business_id: uuid.UUID
    starts_at: datetime
    creator: uuid.UUID
    attendee: uuid.UUID  # registered (going): whom editors act on
    grantee: uuid.UUID  # holds a viewer permission: whom owners revoke
    newcomer: uuid.UUID  # no tie at all: whom owners grant a role
    actor: uuid.UUID | None  # None when anonymous
    participants: frozenset[uuid.UUID]  # everyone registered for the event
    permission_holders: frozenset[uuid.UUID]  # everyone with an event_permissions row (expired too)
    business_ids: tuple[uuid.UUID, ...]
    user_ids: tuple[uuid.UUID, ...]

    @property
    def is_admin(self) -> bool:
        return self.actor_name == "admin"

    @property
    def user(self) -> User | None:
        if self.actor is None:
            return None
        return User(self.actor, mint(self.actor, DEV_JWT_SECRET, admin=self.is_admin), self.is_admin)

    @property
    def claims(self) -> dict[str, Any]:
        """`request.jwt.claims` exactly as PostgREST would set them for this caller's token."""
        if self.actor is None:
            return {"role": "anon"}
        now = int(datetime.now(UTC).timestamp())
        app_metadata: dict[str, str] = {"provider": "email", **({"role": "admin"} if self.is_admin else {})}
        return {
            "aud": "authenticated",
            "role": "authenticated",
            "sub": str(self.actor),
            "email": f"{self.actor}@example.test",
            "iat": now,
            "exp": now + 3600,
            "app_metadata": app_metadata,
        }


def default_starts_at() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)


async def arrange(db: asyncpg.Pool, actor: str, kind: str, starts_at: datetime | None = None) -> Scene:
    """Commit one event of `kind` (of a fresh business) and tie `actor` to it, as superuser."""
    visibility, status = KINDS[kind]
    starts = starts_at or default_starts_at()
    creator, attendee, grantee, newcomer = (uuid.uuid4() for _ in range(4))
    users = [creator, attendee, grantee, newcomer]
    actor_id: uuid.UUID | None = None
    if actor == "creator":
        actor_id = creator
    elif actor != "anonymous":
        actor_id = uuid.uuid4()
        users.append(actor_id)
    is_admin = actor == "admin"
    business_id, other_business_id = uuid.uuid4(), uuid.uuid4()
    event_id = uuid.uuid4()
    participants = {attendee}
    permissions: list[tuple[uuid.UUID, str, datetime | None]] = [(grantee, "viewer", None)]
    partners: list[tuple[uuid.UUID, uuid.UUID, str]] = []
    if actor == "participant":
        assert actor_id is not None
        participants.add(actor_id)
    elif actor in PERMISSION_ACTORS:
        assert actor_id is not None
        expires = datetime.now(UTC) - timedelta(days=1) if actor == "expired" else None
        permissions.append((actor_id, PERMISSION_ACTORS[actor], expires))
    elif actor in PARTNER_ACTORS:
        assert actor_id is not None
        partners.append((business_id, actor_id, PARTNER_ACTORS[actor]))
    elif actor == "other_business_partner":
        assert actor_id is not None
        partners.append((other_business_id, actor_id, "owner"))

    admin_meta = json.dumps({"role": "admin"})
    async with db.acquire() as conn, conn.transaction():
        await conn.executemany(
            "insert into auth.users (id, email, raw_app_meta_data) values ($1, $2, $3::jsonb)",
            [(user, f"{user}@example.test", admin_meta if is_admin and user == actor_id else "{}") for user in users],
        )
        await conn.executemany(
            "insert into public.businesses (id, name) values ($1, $2)",
            [(business_id, "Matrix business"), (other_business_id, "Another business")],
        )
        await conn.execute(
            "insert into public.events (id, business_id, created_by, title, starts_at, ends_at, timezone,"
            " visibility, status) values ($1, $2, $3, $4, $5, $6, 'Asia/Bangkok', $7, $8)",
            event_id,
            business_id,
            creator,
            f"RBAC matrix: {actor} / {kind}",
            starts,
            starts + timedelta(hours=3),
            visibility,
            status,
        )
        await conn.executemany(
            "insert into public.event_participants (event_id, user_id, status) values ($1, $2, 'going')",
            [(event_id, user) for user in sorted(participants)],
        )
        await conn.executemany(
            "insert into public.event_permissions (event_id, user_id, role, granted_by, expires_at)"
            " values ($1, $2, $3, $4, $5)",
            [(event_id, user, role, creator, expires) for user, role, expires in permissions],
        )
        await conn.executemany("insert into public.partners (business_id, user_id, role) values ($1, $2, $3)", partners)
    return Scene(
        actor_name=actor,
        kind=kind,
        event_id=event_id,
        business_id=business_id,
        starts_at=starts,
        creator=creator,
        attendee=attendee,
        grantee=grantee,
        newcomer=newcomer,
        actor=actor_id,
        participants=frozenset(participants),
        permission_holders=frozenset(user for user, _, _ in permissions),
        business_ids=(business_id, other_business_id),
        user_ids=tuple(users),
    )


async def clean_up(db: asyncpg.Pool, scene: Scene) -> None:
    """Events, participants, permissions and partners go with their business and users."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("delete from public.businesses where id = any($1::uuid[])", list(scene.business_ids))
        await conn.execute("delete from auth.users where id = any($1::uuid[])", list(scene.user_ids))


@pytest.fixture
async def scenes(db: asyncpg.Pool) -> AsyncIterator[list[Scene]]:
    """Scenes a test arranges; deleted afterwards whatever the outcome."""
    made: list[Scene] = []
    yield made
    for scene in made:
        await clean_up(db, scene)


# Two transports, one shape of answer


@dataclass(frozen=True)
class Outcome:
    status: int  # HTTP status, or the one Envoy maps the gRPC code to (CONTRACT §4)
    body: dict[str, Any]
    text: str  # the raw answer, for failure messages and error reasons


Call = Callable[[str, Scene, str], Awaitable[Outcome]]

GRPC_TO_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
}


def json_transport(api: httpx.AsyncClient) -> Call:
    async def call(action: str, scene: Scene, page_token: str) -> Outcome:
        user = scene.user
        headers = user.headers if user else {}
        base = f"/api/events/{scene.event_id}"
        match action:
            case "get_event":
                response = await api.get(base, headers=headers)
            case "list_events":
                # The arranged event starts long ago: ask for past events too (the default is upcoming).
                query: dict[str, str | int] = {"page_size": 100, "starts_after": LISTED_SINCE.isoformat()}
                if page_token:
                    query["page_token"] = page_token
                response = await api.get("/api/events", params=query, headers=headers)
            case "patch_event":
                response = await api.patch(
                    base, params={"update_mask": "title"}, json={"title": NEW_TITLE}, headers=headers
                )
            case "put_event":
                response = await api.put(base, json=event_body(title=NEW_TITLE), headers=headers)
            case "delete_event":
                response = await api.delete(base, headers=headers)
            case "get_participants":
                response = await api.get(f"{base}/participants", headers=headers)
            case "register":
                response = await api.post(f"{base}/participants", json={}, headers=headers)
            case "register_other":
                body = {"user_id": str(scene.newcomer)}
                response = await api.post(f"{base}/participants", json=body, headers=headers)
            case "update_own":
                body = {"status": "PARTICIPANT_STATUS_INTERESTED"}
                response = await api.put(f"{base}/participants", json=body, headers=headers)
            case "update_other_participant":
                body = {"user_id": str(scene.attendee), "status": "PARTICIPANT_STATUS_ATTENDED"}
                response = await api.put(f"{base}/participants", json=body, headers=headers)
            case "cancel_own":
                response = await api.delete(f"{base}/participants", headers=headers)
            case "cancel_other":
                params = {"user_id": str(scene.attendee)}
                response = await api.delete(f"{base}/participants", params=params, headers=headers)
            case "get_permissions":
                response = await api.get(f"{base}/permissions", headers=headers)
            case "grant_permission":
                body = {"user_id": str(scene.newcomer), "role": "EVENT_ROLE_VIEWER"}
                response = await api.post(f"{base}/permissions", json=body, headers=headers)
            case "revoke_permission":
                response = await api.delete(f"{base}/permissions/{scene.grantee}", headers=headers)
            case _:
                raise AssertionError(f"unknown action {action}")
        try:
            parsed = response.json()
        except ValueError:
            parsed = {}
        return Outcome(response.status_code, parsed if isinstance(parsed, dict) else {}, response.text)

    return call


def _error_text(error: grpc.aio.AioRpcError) -> str:
    """The message plus every ErrorInfo reason from grpc-status-details-bin."""
    parts = [error.details() or ""]
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    parts.append(info.reason)
    return " ".join(parts)


def grpc_transport(channel: grpc.aio.Channel) -> Call:
    stub = events_pb2_grpc.EventsServiceStub(channel)

    async def call(action: str, scene: Scene, page_token: str) -> Outcome:
        user = scene.user
        metadata = user.metadata if user else None
        event_id = str(scene.event_id)
        rpc: Awaitable[Message]
        match action:
            case "get_event":
                rpc = stub.GetEvent(events_pb2.GetEventRequest(id=event_id), metadata=metadata)
            case "list_events":
                request = events_pb2.ListEventsRequest(page_size=100, page_token=page_token)
                request.starts_after.FromDatetime(LISTED_SINCE)
                rpc = stub.ListEvents(request, metadata=metadata)
            case "patch_event":
                update = events_pb2.UpdateEventRequest(
                    event=events_pb2.Event(id=event_id, title=NEW_TITLE),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                )
                rpc = stub.UpdateEvent(update, metadata=metadata)
            case "put_event":
                replacement = json_format.ParseDict(event_body(id=event_id, title=NEW_TITLE), events_pb2.Event())
                rpc = stub.UpdateEvent(events_pb2.UpdateEventRequest(event=replacement), metadata=metadata)
            case "delete_event":
                rpc = stub.DeleteEvent(events_pb2.DeleteEventRequest(id=event_id), metadata=metadata)
            case "get_participants":
                rpc = stub.ListParticipants(events_pb2.ListParticipantsRequest(event_id=event_id), metadata=metadata)
            case "register":
                register = events_pb2.CreateParticipantRequest(event_id=event_id, participant=events_pb2.Participant())
                rpc = stub.CreateParticipant(register, metadata=metadata)
            case "register_other":
                other = events_pb2.Participant(user_id=str(scene.newcomer))
                register = events_pb2.CreateParticipantRequest(event_id=event_id, participant=other)
                rpc = stub.CreateParticipant(register, metadata=metadata)
            case "update_own":
                own = events_pb2.Participant(status=events_pb2.PARTICIPANT_STATUS_INTERESTED)
                change = events_pb2.UpdateParticipantRequest(event_id=event_id, participant=own)
                rpc = stub.UpdateParticipant(change, metadata=metadata)
            case "update_other_participant":
                participant = events_pb2.Participant(
                    user_id=str(scene.attendee), status=events_pb2.PARTICIPANT_STATUS_ATTENDED
                )
                change = events_pb2.UpdateParticipantRequest(event_id=event_id, participant=participant)
                rpc = stub.UpdateParticipant(change, metadata=metadata)
            case "cancel_own":
                rpc = stub.DeleteParticipant(events_pb2.DeleteParticipantRequest(event_id=event_id), metadata=metadata)
            case "cancel_other":
                cancel = events_pb2.DeleteParticipantRequest(event_id=event_id, user_id=str(scene.attendee))
                rpc = stub.DeleteParticipant(cancel, metadata=metadata)
            case "get_permissions":
                rpc = stub.ListPermissions(events_pb2.ListPermissionsRequest(event_id=event_id), metadata=metadata)
            case "grant_permission":
                permission = events_pb2.Permission(user_id=str(scene.newcomer), role=events_pb2.EVENT_ROLE_VIEWER)
                grant = events_pb2.CreatePermissionRequest(event_id=event_id, permission=permission)
                rpc = stub.CreatePermission(grant, metadata=metadata)
            case "revoke_permission":
                revoke = events_pb2.DeletePermissionRequest(event_id=event_id, user_id=str(scene.grantee))
                rpc = stub.DeletePermission(revoke, metadata=metadata)
            case _:
                raise AssertionError(f"unknown action {action}")
        try:
            reply = await rpc
        except grpc.aio.AioRpcError as error:
            status = GRPC_TO_HTTP.get(error.code(), 500)
            return Outcome(status, {}, f"{error.code().name}: {_error_text(error)}")
        body = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        return Outcome(200, body, str(body))

    return call


# Running one cell


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _is_listed(call: Call, scene: Scene) -> bool:
    """Page through the listing (soonest first) until the event shows up or the pages pass its start."""
    token = ""
    while True:
        outcome = await call("list_events", scene, token)
        assert outcome.status == 200, outcome.text
        events = outcome.body.get("events", [])
        if any(event["id"] == str(scene.event_id) for event in events):
            return True
        token = outcome.body.get("next_page_token", "")
        if not token or (events and _parse_time(events[-1]["starts_at"]) > scene.starts_at):
            return False


async def _participant_status(db: asyncpg.Pool, scene: Scene, user: uuid.UUID | None) -> str | None:
    if user is None:
        return None
    status: str | None = await db.fetchval(
        "select status from public.event_participants where event_id = $1 and user_id = $2", scene.event_id, user
    )
    return status


async def _has_permission(db: asyncpg.Pool, scene: Scene, user: uuid.UUID) -> bool:
    found: bool = await db.fetchval(
        "select exists (select 1 from public.event_permissions where event_id = $1 and user_id = $2)",
        scene.event_id,
        user,
    )
    return found


async def run_cell(db: asyncpg.Pool, call: Call, scene: Scene, action: str, want: Expect) -> None:
    """Make the request, check its status, then check that it did exactly what the status says."""
    cell = f"{scene.actor_name}-{scene.kind}-{action}"
    if action == "list_events":
        assert (LISTED if await _is_listed(call, scene) else ABSENT) == want, cell
        return
    outcome = await call(action, scene, "")
    status = 200 if want in (ALL, OWN) else want
    assert outcome.status == status, f"{cell}: expected {status}, got {outcome.status}: {outcome.text}"
    if status == 400:
        assert "REGISTRATION_CLOSED" in outcome.text, f"{cell}: {outcome.text}"
    done = outcome.status == 200
    was_registered = scene.actor in scene.participants

    match action:
        case "get_event" if done:
            assert outcome.body["id"] == str(scene.event_id), cell
        case "patch_event" | "put_event":
            title = await db.fetchval("select title from public.events where id = $1", scene.event_id)
            assert (title == NEW_TITLE) == done, f"{cell}: title is now {title!r}"
        case "delete_event":
            exists = await db.fetchval("select exists (select 1 from public.events where id = $1)", scene.event_id)
            assert exists != done, f"{cell}: event exists = {exists}"
        case "get_participants":
            seen = {uuid.UUID(p["user_id"]) for p in outcome.body.get("participants", [])}
            everyone = set(scene.participants)
            assert seen == (everyone if want == ALL else everyone & {scene.actor}), f"{cell}: saw {seen}"
        case "register" if scene.actor is not None:
            registered = await _participant_status(db, scene, scene.actor)
            assert registered == ("going" if done or was_registered else None), f"{cell}: {registered}"
        case "register_other":
            newcomer = await _participant_status(db, scene, scene.newcomer)
            assert newcomer == ("going" if done else None), f"{cell}: newcomer is {newcomer}"
        case "update_own" | "cancel_own":
            own = await _participant_status(db, scene, scene.actor)
            changed = "interested" if action == "update_own" else "cancelled"
            assert own == (changed if done else "going" if was_registered else None), f"{cell}: {own}"
        case "update_other_participant" | "cancel_other":
            other = await _participant_status(db, scene, scene.attendee)
            changed = "attended" if action == "update_other_participant" else "cancelled"
            assert other == (changed if done else "going"), f"{cell}: attendee is {other}"
        case "get_permissions" if done:
            holders = {uuid.UUID(p["user_id"]) for p in outcome.body.get("permissions", [])}
            assert holders == set(scene.permission_holders), f"{cell}: listed {holders}"
        case "grant_permission":
            assert await _has_permission(db, scene, scene.newcomer) == done, cell
        case "revoke_permission":
            assert await _has_permission(db, scene, scene.grantee) != done, cell


def _cells() -> list[Any]:
    return [
        pytest.param(actor, kind, action, id=f"{actor}-{kind}-{action}")
        for actor in ACTORS
        for kind in KINDS
        for action in ACTIONS
    ]


# Listing checks give the event a start long ago, so the first page of the listing (soonest first) reaches it.
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)
LISTED_SINCE = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("actor", "kind", "action"), _cells())
async def test_json_matrix(
    db: asyncpg.Pool, api: httpx.AsyncClient, scenes: list[Scene], actor: str, kind: str, action: str
) -> None:
    scene = await arrange(db, actor, kind, LONG_AGO if action == "list_events" else None)
    scenes.append(scene)
    await run_cell(db, json_transport(api), scene, action, expected(actor, kind, action))


# Native gRPC through the gateway answers with the codes behind the same statuses (CONTRACT §4):
# a cross-section with every code the matrix uses.
GRPC_CELLS: list[tuple[str, str, str]] = [
    ("anonymous", "public", "get_event"),  # OK, no token needed
    ("anonymous", "private", "get_event"),  # NOT_FOUND
    ("anonymous", "public", "patch_event"),  # UNAUTHENTICATED from Envoy (writes need a token)
    ("anonymous", "draft", "get_participants"),  # UNAUTHENTICATED from the service
    ("stranger", "public", "list_events"),
    ("stranger", "draft", "list_events"),
    ("stranger", "private", "get_event"),  # NOT_FOUND
    ("stranger", "public", "patch_event"),  # PERMISSION_DENIED
    ("expired", "draft", "patch_event"),  # NOT_FOUND
    ("other_business_partner", "private", "grant_permission"),  # NOT_FOUND
    ("participant", "private", "get_event"),
    ("participant", "private", "get_participants"),  # only their own
    ("participant", "public", "register"),  # ALREADY_EXISTS
    ("participant", "draft", "register"),  # FAILED_PRECONDITION REGISTRATION_CLOSED
    ("participant", "draft", "cancel_own"),
    ("participant", "draft", "update_own"),  # FAILED_PRECONDITION REGISTRATION_CLOSED
    ("stranger", "public", "update_own"),  # NOT_FOUND: no registration
    ("business_viewer", "private", "register_other"),  # PERMISSION_DENIED
    ("business_editor", "draft", "register_other"),
    ("editor", "public", "put_event"),
    ("editor", "unlisted", "cancel_other"),
    ("viewer", "public", "cancel_other"),  # NOT_FOUND: another's registration is not theirs to see
    ("viewer", "private", "patch_event"),  # PERMISSION_DENIED
    ("business_viewer", "public", "get_permissions"),  # PERMISSION_DENIED
    ("editor", "private", "update_other_participant"),
    ("editor", "draft", "delete_event"),  # PERMISSION_DENIED
    ("business_editor", "unlisted", "get_participants"),  # everyone
    ("owner", "draft", "grant_permission"),
    ("business_owner", "private", "revoke_permission"),
    ("creator", "private", "delete_event"),
    ("admin", "draft", "delete_event"),
]


@pytest.mark.parametrize(("actor", "kind", "action"), [pytest.param(*cell, id="-".join(cell)) for cell in GRPC_CELLS])
async def test_grpc_matrix_cross_section(
    db: asyncpg.Pool,
    gateway_channel: grpc.aio.Channel,
    scenes: list[Scene],
    actor: str,
    kind: str,
    action: str,
) -> None:
    scene = await arrange(db, actor, kind, LONG_AGO if action == "list_events" else None)
    scenes.append(scene)
    await run_cell(db, grpc_transport(gateway_channel), scene, action, expected(actor, kind, action))


@pytest.mark.parametrize("actor", list(ACTORS))
async def test_create_event_for_a_business(
    db: asyncpg.Pool, api: httpx.AsyncClient, scenes: list[Scene], actor: str
) -> None:
    """Creating an event for a business takes owner/editor partnership of it (or platform admin)."""
    scene = await arrange(db, actor, "public")
    scenes.append(scene)
    user = scene.user
    body = event_body(business_id=str(scene.business_id), title=f"Created by {actor}")
    response = await api.post("/api/events", json=body, headers=user.headers if user else {})
    assert response.status_code == CREATE_FOR_BUSINESS[actor], response.text
    count = await db.fetchval(
        "select count(*) from public.events where business_id = $1 and title = $2", scene.business_id, body["title"]
    )
    assert count == (1 if response.status_code == 200 else 0)
    if response.status_code == 200:
        assert response.json()["created_by"] == str(scene.actor)
        assert response.json()["business_id"] == str(scene.business_id)


async def test_service_role_may_do_everything(db: asyncpg.Pool, api: httpx.AsyncClient, scenes: list[Scene]) -> None:
    """The backend's own key (CONTRACT §3) acts on a draft it has no tie to; it names users explicitly."""
    scene = await arrange(db, "anonymous", "draft")
    scenes.append(scene)
    headers = {"authorization": f"Bearer {service_role_token()}"}
    base = f"/api/events/{scene.event_id}"
    attendee, newcomer = str(scene.attendee), str(scene.newcomer)

    assert (await api.get(base, headers=headers)).status_code == 200
    patched = await api.patch(base, params={"update_mask": "title"}, json={"title": NEW_TITLE}, headers=headers)
    assert patched.status_code == 200, patched.text
    listed = await api.get(f"{base}/participants", headers=headers)
    assert {p["user_id"] for p in listed.json()["participants"]} == {attendee}
    added = await api.post(f"{base}/participants", json={"user_id": newcomer}, headers=headers)
    assert added.status_code == 200, added.text
    cancelled = await api.delete(f"{base}/participants", params={"user_id": attendee}, headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    holders = await api.get(f"{base}/permissions", headers=headers)
    assert {p["user_id"] for p in holders.json()["permissions"]} == {str(scene.grantee)}
    granted = await api.post(
        f"{base}/permissions", json={"user_id": newcomer, "role": "EVENT_ROLE_EDITOR"}, headers=headers
    )
    assert granted.status_code == 200, granted.text
    assert (await api.delete(f"{base}/permissions/{scene.grantee}", headers=headers)).status_code == 200
    assert (await api.delete(base, headers=headers)).status_code == 200
    assert await db.fetchval("select count(*) from public.events where id = $1", scene.event_id) == 0
