"""Run localstripe, a fake Stripe API, as a supervised child.

localstripe keeps its state in /tmp/localstripe.pickle (a fixed path): it survives restarts unless
started `from_scratch`, and two instances on one machine share it.
"""

from __future__ import annotations

import time

import httpx

from localplus_dev.processes import Child, Supervisor, venv_binary

DEV_API_KEY = "sk_test_localplus"


class LocalStripe:
    """localstripe on `port` (it binds every interface, IPv4 and IPv6)."""

    def __init__(
        self, supervisor: Supervisor, *, port: int = 8420, api_key: str = DEV_API_KEY, from_scratch: bool = False
    ) -> None:
        self.supervisor = supervisor
        self.port = port
        self.api_key = api_key
        self.from_scratch = from_scratch
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.stop()  # a restart after a crash replaces the dead child
        argv = [venv_binary("localstripe"), "--port", str(self.port)]
        if self.from_scratch:
            argv.append("--from-scratch")
        self.child = self.supervisor.spawn("localstripe", argv)
        self._wait_ready(timeout)

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
