"""Phase 1 search in a synthetic city of 100,000 events (`bench.city`; `--city-events` for another
size): p50/p95 latency of the typical searches at the service (direct gRPC), through the gateway
(JSON) and as the bare SQL, one request at a time; and which indexes each search's plan uses."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc

from bench.city import seed_city
from bench.load import GrpcWorkload, HttpWorkload, SqlWorkload, Workload
from bench.runner import Context, Route, Scenario
from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_common.auth import ANONYMOUS
from localplus_common.db import Database, current_identity
from localplus_events import discovery, mapping

CITY = "bench-city"
SERVICE = "/localplus.events.v1.EventsService"
CENTRE = "13.7563,100.5018"
NEXT_WEEK = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=7)

# name: (description, query parameters); all within the synthetic city.
SEARCHES: dict[str, tuple[str, dict[str, str]]] = {
    "s-text": ("q=jaz festval (typos), by relevance", {"q": "jaz festval"}),
    "s-thai": ("q=ดนตรีแจ๊ส (Thai, no spaces), by relevance", {"q": "ดนตรีแจ๊ส"}),
    "s-textgeo": ("q=yoga within 5 km of the centre", {"q": "yoga", "near": CENTRE, "radius_km": "5"}),
    "s-catdate": (
        "category=music in the week after next, by start",
        {
            "category": "music",
            "starts_after": NEXT_WEEK.isoformat(),
            "starts_before": (NEXT_WEEK + timedelta(days=7)).isoformat(),
        },
    ),
    "s-near": ("near me: within 3 km, nearest first", {"near": CENTRE, "radius_km": "3", "order_by": "distance"}),
}


def _request(params: dict[str, str]) -> events_pb2.ListEventsRequest:
    request = events_pb2.ListEventsRequest(city=CITY, page_size=20)
    for key, value in params.items():
        if key in ("starts_after", "starts_before"):
            getattr(request, key).FromDatetime(datetime.fromisoformat(value))
        elif key == "radius_km":
            request.radius_km = float(value)
        else:
            setattr(request, key, value)
    return request


_SEEDED: list[bool] = []


def _city(context: Context) -> None:
    """Seed the city once per run (about half a minute for 100,000 events)."""
    if not _SEEDED:
        count = context.args.city_events
        print(f"  seeding {count:,} events in a synthetic city ...", flush=True)
        began = time.monotonic()
        asyncio.run(seed_city(context.endpoints.database_url, count, CITY))
        print(f"  seeded in {time.monotonic() - began:.0f} s", flush=True)
        _SEEDED.append(True)


@dataclass
class SearchSql(SqlWorkload):
    async def query(self, db: Database, item: discovery.SearchQuery) -> None:
        current_identity.set(ANONYMOUS)
        await discovery.search(db, item)


INDEX_NAME = re.compile(r"(?:Index Scan|Index Only Scan|Bitmap Index Scan) (?:using|on) (\w+)")


async def _indexes_used(database_url: str, request: events_pb2.ListEventsRequest) -> list[str]:
    """Index names in the plan, including the statement inside listed_event_candidates()."""
    plan = discovery.plan_search(mapping.search_query(request))
    conn = await asyncpg.connect(database_url)
    notices: list[str] = []
    conn.add_log_listener(lambda _conn, message: notices.append(message.message))
    try:
        # auto_explain reports nested statements (the candidates function) to this client.
        await conn.execute(
            "load 'auto_explain'; set auto_explain.log_min_duration = 0; "
            "set auto_explain.log_nested_statements = on; set auto_explain.log_level = notice; "
            "set client_min_messages = notice"
        )
        async with conn.transaction():
            await conn.execute(
                "select set_config('role', 'anon', true), set_config('request.jwt.claims', $1, true)",
                ANONYMOUS.claims_json,
            )
            await conn.fetch(plan.query, *plan.params)
    finally:
        await conn.close()
    return sorted({name for text in notices for name in INDEX_NAME.findall(text)})


class Search(Scenario):
    routes = (Route.GRPC_DIRECT, Route.JSON_GATEWAY, Route.SQL)
    concurrency = 1  # latency of one search at a time, not throughput

    def __init__(self, name: str, description: str, params: dict[str, str]) -> None:
        self.name = name
        self.description = description
        self.params = params
        self.request = _request(params)

    def seed(self, context: Context) -> None:
        _city(context)

    def check(self, context: Context) -> None:
        with grpc.insecure_channel(context.endpoints.events_addr) as channel:
            found = events_pb2_grpc.EventsServiceStub(channel).ListEvents(self.request)
        assert found.events, f"{self.name} finds nothing; the benchmark would measure an empty search"
        indexes = asyncio.run(_indexes_used(context.endpoints.database_url, self.request))
        print(f"  {self.name:<9} {len(found.events)} results; indexes: {', '.join(indexes) or 'none'}", flush=True)

    def workload(self, route: Route, context: Context) -> Workload:
        endpoints = context.endpoints
        body = self.request.SerializeToString()
        if route is Route.JSON_GATEWAY:
            path = "/api/events?" + urllib.parse.urlencode({"city": CITY, "page_size": "20", **self.params})
            return HttpWorkload(endpoints.gateway_url, "GET", [(path, "")])
        if route is Route.SQL:
            return SearchSql(endpoints.database_url, [mapping.search_query(self.request)], pool_size=1)
        return GrpcWorkload(endpoints.events_addr, f"{SERVICE}/ListEvents", [(body, "")])


def scenarios() -> list[Scenario]:
    return [Search(name, description, params) for name, (description, params) in SEARCHES.items()]
