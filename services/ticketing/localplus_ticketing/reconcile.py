"""Settle what missed Stripe webhooks and crashes left open: `python -m localplus_ticketing.reconcile`
(`make reconcile`), e.g. from cron every few minutes. It sends refunds still pending and pays (or gives
up) orders whose PaymentIntent succeeded (or was cancelled) at Stripe without its webhook reaching us,
then prints one line per thing it settled or could not (retried on the next run) and exits 0.

Settings as the service's (DATABASE_URL, STRIPE_API_KEY, STRIPE_API_BASE, TICKET_SIGNING_KEY, ...);
`--older-than SECONDS` (default 300) leaves younger ones alone, their webhooks may still be on the way."""

import argparse
import asyncio
from datetime import timedelta

from localplus_common.config import Settings
from localplus_common.db import Database, create_pool
from localplus_ticketing import payments
from localplus_ticketing.codes import TicketSigner
from localplus_ticketing.payment_provider import PaymentProvider
from localplus_ticketing.settings import TicketingSettings

DEFAULT_OLDER_THAN_S = 300


async def run(older_than: timedelta) -> list[payments.Settled]:
    settings = Settings.from_env()
    ticketing = TicketingSettings.from_env()
    pool = await create_pool(settings)
    try:
        return await payments.reconcile(
            Database(pool), PaymentProvider(ticketing), TicketSigner(ticketing.ticket_signing_key), older_than
        )
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m localplus_ticketing.reconcile", description=__doc__)
    parser.add_argument("--older-than", type=float, default=DEFAULT_OLDER_THAN_S, metavar="SECONDS")
    args = parser.parse_args()
    settled = asyncio.run(run(timedelta(seconds=args.older_than)))
    for item in settled:
        print(f"{item.kind} {item.id}: {item.outcome}")
    failed = sum(item.failed for item in settled)
    print(f"settled {len(settled) - failed}, left for the next run {failed}")


if __name__ == "__main__":
    main()
