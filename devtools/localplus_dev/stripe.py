"""Run localstripe, a fake Stripe API, as a supervised child, with its state in the stack's own file
(it survives restarts unless started `from_scratch`), and point its webhooks at the gateway.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from localplus_dev.processes import Child, Supervisor

DEV_API_KEY = "sk_test_localplus"
DEV_WEBHOOK_SECRET = "whsec_localplus"


class LocalStripe:
    """localstripe on `port` (it binds every interface, IPv4 and IPv6)."""

    def __init__(
        self,
        supervisor: Supervisor,
        state: Path,
        *,
        port: int = 8420,
        api_key: str = DEV_API_KEY,
        from_scratch: bool = False,
    ) -> None:
        self.supervisor = supervisor
        self.state = state
        self.port = port
        self.api_key = api_key
        self.from_scratch = from_scratch
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.stop()  # a restart after a crash replaces the dead child
        self.state.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "localplus_dev.localstripe_server", "--port", str(self.port)]
        argv += ["--state", str(self.state)]
        if self.from_scratch:
            argv.append("--from-scratch")
        self.child = self.supervisor.spawn("localstripe", argv)
        self._wait_ready(timeout)

    def send_webhooks_to(self, url: str, secret: str = DEV_WEBHOOK_SECRET) -> None:
        """Every event localstripe makes goes to `url`, signed with `secret` (kept in memory only)."""
        response = httpx.post(f"{self.url}/_config/webhooks/localplus", data={"url": url, "secret": secret})
        response.raise_for_status()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    def _wait_ready(self, timeout: float) -> None:
        """Poll an authenticated API call, so that the server is up and accepts our key."""
        assert self.child is not None
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(timeout=1.0) as client:
            while True:
                if not self.child.alive:
                    raise RuntimeError(f"localstripe exited ({self.child.returncode}):\n{self.child.log_tail()}")
                try:
                    if client.get(f"{self.url}/v1/customers", headers=headers).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"localstripe not ready after {timeout}s:\n{self.child.log_tail()}")
                time.sleep(0.1)
