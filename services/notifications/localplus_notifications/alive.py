"""The worker's liveness check: `python -m localplus_notifications.alive` exits 0 when the heartbeat
file (NOTIFICATIONS_HEARTBEAT_FILE) was touched within the last minute, 1 otherwise."""

import os
import sys
import time

STALE_AFTER_S = 60.0

if __name__ == "__main__":
    path = os.environ.get("NOTIFICATIONS_HEARTBEAT_FILE", "")
    try:
        fresh = bool(path) and time.time() - os.stat(path).st_mtime < STALE_AFTER_S
    except OSError:
        fresh = False
    sys.exit(0 if fresh else 1)
