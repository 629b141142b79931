"""Sponsored results beside a page of events (the events service) or occurrences (the recurrence
service): which active promotions may fill the page's slots, the rotation among them, and the spend of
what is served, without a hot row.

- Live promotions are read every REFRESH_S (one query a second per process, not per request); a
  request whose filters no live promotion targets costs nothing more than the organic page.
- Targeting: a promotion's placements name the lists it appears in (`search`: with `q`; `browse`:
  without); its cities and categories, when given, the request's `city` and `category` it appears for.
  The promoted event must match the request's own filters in the same SQL as the organic page
  (the caller's: localplus_events.discovery, localplus_recurrence.occurrences), be visible to the caller,
  not have ended, and not be on the page.
- Rotation: the page's slots are filled by a weighted random draw without replacement, each
  candidate weighted by its price per thousand impressions (CPC: its bid times an assumed 1% click
  rate), at most one slot per event. So a promotion bidding twice as much is shown about twice as often.
- Spend: a CPM impression costs `bid_minor` thousandths of a minor unit. Each process leases allowance
  from the promotion's row (localplus_private.lease_promotion: under the row's lock, never above the
  paced cap, so never above the budget) LEASE_IMPRESSIONS impressions at a time and serves out of its
  lease in memory, then records what it served in batches every FLUSH_S
  (record_promotion_impressions). A CPC promotion is served while its allowance covers a click; the
  click pays (record_promotion_click). Impressions for the business's own team are shown, not counted.
- Frequency cap: a viewer (`viewers.viewer_key(..., by_browser=False)`: the user, else the address the
  gateway saw) is charged and counted an impression of a promotion at most once per CAP_WINDOW_S; shown
  it again meanwhile, it is shown free (while the promotion could still pay), so listing in a loop
  drains nobody's budget. The pairs charged are remembered per process (bounded: CAP_MAX_ENTRIES, each
  expiring after the window), so with N processes serving a viewer may be charged up to N times a
  window: the price of keeping no shared state (no hot row, no write per impression).
"""

import asyncio
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from uuid import UUID

import asyncpg

from localplus_common.auth import SERVER
from localplus_common.cities import city_slug
from localplus_common.db import Connection, Database, current_identity

log = logging.getLogger(__name__)

REFRESH_S = 1.0
FLUSH_S = 1.0
LEASE_IMPRESSIONS = 100
# A CPC bid's assumed click-through rate, to weigh it against CPM bids.
ASSUMED_CTR = 0.01
DEFAULT_SLOTS = 2
# Frequency cap: one charged impression per viewer and promotion an hour, as ad servers count reach.
CAP_WINDOW_S = 3600.0
# (viewer, promotion) pairs remembered per process, about 270 bytes each (~27 MB at most); past it the
# oldest is forgotten early (that viewer may be charged again within its window), never memory.
CAP_MAX_ENTRIES = 100_000


def folded_category(category: str) -> str:
    """A category as promotions and requests are matched by: case and spaces around it do not count, as in
    the events service's category filters (localplus_events.domain.folded_category)."""
    return category.strip(" \t\n\r").lower()


@dataclass(frozen=True)
class Request:
    """What a list request asked for that promotions target."""

    q: str = ""
    city: str = ""
    category: str = ""


@dataclass(frozen=True)
class Live:
    id: UUID
    event_id: UUID
    business_id: UUID
    placements: frozenset[str]
    cities: frozenset[str]
    categories: frozenset[str]
    bid_type: str
    bid_minor: int

    @property
    def weight(self) -> float:
        """Its price per thousand impressions, in minor units."""
        return float(self.bid_minor) if self.bid_type == "cpm" else self.bid_minor * 1000 * ASSUMED_CTR

    @property
    def impression_cost(self) -> int:
        """In thousandths of a minor unit."""
        return self.bid_minor if self.bid_type == "cpm" else 0

    def targets(self, query: Request) -> bool:
        placement = "search" if query.q.strip() else "browse"
        return (
            placement in self.placements
            and (not self.cities or city_slug(query.city) in self.cities)
            and (not self.categories or folded_category(query.category) in self.categories)
        )


@dataclass(frozen=True)
class Sponsored:
    position: int
    promotion_id: UUID
    event: asyncpg.Record


def slots_from_env(env: Mapping[str, str] = os.environ) -> int:
    """SPONSORED_SLOTS: at most this many sponsored results per page (0: none)."""
    return max(0, int(env.get("SPONSORED_SLOTS") or DEFAULT_SLOTS))


