"""Rush: 2,000 buyers at once for ONE ticket type, in the Phase 2 shape (the type's inventory in ONE row)
and in buckets (the migration's 16 rows that buyers draw from), and the bare ceiling of one row.

* JSON via gateway: one sale per request slot, each by a new buyer: `POST /api/orders` (reserve 1 ticket:
  a hold, from a bucket) then `POST /api/orders/{id}:checkout` (free: paid at once, the ticket issued), so
  req/s is tickets SOLD per second, two HTTP requests each, and the latency is the whole sale's.
  `rush` splits the type into 1 bucket (every buyer queues on one row lock, as in Phase 2), `rush-b`
  keeps the 16 buckets every type gets.
* SQL, `rush`: the bare ceiling of a single hot row, `UPDATE ... SET taken = taken + 1 WHERE ... AND taken <
  capacity` alone on the 1-bucket type's one row (Phase 2's `sold < inventory`); `rush-b`: the same bare draw
  from the type's buckets (one row of 16 nobody else is drawing from: FOR UPDATE SKIP LOCKED). As many
  connections as the service's pool.

A fresh ticket type per route (and round), with room for every sale of the run; after each route the
type's counts are checked in SQL (never more sold and held than its inventory, the buckets' counts
matching the holds and sales, one ticket per sale).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx

from bench.harness import TokenMinter, bench_user_id, create_users, run_with_pool, seed_events
from bench.load import RequestFailed, SqlWorkload, Workload
from bench.phase0 import sql_pool_size
from bench.runner import Context, Report, Route, Scenario
from localplus_common.db import Database

# Distinct buyers made ready per route: enough for this many sales per second over warm-up + run.
SALE_RATE_CEILING = 1_000
BUYERS_AT_ONCE = 2_000
# With 2,000 in flight a sale through the gateway takes tens of seconds on 2 cores (2,000 / the rate):
# the warm-up outlasts a round of them, so the window sees the steady state.
WARMUP, DURATION = 45.0, 15.0
INVENTORY = 1_000_000  # the most a ticket type may have
# Buyers' bench user indexes start here, clear of the other scenarios' (which count from 1).
FIRST_BUYER = 1 << 40
CEILING = (
    "update public.ticket_type_buckets set taken = taken + 1 where ticket_type_id = $1 and bucket = 0"
    " and taken < capacity"
)
# The pick is a materialized CTE: as a subquery in FROM the planner may put it on the inner side of a
# nested loop and run it (and random()) once per bucket, updating several ("UPDATE 3").
BUCKET_DRAW = """
with free as materialized (
  select bucket from public.ticket_type_buckets
   where ticket_type_id = $1 and taken < capacity
   order by bucket # (random() * 65536)::integer limit 1 for update skip locked
)
update public.ticket_type_buckets b set taken = b.taken + 1
  from free
 where b.ticket_type_id = $1 and b.bucket = free.bucket
"""
# What a type's rows say after a run: `oversold` must be 0, `mismatch` (buckets against holds and
# sales, tickets against sales) too.
COUNTS = """
select b.sold, h.held, t.inventory,
       greatest(0, b.sold + h.live - t.inventory) + b.over as oversold,
       abs(b.taken - b.sold - h.held) + abs(b.capacity - t.inventory) + abs(k.tickets - b.sold) as mismatch
  from public.ticket_types t,
       lateral (select coalesce(sum(quantity), 0) as held,
                       coalesce(sum(quantity) filter (where expires_at > now()), 0) as live
                  from public.ticket_holds where ticket_type_id = t.id) h,
       lateral (select sum(taken) as taken, sum(capacity) as capacity, sum(sold) as sold,
                       sum(greatest(0, taken - capacity)) as over
                  from public.ticket_type_buckets where ticket_type_id = t.id) b,
       lateral (select count(*) as tickets from public.tickets where ticket_type_id = t.id) k
 where t.id = $1
