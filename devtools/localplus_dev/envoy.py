"""Envoy as a supervised child, for `make up` and the tests; the config, and the launcher that drains it
when stopped, come from localplus_gateway."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

from localplus_dev.processes import Child, Supervisor, venv_binary
from localplus_gateway import DEFAULT_DESCRIPTOR, GatewaySettings, render_envoy_config


class Gateway:
    """Envoy serving `settings.gateway_port`, its config written to `<run_dir>/envoy.yaml`."""

    def __init__(
        self,
        run_dir: Path,
        supervisor: Supervisor,
        settings: GatewaySettings,
        descriptor_path: Path = DEFAULT_DESCRIPTOR,
    ) -> None:
        self.run_dir = run_dir
        self.supervisor = supervisor
        self.settings = settings
        self.descriptor_path = descriptor_path
        self.config_path = run_dir / "envoy.yaml"
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    def start(self, timeout: float = 30.0) -> None:
        self.stop()  # a restart after a crash replaces the dead child
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_envoy_config(self.descriptor_path, self.settings))
        # Through the launcher the containers use: it drains Envoy on SIGTERM (localplus_gateway.run).
        argv = [sys.executable, "-m", "localplus_gateway", "run"]
        argv += [venv_binary("envoy"), "-c", str(self.config_path), "--log-level", "warn"]
        # Hot restart would make a second Envoy on this machine (tests next to `make up`) fight over
        # the shared-memory base id.
        argv.append("--disable-hot-restart")
        # The access log reaches envoy.log within 0.2 s of a request (Envoy's default is 10 s).
        argv += ["--file-flush-interval-msec", "200"]
        env = {
            **os.environ,
            "ENVOY_ADMIN_PORT": str(self.settings.admin_port),
            "LOCALPLUS_DRAIN_SECONDS": str(self.settings.drain_seconds),
            "LOCALPLUS_GRACE_SECONDS": str(self.settings.grace_seconds),
        }
        stop_timeout = self.settings.drain_seconds + self.settings.grace_seconds + 5
        self.child = self.supervisor.spawn("envoy", argv, env=env, stop_timeout=stop_timeout)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll /healthz until Envoy answers 200; raise with its log tail if it dies or times out."""
        assert self.child is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                if not self.child.alive:
                    raise RuntimeError(f"envoy exited ({self.child.returncode}):\n{self.child.log_tail()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"envoy not ready after {timeout}s:\n{self.child.log_tail()}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None
