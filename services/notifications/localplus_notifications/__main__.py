"""Run the notifications worker: `python -m localplus_notifications` (settings from the environment)."""

import asyncio
import contextlib
import logging

from localplus_notifications.config import WorkerSettings
from localplus_notifications.worker import run

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = WorkerSettings.from_env()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))
