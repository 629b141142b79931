"""The worker's side of the outbox (public.notifications): claim due messages, mark them sent, or
schedule their retry.

A claim is a lease: the claiming transaction (FOR UPDATE SKIP LOCKED, so two workers never take the
same row) counts the attempt and moves the row's `send_after` to the end of the lease, then commits.
A worker killed mid-send leaves its rows to be claimed again when their lease runs out. Marking sent
(or failed) names the attempt it claimed, so a worker whose lease ran out and was taken over cannot
overwrite what the newer attempt recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from localplus_notifications.messages import Facts

# A message about an event whose text no reviewer vouches for now (never published, or back in review:
# `published_at` is null) is dropped when due, not sent: any signed-in user may write a draft and, as its
# editor, register anyone for it, and the title is read at sending. Orders' messages concern a purchase.
CLAIM = """
with due as (
  select n.id, n.order_id is null and n.event_id is not null
               and not exists (select 1 from public.events e where e.id = n.event_id and e.published_at is not null)
                 as unreviewed
    from public.notifications n
   where n.status = 'pending' and n.send_after <= now()
   order by n.send_after
   limit $1
   for update of n skip locked
), claimed as (
  update public.notifications n
     set attempts = n.attempts + 1, send_after = now() + make_interval(secs => $2), updated_at = now(),
         status = case when due.unreviewed then 'cancelled' else n.status end,
         last_error = case when due.unreviewed then 'the event is not published (its text is not reviewed)'
                           else n.last_error end
    from due where n.id = due.id
  returning n.*
)
select c.id, c.status, c.user_id, c.kind, c.channel, c.attempts, c.payload, c.order_id,
       u.email, coalesce(u.raw_user_meta_data ->> 'locale', '') as locale,
       e.title, coalesce(o.starts_at, e.starts_at) as starts_at, coalesce(e.timezone, 'UTC') as timezone,
       coalesce(e.venue_name, '') as venue_name,
       r.confirmation_code, r.total_minor, r.currency,
       coalesce((select array_agg(t.code order by t.created_at, t.id) from public.tickets t
                  where c.order_id is not null and t.order_id = c.order_id and t.status <> 'void'), '{}') as codes,
       coalesce((select jsonb_agg(jsonb_build_object('endpoint', p.endpoint, 'p256dh', p.p256dh, 'auth', p.auth))
                   from public.push_subscriptions p where c.channel = 'push' and p.user_id = c.user_id), '[]')
         as subscriptions
  from claimed c
  join auth.users u on u.id = c.user_id
  left join public.events e on e.id = c.event_id
  left join public.event_occurrences o on o.id = c.occurrence_id
  left join public.orders r on r.id = c.order_id
"""

# A lease running low, extended for the messages this attempt still holds.
RENEW = """
update public.notifications n set send_after = now() + make_interval(secs => $3), updated_at = now()
  from unnest($1::uuid[], $2::integer[]) as held (id, attempts)
 where n.id = held.id and n.attempts = held.attempts and n.status = 'pending'
returning n.id
"""

MARK_SENT = """
update public.notifications set status = 'sent', sent_at = now(), last_error = '', updated_at = now()
 where id = $1 and attempts = $2 and status = 'pending'
"""

# A retry after `delay` seconds, or a dead letter (`failed`) when the attempts are used up or the
# failure is permanent.
MARK_FAILED = """
update public.notifications
   set status = case when $4 then 'failed' else 'pending' end,
       send_after = now() + make_interval(secs => $3), last_error = left($5, 1000), updated_at = now()
 where id = $1 and attempts = $2 and status = 'pending'
"""


@dataclass(frozen=True)
class Message:
    id: UUID
    user_id: UUID
    kind: str
    channel: str
    attempt: int
    email: str
    facts: Facts
    subscriptions: list[dict[str, str]]


def _datetime(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _message(row: asyncpg.Record) -> Message:
    payload = row["payload"] if isinstance(row["payload"], dict) else {}
    amount = payload.get("amount_minor", row["total_minor"])
    facts = Facts(
        kind=row["kind"],
        locale=row["locale"],
        title=row["title"] or "",
        starts_at=_datetime(payload.get("starts_at")) or row["starts_at"],
        timezone=row["timezone"],
        venue=row["venue_name"],
        previous_starts_at=_datetime(payload.get("previous_starts_at")),
        confirmation_code=row["confirmation_code"] or "",
        amount_minor=None if amount is None else int(amount),
        currency=row["currency"] or "",
        ticket_codes=list(row["codes"]),
    )
    subscriptions = row["subscriptions"] if isinstance(row["subscriptions"], list) else []
    return Message(
        id=row["id"],
        user_id=row["user_id"],
        kind=row["kind"],
        channel=row["channel"],
        attempt=row["attempts"],
        email=row["email"] or "",
        facts=facts,
        subscriptions=subscriptions,
    )


async def init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def claim(pool: asyncpg.Pool, limit: int, lease_seconds: float) -> list[Message]:
    """Due messages to send; none only when none is due (a batch all dropped is no reason to wait)."""
    async with pool.acquire() as conn:
        while True:
            rows = await conn.fetch(CLAIM, limit, lease_seconds)
            messages = []
            for row in rows:
                if row["status"] != "pending":
                    continue
                try:
                    messages.append(_message(row))
                except ValueError as error:  # a row that cannot be read is a dead letter, not a stopped worker
                    await conn.execute(MARK_FAILED, row["id"], row["attempts"], 0, True, f"unreadable: {error}")
            if messages or len(rows) < limit:
                return messages


async def renew(pool: asyncpg.Pool, messages: list[Message], lease_seconds: float) -> set[UUID]:
    """The ids of `messages` still held, each now leased for another `lease_seconds`."""
    rows = await pool.fetch(
        RENEW, [message.id for message in messages], [message.attempt for message in messages], lease_seconds
    )
    return {row["id"] for row in rows}


async def mark_sent(pool: asyncpg.Pool, message: Message) -> None:
    await pool.execute(MARK_SENT, message.id, message.attempt)


async def mark_failed(pool: asyncpg.Pool, message: Message, error: str, *, delay: float, dead: bool) -> None:
    await pool.execute(MARK_FAILED, message.id, message.attempt, delay, dead, error)
