"""Phase 2 rush: everyone buying ONE ticket type at once (a single hot row), and the ceiling for it.

* JSON via gateway: one sale per request slot, each by a new buyer: `POST /api/orders` (reserve 1 ticket:
  the ticket type's row lock, a hold) then `POST /api/orders/{id}:checkout` (free: paid at once, the
  ticket issued), so req/s is tickets SOLD per second, two HTTP requests each, and the latency is the
  whole sale's.
* SQL: the bare ceiling of a single hot row, `UPDATE ticket_types SET sold = sold + 1 WHERE id = $1 AND
  sold < inventory` alone, with as many requests in flight and as many connections as the service's pool.

A fresh ticket type per route (and round), with room for every sale of the run.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx

from bench.harness import TokenMinter, bench_user_id, create_users, run_with_pool, seed_events
from bench.load import RequestFailed, SqlWorkload, Workload
from bench.phase0 import sql_pool_size
from bench.runner import Context, Route, Scenario
from localplus_common.db import Database

# Distinct buyers made ready per route: enough for this many sales per second over warm-up + run.
SALE_RATE_CEILING = 2_000
INVENTORY = 1_000_000  # the most a ticket type may have
# Buyers' bench user indexes start here, clear of the other scenarios' (which count from 1).
FIRST_BUYER = 1 << 40
CEILING = "update public.ticket_types set sold = sold + 1 where id = $1 and sold < inventory"


@dataclass
class SaleWorkload(Workload):
    """Reserve one ticket, then check the (free) order out; items are the buyers' tokens."""

    base_url: str
    ticket_type_id: str
    items: list[str]
    unique: bool = True

    def with_items(self, items: Any) -> Workload:
        return replace(self, items=list(items))

    def describe(self) -> str:
        return "aiohttp"

    async def open(self, concurrency: int) -> tuple[Callable[[Any], Awaitable[None]], Callable[[], Awaitable[None]]]:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency)
        session = aiohttp.ClientSession(self.base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=30))
        # One request id for all: it is unique per buyer, and every buyer is new.
        reserve = json.dumps({"request_id": "rush", "items": [{"ticket_type_id": self.ticket_type_id, "quantity": 1}]})

        async def post(path: str, body: str, token: str) -> bytes:
            headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
            async with session.post(path, data=body.encode(), headers=headers) as response:
                payload = await response.read()
                if response.status != 200:
                    raise RequestFailed(f"{path}: HTTP {response.status}: {payload[:200].decode(errors='replace')}")
                return payload

        async def sell(token: str) -> None:
            order_id = json.loads(await post("/api/orders", reserve, token))["id"]
            paid = await post(f"/api/orders/{order_id}:checkout", "{}", token)
            if b'"ORDER_STATUS_PAID"' not in paid:
                raise RequestFailed(f"checkout did not pay: {paid[:200].decode(errors='replace')}")

        return sell, session.close


@dataclass
class CeilingSql(SqlWorkload):
    async def query(self, db: Database, item: uuid.UUID) -> None:
        if await db.pool.execute(CEILING, item) != "UPDATE 1":
            raise RequestFailed("the ceiling's row ran out of inventory")


class Rush(Scenario):
    name = "rush"
    description = (
        "ONE free ticket type, every sale a new buyer: reserve + checkout (2 requests; req/s = tickets sold/s); "
        "SQL: the bare hot-row UPDATE ... SET sold = sold + 1"
    )
    routes = (Route.JSON_GATEWAY, Route.SQL)
    service = "ticketing"

    def __init__(self) -> None:
        self._minter: TokenMinter | None = None
        self._event: uuid.UUID | None = None
        self._next_buyer = FIRST_BUYER

    def route_title(self, route: Route) -> str:
        return "SQL: bare UPDATE" if route is Route.SQL else route.title

    def seed(self, context: Context) -> None:
        self._minter = TokenMinter(context.endpoints.jwt_secret)
        owner = bench_user_id(0)

        async def seed(pool: asyncpg.Pool) -> uuid.UUID:
            await create_users(pool, 0, 1)
            (event,) = await seed_events(pool, 1, owner, title="Rush event")
            return event

        self._event = run_with_pool(context.endpoints.database_url, seed)

    def _ticket_type(self, context: Context) -> uuid.UUID:
        """A fresh free ticket type of the rush event (so no route inherits the sales of the one before)."""
        ticket_type: uuid.UUID = run_with_pool(
            context.endpoints.database_url,
            lambda pool: pool.fetchval(
                "insert into public.ticket_types (event_id, name, price_minor, currency, inventory) "
                "values ($1, 'Rush', 0, 'THB', $2) returning id",
                self._event,
                INVENTORY,
            ),
        )
        return ticket_type

    def _buyers(self, context: Context, count: int) -> list[str]:
        assert self._minter is not None
        first = self._next_buyer
        self._next_buyer += count
        run_with_pool(context.endpoints.database_url, lambda pool: create_users(pool, first, count))
        return [self._minter.token(first + n) for n in range(count)]

    def check(self, context: Context) -> None:
        ticket_type = self._ticket_type(context)
        (token,) = self._buyers(context, 1)
        with httpx.Client(base_url=context.endpoints.gateway_url, timeout=30) as client:
            headers = {"authorization": f"Bearer {token}"}
            body = {"request_id": "rush", "items": [{"ticket_type_id": str(ticket_type), "quantity": 1}]}
            reserved = client.post("/api/orders", json=body, headers=headers)
            assert reserved.status_code == 200, reserved.text
            paid = client.post(f"/api/orders/{reserved.json()['id']}:checkout", json={}, headers=headers)
            assert paid.status_code == 200 and paid.json()["order"]["status"] == "ORDER_STATUS_PAID", paid.text
        ceiling = run_with_pool(context.endpoints.database_url, lambda pool: pool.execute(CEILING, ticket_type))
        assert ceiling == "UPDATE 1", ceiling

    def workload(self, route: Route, context: Context) -> Workload:
        ticket_type = self._ticket_type(context)
        endpoints = context.endpoints
        if route is Route.SQL:
            return CeilingSql(endpoints.database_url, [ticket_type], pool_size=sql_pool_size(context))
        args = context.args
        buyers = self._buyers(context, math.ceil(SALE_RATE_CEILING * (args.warmup + args.duration + 1)))
        return SaleWorkload(endpoints.gateway_url, str(ticket_type), buyers)


def scenarios() -> list[Scenario]:
    return [Rush()]
