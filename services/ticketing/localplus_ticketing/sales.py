"""An event's sales figures for its viewers and up (GetEventSales): revenue, refunds and tickets by
ticket type and by day, holds now, orders and their conversion.

Viewers may see the figures but not the orders, tickets and refunds they are made of (row-level
security lets only editors read those). So the figures are computed as the server, in the caller's
own transaction, right after the caller's rank was checked as the caller; rather than by a SECURITY
DEFINER function API roles could call, which would have to check the rank again by itself and
would be one more door open to Supabase's REST, for a dashboard only this API serves.

What counts: money is taken when an order is paid (`paid_at`, free orders too) and given back when
a refund of it is recorded (pending or sent); days are the event's time zone's. A payment refunded
before it could be honoured (sold out meanwhile, refunded at Stripe before its success arrived) and
a second payment of one order sold nothing and count in neither. A partial refund made in Stripe's
dashboard names no tickets: it counts in the event's and the day's figures, not a ticket type's.
Checked in counts every ticket scanned at the door, refunded afterwards or not: its holder was let in."""

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from localplus_common.access import VIEWER, require_rank, signed_in, visible_event
from localplus_common.auth import SERVER
from localplus_common.db import Connection, Database, act_as
from localplus_ticketing.ticket_types import AVAILABLE, TYPES

# Sold, held, blocked and available as the ticket types' own reads count them (ticket_types.TYPES).
BY_TICKET_TYPE = f"""
select t.id, t.name, t.price_minor, t.currency, c.sold, c.held, c.blocked, {AVAILABLE} as available,
       coalesce(issued.gross_minor, 0)::bigint as gross_minor, coalesce(issued.checked_in, 0)::integer as checked_in,
       coalesce(back.refunded, 0)::integer as refunded, coalesce(back.refunded_minor, 0)::bigint as refunded_minor
  from {TYPES}
  left join (select ticket_type_id, sum(price_minor) as gross_minor,
                    count(*) filter (where checked_in_at is not null) as checked_in
               from public.tickets where event_id = $1 group by 1) issued on issued.ticket_type_id = t.id
  left join (select k.ticket_type_id, count(*) as refunded, sum(k.price_minor) as refunded_minor
               from public.orders o
               join public.refunds r on r.order_id = o.id and r.payment_intent_id is null
              cross join unnest(r.ticket_ids) as voided (ticket_id)
               join public.tickets k on k.id = voided.ticket_id
              where o.event_id = $1
              group by 1) back on back.ticket_type_id = t.id
 where t.event_id = $1
 order by t.sort_order, t.created_at, t.id
"""

# Orders, and the money of those in the event's currency ($2).
ORDERS = """
select count(*)::integer as orders_created, (count(*) filter (where paid_at is not null))::integer as orders_paid,
       coalesce(sum(total_minor) filter (where paid_at is not null and currency = $2), 0)::bigint as gross_minor,
       (select coalesce(sum(r.amount_minor), 0)::bigint from public.orders o join public.refunds r on r.order_id = o.id
         where o.event_id = $1 and o.paid_at is not null and o.currency = $2 and r.payment_intent_id is null)
         as refunded_minor
  from public.orders where event_id = $1
"""

# By day in the event's time zone ($3): orders and tickets paid, money taken and given back.
BY_DAY = """
with paid as (
  select (o.paid_at at time zone $3)::date as day, count(*) as orders, sum(i.tickets) as tickets,
         coalesce(sum(o.total_minor) filter (where o.currency = $2), 0) as gross_minor
    from public.orders o
   cross join lateral (select coalesce(sum(quantity), 0) as tickets from public.order_items
                        where order_id = o.id) i
   where o.event_id = $1 and o.paid_at is not null
   group by 1
), given_back as (
  select (r.created_at at time zone $3)::date as day, sum(r.amount_minor) as refunded_minor
    from public.orders o join public.refunds r on r.order_id = o.id and r.payment_intent_id is null
   where o.event_id = $1 and o.paid_at is not null and o.currency = $2
   group by 1
)
select day, coalesce(p.orders, 0)::integer as orders, coalesce(p.tickets, 0)::integer as tickets,
       coalesce(p.gross_minor, 0)::bigint as gross_minor, coalesce(b.refunded_minor, 0)::bigint as refunded_minor
  from paid p full join given_back b using (day)
 order by day
"""


@dataclass(frozen=True)
class EventSales:
    event_id: UUID
    # The first ticket type's (list order): the event's money figures count orders in it.
    currency: str
    gross_minor: int
    refunded_minor: int
    orders_created: int
    orders_paid: int
    ticket_types: list[asyncpg.Record]
    days: list[asyncpg.Record]

    def total(self, column: str) -> int:
        return sum(int(row[column]) for row in self.ticket_types)

    @property
    def conversion_rate(self) -> float | None:
        return round(self.orders_paid / self.orders_created, 4) if self.orders_created else None


async def event_sales(db: Database, event_id: UUID) -> EventSales:
    signed_in()

    async def read(conn: Connection) -> EventSales:
        event = await visible_event(conn, event_id)
        require_rank(event, VIEWER, "see the sales of")
        await act_as(conn, SERVER)
        types = await conn.fetch(BY_TICKET_TYPE, event_id)
        currency = types[0]["currency"] if types else ""
        orders = await conn.fetchrow(ORDERS, event_id, currency)
        assert orders is not None
        days = await conn.fetch(BY_DAY, event_id, currency, event["timezone"])
        return EventSales(
            event_id=event_id,
            currency=currency,
            gross_minor=orders["gross_minor"],
            refunded_minor=orders["refunded_minor"],
            orders_created=orders["orders_created"],
            orders_paid=orders["orders_paid"],
            ticket_types=list(types),
            days=list(days),
        )

    return await db.run(read, event_id=event_id)
