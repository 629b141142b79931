"""What one ticket sale costs, and where: one sale at a time through the gateway (reserve 1 ticket of
a free type + checkout, so paid at once and the ticket issued), the CPU per sale of the ticketing
service, Postgres and Envoy, and Postgres's statements per sale from pg_stat_statements (nested ones
too, with their planning time) and its functions' times (track_functions).

    python -m bench.sale_cost                 # 150 sales
    python -m bench.sale_cost --sales 300 --top 30

Sequential on purpose: the CPU per sale is then the work of a sale, not of queueing. The stack is
`make bench`'s (durable commits), with pg_stat_statements loaded, which costs some CPU of its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import asyncpg
import httpx

from bench import harness
from bench.harness import TokenMinter, bench_user_id, cpu_seconds, create_users, run_with_pool, seed_events

WARMUP_SALES = 20  # every pooled connection prepares its statements before the count starts
FIRST_BUYER = 1_000
STATEMENTS = """
select calls, total_exec_time + total_plan_time as total, total_plan_time as plan,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 110) as query
  from pg_stat_statements where query not like '%pg_stat%' order by 2 desc limit $1
"""
FUNCTIONS = """
select schemaname || '.' || funcname as name, calls, total_time, self_time
  from pg_stat_user_functions where funcname not like 'pg_stat%' order by self_time desc limit $1
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sale_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=150, help="sales counted (default 150)")
    parser.add_argument("--top", type=int, default=25, help="rows of each table (default 25)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    harness.DURABLE_COMMIT.update(
        {
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "all",
            "pg_stat_statements.track_planning": "on",
            "track_functions": "all",
        }
    )
    buyers = WARMUP_SALES + args.sales
    with harness.running_stack() as (stack, endpoints):
        minter = TokenMinter(endpoints.jwt_secret)

        async def seed(pool: asyncpg.Pool) -> Any:
            await pool.execute("create extension if not exists pg_stat_statements")
            await create_users(pool, 0, 1)
            await create_users(pool, FIRST_BUYER, buyers)
            (event,) = await seed_events(pool, 1, bench_user_id(0), title="Sale cost event")
            return await pool.fetchval(
                "insert into public.ticket_types (event_id, name, price_minor, currency, inventory) "
                "values ($1, 'Free', 0, 'THB', 1000000) returning id",
                event,
            )

        ticket_type = run_with_pool(endpoints.database_url, seed)
        components = stack.component_pids()
        body = {"request_id": "sale", "items": [{"ticket_type_id": str(ticket_type), "quantity": 1}]}
        with httpx.Client(base_url=endpoints.gateway_url, timeout=30) as client:

            def sell(buyer: int) -> None:
                headers = {"authorization": f"Bearer {minter.token(FIRST_BUYER + buyer)}"}
                reserved = client.post("/api/orders", json=body, headers=headers)
                assert reserved.status_code == 200, reserved.text
                paid = client.post(f"/api/orders/{reserved.json()['id']}:checkout", json={}, headers=headers)
                assert paid.json()["order"]["status"] == "ORDER_STATUS_PAID", paid.text

            for buyer in range(WARMUP_SALES):
                sell(buyer)
            run_with_pool(
                endpoints.database_url, lambda pool: pool.execute("select pg_stat_statements_reset(), pg_stat_reset()")
            )
            before, started = cpu_seconds(components), time.perf_counter()
            for buyer in range(WARMUP_SALES, buyers):
                sell(buyer)
            wall, after = time.perf_counter() - started, cpu_seconds(components)

        async def stats(pool: asyncpg.Pool) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
            return await pool.fetch(STATEMENTS, args.top), await pool.fetch(FUNCTIONS, args.top)

        statements, functions = run_with_pool(endpoints.database_url, stats)
    n = args.sales
    print(f"{n} sales one at a time (reserve + free checkout through the gateway): {wall / n * 1000:.1f} ms each")
    for name in ("ticketing", "postgres", "envoy"):
        print(f"  CPU per sale, {name:9s} {(after[name] - before[name]) / n * 1000:6.2f} ms")
    print("\n  calls/sale  ms/sale (of which planning)  statement")
    for row in statements:
        print(f"  {row['calls'] / n:10.2f}  {row['total'] / n:7.3f} ({row['plan'] / n:5.3f})  {row['query']}")
    print("\n  calls/sale  total ms/sale  self ms/sale  function")
    for row in functions:
        print(f"  {row['calls'] / n:10.2f}  {row['total_time'] / n:13.3f}  {row['self_time'] / n:12.3f}  {row['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