"""


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
        session = aiohttp.ClientSession(self.base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=120))
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
class BareSql(SqlWorkload):
    """One bare UPDATE per request (`statement`, on the ticket type `item`), in autocommit."""

    statement: str = CEILING

    async def query(self, db: Database, item: uuid.UUID) -> None:
        if await db.pool.execute(self.statement, item) != "UPDATE 1":
            raise RequestFailed("the row ran out of inventory")


class Rush(Scenario):
    routes = (Route.JSON_GATEWAY, Route.SQL)
    service = "ticketing"
    concurrency = BUYERS_AT_ONCE
    warmup, duration = WARMUP, DURATION
    group = "rush"

    def __init__(self, buckets: int) -> None:
        # 1: the Phase 2 shape, the type's inventory in one row; more: the bucket design.
        self.buckets = buckets
        self.name = "rush" if buckets == 1 else "rush-b"
        shape = "ONE row (1 bucket, Phase 2's hot row)" if buckets == 1 else f"{buckets} buckets"
        bare = "the bare hot-row UPDATE ... SET taken = taken + 1" if buckets == 1 else "the bare bucket draw"
        self.description = (
            f"ONE free ticket type in {shape}, every sale a new buyer: reserve + checkout (2 requests; req/s = "
            f"tickets sold/s); SQL: {bare}"
        )
        self._minter: TokenMinter | None = None
        self._event: uuid.UUID | None = None
        self._next_buyer = FIRST_BUYER + (buckets << 32)
        self._types: dict[Route, uuid.UUID] = {}
        self._started: dict[Route, float] = {}

    def route_title(self, route: Route) -> str:
        if route is Route.SQL:
            return "SQL: bare UPDATE" if self.buckets == 1 else "SQL: bucket draw"
        return "JSON: 1 row" if self.buckets == 1 else f"JSON: {self.buckets} buckets"

    def seed(self, context: Context) -> None:
        self._minter = TokenMinter(context.endpoints.jwt_secret)
        owner = bench_user_id(0)

        async def seed(pool: asyncpg.Pool) -> uuid.UUID:
            await create_users(pool, 0, 1)
            (event,) = await seed_events(pool, 1, owner, title="Rush event")
            return event

        self._event = run_with_pool(context.endpoints.database_url, seed)

    def _ticket_type(self, context: Context) -> uuid.UUID:
        """A fresh free ticket type of the rush event (so no route inherits the sales of the one before),
        in this scenario's number of buckets."""

        async def create(pool: asyncpg.Pool) -> uuid.UUID:
            ticket_type: uuid.UUID = await pool.fetchval(
                "insert into public.ticket_types (event_id, name, price_minor, currency, inventory) "
                "values ($1, 'Rush', 0, 'THB', $2) returning id",
                self._event,
                INVENTORY,
            )
            await pool.execute("select localplus_private.split_ticket_type($1, $2)", ticket_type, self.buckets)
            return ticket_type

        ticket_type: uuid.UUID = run_with_pool(context.endpoints.database_url, create)
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
        self._types[Route.JSON_GATEWAY] = ticket_type
        assert self.verify(Route.JSON_GATEWAY, context).startswith("oversold 0")
        bare = run_with_pool(context.endpoints.database_url, lambda pool: pool.execute(self._bare, ticket_type))
        assert bare == "UPDATE 1", bare

    @property
    def _bare(self) -> str:
        return CEILING if self.buckets == 1 else BUCKET_DRAW

    def workload(self, route: Route, context: Context) -> Workload:
        ticket_type = self._types[route] = self._ticket_type(context)
        endpoints = context.endpoints
        if route is Route.SQL:
            pool_size = sql_pool_size(context)
            return BareSql(endpoints.database_url, [ticket_type], pool_size=pool_size, statement=self._bare)
        buyers = self._buyers(context, math.ceil(SALE_RATE_CEILING * (WARMUP + DURATION + 1)))
        self._started[route] = time.monotonic()  # (the load workers start a few seconds later)
        return SaleWorkload(endpoints.gateway_url, str(ticket_type), buyers)

    def verify(self, route: Route, context: Context) -> str:
        """Oversold must be exactly 0 after every run: in SQL, sold + unexpired holds within the inventory
        and no bucket past its capacity; and the books agree (buckets, holds, sales, tickets)."""
        counts = run_with_pool(context.endpoints.database_url, lambda pool: pool.fetchrow(COUNTS, self._types[route]))
        if route is Route.SQL:
            # The bare statements count in the buckets' `taken` only: nothing else to agree.
            oversold = counts["oversold"]
            if oversold:
                raise AssertionError(f"{self.name}: {oversold} tickets oversold: {dict(counts)}")
            return "oversold 0"
        if counts["oversold"] or counts["mismatch"]:
            raise AssertionError(f"{self.name}: oversold or books that disagree: {dict(counts)}")
        # With 2,000 in flight a buyer's two requests can outlast the window, which then sees few whole
        # sales: the database says what the route did over its whole run (warm-up included).
        took = time.monotonic() - self._started.get(route, time.monotonic())
        sold, held = counts["sold"], counts["held"]
        per_second = (
            f", {sold / took:,.0f} sold/s and {(sold + held) / took:,.0f} reserved/s over {took:.0f} s" if took else ""
        )
        return f"oversold 0 (sold {sold:,}, held {held:,}{per_second})"

    def compare(self, report: Report) -> list[str]:
        """Under the bucket scenario: the bucket design against Phase 2's shape and the single-row ceiling."""
        if self.buckets == 1:
            return []
        ours, phase2 = report.result(self.name, Route.JSON_GATEWAY), report.result("rush", Route.JSON_GATEWAY)
        draw, ceiling = report.result(self.name, Route.SQL), report.result("rush", Route.SQL)
        pairs = [
            (ours, phase2, "buckets/1 row (JSON)"),
            (ours, ceiling, "buckets JSON/bare 1-row UPDATE"),
            (phase2, ceiling, "1 row JSON/bare 1-row UPDATE"),
            (draw, ceiling, "bare bucket draw/bare 1-row UPDATE"),
        ]
        ratios = [f"{label} {top.rate / bottom.rate:.2f}" for top, bottom, label in pairs if top and bottom]
        return [f"rush ratios of tickets/s: {' | '.join(ratios)}"] if ratios else []


def scenarios() -> list[Scenario]:
    return [Rush(buckets=1), Rush(buckets=16)]
