"""Phase 0 scenarios: read one event, list events, register for an event.

Each goes four ways: JSON through Envoy, native gRPC straight to the events service, native gRPC
through Envoy, and without gRPC: the service's own use case called directly, so the very statements
it runs, in the same request transaction (`Database.run`: begin, set_config role and claims, the
queries, commit), on an asyncpg pool.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import httpx

from bench.harness import TokenMinter, bench_user_id, create_users, run_with_pool, seed_events
from bench.load import GrpcWorkload, HttpWorkload, SqlWorkload, Workload
from bench.runner import Context, Route, Scenario
from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.auth import ANONYMOUS, Identity
from localplus_common.config import Settings
from localplus_common.db import Database, current_identity
from localplus_common.paging import page_request
from localplus_events import discovery, events, participants

SERVICE = "/localplus.events.v1.EventsService"
PUBLISHED_EVENTS = 1_000
PAGE_SIZE = 20
# The bare-SQL route gets as many connections in all as the service's pool has (DB_POOL_MAX).
SERVICE_POOL_SIZE = Settings.from_env().db_pool_max
# Distinct registrations made ready per route: enough for this many per second over warm-up + run.
REGISTER_RATE_CEILING = 4_000


@dataclass
class Seeded:
    owner: uuid.UUID
    event_ids: list[uuid.UUID]
    next_user: int = 1  # bench user indexes handed out so far (0 is the owner)


_SEEDED: dict[str, Seeded] = {}


def published_events(context: Context) -> Seeded:
    """1,000 published public events with room for everybody, created once per run."""
    if "events" not in _SEEDED:
        owner = bench_user_id(0)

        async def seed(pool: asyncpg.Pool) -> list[uuid.UUID]:
            await create_users(pool, 0, 1)
            ids = await seed_events(pool, PUBLISHED_EVENTS, owner, capacity=1_000_000)
            await pool.execute("analyze")
            return ids

        _SEEDED["events"] = Seeded(owner, run_with_pool(context.endpoints.database_url, seed))
    return _SEEDED["events"]


def sql_pool_size(context: Context) -> int:
    return max(1, SERVICE_POOL_SIZE // max(1, context.args.sql_procs))


# Reading one event


@dataclass
class GetEventSql(SqlWorkload):
    async def query(self, db: Database, item: uuid.UUID) -> None:
        current_identity.set(ANONYMOUS)
        await events.get_event(db, item)


class GetEvent(Scenario):
    name = "get"
    description = "GET /api/events/{id}, anonymous, over 1,000 published events"

    def seed(self, context: Context) -> None:
        published_events(context)

    def check(self, context: Context) -> None:
        event_id = str(published_events(context).event_ids[0])
        with httpx.Client(base_url=context.endpoints.gateway_url) as client:
            response = client.get(f"/api/events/{event_id}")
            assert response.status_code == 200 and response.json()["id"] == event_id, response.text
        with grpc.insecure_channel(context.endpoints.events_addr) as channel:
            event = events_pb2_grpc.EventsServiceStub(channel).GetEvent(events_pb2.GetEventRequest(id=event_id))
            assert event.id == event_id

    def workload(self, route: Route, context: Context) -> Workload:
        ids = published_events(context).event_ids
        endpoints = context.endpoints
        if route is Route.JSON_GATEWAY:
            return HttpWorkload(endpoints.gateway_url, "GET", [(f"/api/events/{i}", "") for i in ids])
        if route is Route.SQL:
            return GetEventSql(endpoints.database_url, ids, pool_size=sql_pool_size(context))
        requests = [(events_pb2.GetEventRequest(id=str(i)).SerializeToString(), "") for i in ids]
        target = endpoints.events_addr if route is Route.GRPC_DIRECT else endpoints.gateway_addr
        return GrpcWorkload(target, f"{SERVICE}/GetEvent", requests)


# Listing events


@dataclass
class ListEventsSql(SqlWorkload):
    async def query(self, db: Database, item: str) -> None:
        current_identity.set(ANONYMOUS)
        page = page_request(events_pb2.ListEventsRequest(page_size=PAGE_SIZE, page_token=item))
        await discovery.search(db, discovery.SearchQuery(page=page))


class ListEvents(Scenario):
    name = "list"
    description = "GET /api/events?page_size=20, anonymous, cycling through all 50 pages of 1,000 events"

    def __init__(self) -> None:
        self._tokens: list[str] = []

    def seed(self, context: Context) -> None:
        published_events(context)
        # Walk every page once to collect the page tokens (the first page has none).
        tokens = [""]
        with grpc.insecure_channel(context.endpoints.events_addr) as channel:
            stub = events_pb2_grpc.EventsServiceStub(channel)
            while True:
                page = stub.ListEvents(events_pb2.ListEventsRequest(page_size=PAGE_SIZE, page_token=tokens[-1]))
                assert len(page.events) == PAGE_SIZE or not page.next_page_token
                if not page.next_page_token:
                    break
                tokens.append(page.next_page_token)
        self._tokens = tokens

    def check(self, context: Context) -> None:
        with httpx.Client(base_url=context.endpoints.gateway_url) as client:
            response = client.get(self._json_path(self._tokens[1]))
            assert response.status_code == 200 and len(response.json()["events"]) == PAGE_SIZE, response.text

    @staticmethod
    def _json_path(token: str) -> str:
        query = {"page_size": str(PAGE_SIZE), **({"page_token": token} if token else {})}
        return f"/api/events?{urllib.parse.urlencode(query)}"

    def workload(self, route: Route, context: Context) -> Workload:
        endpoints = context.endpoints
        if route is Route.JSON_GATEWAY:
            return HttpWorkload(endpoints.gateway_url, "GET", [(self._json_path(t), "") for t in self._tokens])
        if route is Route.SQL:
            return ListEventsSql(endpoints.database_url, self._tokens, pool_size=sql_pool_size(context))
        requests = [
            (events_pb2.ListEventsRequest(page_size=PAGE_SIZE, page_token=t).SerializeToString(), "")
            for t in self._tokens
        ]
        target = endpoints.events_addr if route is Route.GRPC_DIRECT else endpoints.gateway_addr
        return GrpcWorkload(target, f"{SERVICE}/ListEvents", requests)


# Registering


@dataclass
class RegisterSql(SqlWorkload):
    async def query(self, db: Database, item: tuple[uuid.UUID, Identity]) -> None:
        event_id, identity = item
        # A signed-in user registering themselves, going.
        current_identity.set(identity)
        await participants.create_participant(db, event_id, None, participants.ParticipantChanges())


class Register(Scenario):
    """POST /api/events/{id}/participants: every request a different signed-in user, spread over events."""

    name = "register"
    description = "POST /api/events/{id}/participants, each request a new user, spread over 1,000 events"

    def __init__(self, *, hot: bool = False) -> None:
        self.hot = hot
        if hot:
            self.name = "reg-hot"
            self.description = "the same, but all on ONE event per route: a single hot row, and a growing one"
        self._minter: TokenMinter | None = None

    def seed(self, context: Context) -> None:
        published_events(context)
        self._minter = TokenMinter(context.endpoints.jwt_secret)

    def _budget(self, context: Context) -> int:
        args = context.args
        return math.ceil(REGISTER_RATE_CEILING * (args.warmup + args.duration + 1))

    def workload(self, route: Route, context: Context) -> Workload:
        seeded = published_events(context)
        assert self._minter is not None
        count = self._budget(context)
        first = seeded.next_user
        seeded.next_user += count
        endpoints = context.endpoints
        run_with_pool(endpoints.database_url, lambda pool: create_users(pool, first, count))
        if self.hot:
            # A fresh event per route, so no route inherits the participants of the one before.
            events = run_with_pool(
                endpoints.database_url,
                lambda pool: seed_events(pool, 1, seeded.owner, capacity=1_000_000, title="Hot event"),
            )
        else:
            events = seeded.event_ids
        # Request n: user first + n on event n mod len(events).
        pairs = [(events[n % len(events)], first + n) for n in range(count)]
        if route is Route.SQL:
            items: Sequence[Any] = [(event, self._minter.identity(user)) for event, user in pairs]
            return RegisterSql(endpoints.database_url, items, unique=True, pool_size=sql_pool_size(context))
        if route is Route.JSON_GATEWAY:
            paths = [(f"/api/events/{event}/participants", self._minter.token(user)) for event, user in pairs]
            return HttpWorkload(endpoints.gateway_url, "POST", paths, body=json.dumps({}), unique=True)
        requests = [
            (events_pb2.CreateParticipantRequest(event_id=str(event)).SerializeToString(), self._minter.token(user))
            for event, user in pairs
        ]
        target = endpoints.events_addr if route is Route.GRPC_DIRECT else endpoints.gateway_addr
        return GrpcWorkload(target, f"{SERVICE}/CreateParticipant", requests, unique=True)


def scenarios(hot: bool = False) -> list[Scenario]:
    chosen: list[Scenario] = [GetEvent(), ListEvents(), Register()]
    if hot:
        chosen.append(Register(hot=True))
    return chosen
