-- Reading orders (and their items, seats and refunds) as a buyer stayed fast only while the planner
-- guessed right. The policies of order_items, seat_claims and refunds ask `exists (select 1 from
-- public.orders o where o.id = order_id)`, and orders' own policy calls event_role_rank() for every
-- order not the caller's. With the function at the default cost (100, a quarter of a tuple), the
-- planner may answer that EXISTS by a hashed subplan: a sequential scan of all orders, calling
-- event_role_rank() (four index lookups) on each one, rather than one orders_pkey probe per row read.
-- It did so for a buyer's read of an order's items (49 ms with ~300 orders, growing with the table)
-- and does so in seat_claims' generic plan. Declaring what the function really costs (about four
-- index probes) keeps the planner on the per-row probe; what any policy lets anyone see is unchanged.
alter function localplus_private.event_role_rank(uuid) cost 10000;