class ChargedViewers:
    """The (viewer, promotion) pairs charged within the window, oldest first: every entry lives the same
    window, so the oldest is always the first to expire, and at most `max_entries` are kept."""

    def __init__(
        self,
        window_s: float = CAP_WINDOW_S,
        max_entries: int = CAP_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._max_entries = max_entries
        self._clock = clock
        self._expires: OrderedDict[tuple[str, UUID], float] = OrderedDict()

    def claim(self, viewer: str, promotion_id: UUID) -> bool:
        """Whether this viewer is to be charged for the promotion now (not charged within the window);
        if so, remembered as charged."""
        now = self._clock()
        while self._expires and next(iter(self._expires.values())) <= now:
            self._expires.popitem(last=False)
        key = (viewer, promotion_id)
        if key in self._expires:
            return False
        if len(self._expires) >= self._max_entries:
            self._expires.popitem(last=False)
        self._expires[key] = now + self._window_s
        return True

    def forget(self, viewer: str, promotion_id: UUID) -> None:
        """A claim whose impression was not paid for after all."""
        self._expires.pop((viewer, promotion_id), None)


class Sponsorship:
    def __init__(self, slots: int = DEFAULT_SLOTS, rng: random.Random | None = None) -> None:
        self.slots = slots
        self._rng = rng or random.Random()
        self._db: Database | None = None
        self._live: list[Live] = []
        # Allowance of this process's leases, in thousandths of a minor unit, and what the row had
        # left under its paced cap at the last refresh.
        self._lease: dict[UUID, int] = {}
        self._headroom: dict[UUID, int] = {}
        self._locks: dict[UUID, asyncio.Lock] = {}
        # Served, not yet recorded: (promotion, day) -> [impressions, cost].
        self._pending: dict[tuple[UUID, date], list[int]] = {}
        self._charged = ChargedViewers()

    def candidates(self, query: Request) -> list[UUID]:
        """The events of live promotions this request could show (no I/O: the list read last refresh)."""
        if not self.slots or not self._live:
            return []
        return list({p.event_id for p in self._live if p.targets(query)})

    async def choose(
        self,
        query: Request,
        page_length: int,
        matched: list[asyncpg.Record],
        own_businesses: set[UUID],
        viewer: str,
    ) -> list[Sponsored]:
        """Fill the page's slots from the promoted events the search matched (none on the page), for
        `viewer` (`viewers.viewer_key(..., by_browser=False)`: the frequency cap's key)."""
        try:
            return await self._choose(query, page_length, matched, own_businesses, viewer)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            # Sponsored results never cost a consumer the organic page.
            log.warning("sponsored results skipped", exc_info=True)
            return []

    async def _choose(
        self,
        query: Request,
        page_length: int,
        matched: list[asyncpg.Record],
        own_businesses: set[UUID],
        viewer: str,
    ) -> list[Sponsored]:
        # A matched row is the promoted event's (its `event_id`, else its `id`).
        events = {row.get("event_id", row["id"]): row for row in matched}
        eligible = [p for p in self._live if p.event_id in events and p.targets(query)]
        # Weighted draw without replacement (Efraimidis-Spirakis): the largest u^(1/w) first.
        eligible.sort(key=lambda p: self._rng.random() ** (1.0 / p.weight), reverse=True)
        chosen: list[Live] = []
        for promotion in eligible:
            if len(chosen) == self.slots:
                break
            if any(c.event_id == promotion.event_id for c in chosen):
                continue
            if promotion.business_id in own_businesses:
                chosen.append(promotion)
                continue
            if not self._charged.claim(viewer, promotion.id):
                # Charged for this viewer within the window: shown again, free, while it could still pay.
                if self._affordable(promotion):
                    chosen.append(promotion)
                continue
            paid = False
            try:
                paid = await self._take(promotion)
            finally:
                if not paid:
                    self._charged.forget(viewer, promotion.id)
            if not paid:
                continue
            chosen.append(promotion)
            key = (promotion.id, datetime.now(UTC).date())
            served = self._pending.setdefault(key, [0, 0])
            served[0] += 1
            served[1] += promotion.impression_cost
        step = max(1, page_length // max(1, len(chosen)))
        return [
            Sponsored(min(page_length, k * step), promotion.id, events[promotion.event_id])
            for k, promotion in enumerate(chosen)
        ]

    def _affordable(self, promotion: Live) -> bool:
        """Whether it could pay for an impression (CPC: a click) out of its lease or its headroom."""
        if promotion.bid_type == "cpc":
            return self._headroom.get(promotion.id, 0) >= promotion.bid_minor * 1000
        cost = promotion.impression_cost
        return self._lease.get(promotion.id, 0) >= cost or self._headroom.get(promotion.id, 0) >= cost

    async def _take(self, promotion: Live) -> bool:
        """Whether this impression is paid for: out of the lease, leasing more when it runs out."""
        if promotion.bid_type == "cpc":
            return self._affordable(promotion)
        cost = promotion.impression_cost
        # Check and take with no await in between: the event loop runs one request at a time here.
        if self._lease.get(promotion.id, 0) >= cost:
            self._lease[promotion.id] -= cost
            return True
        if self._headroom.get(promotion.id, 0) < cost:
            return False
        async with self._locks.setdefault(promotion.id, asyncio.Lock()):
            if self._lease.get(promotion.id, 0) < cost and self._headroom.get(promotion.id, 0) >= cost:
                granted = await self._lease_more(promotion.id, cost * LEASE_IMPRESSIONS)
                self._lease[promotion.id] = self._lease.get(promotion.id, 0) + granted
                # Nothing granted: nothing left today until the next refresh says otherwise.
                self._headroom[promotion.id] = self._headroom.get(promotion.id, 0) - granted if granted else 0
            if self._lease.get(promotion.id, 0) >= cost:
                self._lease[promotion.id] -= cost
                return True
        return False

    async def _lease_more(self, promotion_id: UUID, want: int) -> int:
        assert self._db is not None
        granted: int = await self._db.run(
            lambda conn: conn.fetchval("select localplus_private.lease_promotion($1, $2)", promotion_id, want), SERVER
        )
        return granted

    # The background loop (the services' __main__): refresh, flush, and on stop give leases back.

    async def run(self, db: Database) -> None:
        self._db = db
        try:
            while True:
                try:
                    await self.refresh()
                    await self.flush()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    log.warning("promotions refresh failed; trying again", exc_info=True)
                await asyncio.sleep(min(REFRESH_S, FLUSH_S))
        finally:
            await asyncio.shield(self._stop())

    def attach(self, db: Database) -> None:
        self._db = db

    async def refresh(self) -> None:
        assert self._db is not None
        rows = await self._db.run(
            lambda conn: conn.fetch(
                """
                select id, event_id, business_id, placements, cities, categories, bid_type, bid_minor,
                       localplus_private.promotion_paced_cap_milli(budget_minor, starts_at, ends_at) - reserved_milli
                         as headroom
                  from public.promotions
                 where status = 'active' and starts_at <= now() and ends_at > now()
                """
            ),
            SERVER,
        )
        live = [
            Live(
                row["id"],
                row["event_id"],
                row["business_id"],
                frozenset(row["placements"]),
                frozenset(row["cities"]),
                frozenset(folded_category(category) for category in row["categories"]),
                row["bid_type"],
                row["bid_minor"],
            )
            for row in rows
        ]
        self._headroom = {row["id"]: row["headroom"] for row in rows}
        self._live = live
        # Leases of promotions no longer live (cancelled, ended) go back.
        gone = [pid for pid in self._lease if pid not in self._headroom]
        for pid in gone:
            await self._release(pid)

    async def flush(self) -> None:
        """Record what was served since the last flush, in one statement."""
        if not self._pending or self._db is None:
            return
        batch, self._pending = self._pending, {}
        keys = list(batch)
        try:
            await self._db.run(
                lambda conn: conn.execute(
                    "select localplus_private.record_promotion_impressions($1, $2, $3, $4)",
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [batch[k][0] for k in keys],
                    [batch[k][1] for k in keys],
                ),
                SERVER,
            )
        except BaseException:
            for key, (count, cost) in batch.items():  # recorded with the next flush
                served = self._pending.setdefault(key, [0, 0])
                served[0] += count
                served[1] += cost
            raise

    async def _release(self, promotion_id: UUID) -> None:
        unused = self._lease.pop(promotion_id, 0)
        if unused and self._db is not None:
            await self._db.run(
                lambda conn: conn.execute(
                    "select localplus_private.release_promotion_lease($1, $2)", promotion_id, unused
                ),
                SERVER,
            )

    async def own_businesses(self, conn: Connection, matched: list[asyncpg.Record]) -> set[UUID]:
        """Of the matched events' businesses, those the caller is a partner of (in the request's transaction)."""
        businesses = list({row["business_id"] for row in matched if row["business_id"] is not None})
        if not businesses or current_identity.get().user_id is None:
            return set()
        own: list[UUID] = await conn.fetchval(
            "select coalesce(array_agg(b), '{}') from unnest($1::uuid[]) b "
            "where localplus_private.is_business_partner(b, array['owner', 'editor', 'viewer'])",
            businesses,
        )
        return set(own)

    async def _stop(self) -> None:
        try:
            await self.flush()
            for promotion_id in list(self._lease):
                await self._release(promotion_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("could not record the last impressions or give leases back", exc_info=True)
