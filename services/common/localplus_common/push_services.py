"""Which web push endpoints the server will send to. A subscription's endpoint is a URL the client
chooses and the notifications worker POSTs to, so without a rule any signed-in user could make the
worker call hosts inside the network (cloud metadata, the database, the services: server-side request
forgery). Browsers only ever hand out endpoints of their vendors' push services, so the rule is a list
of those hosts (a name or a parent domain, `PUSH_SERVICE_HOSTS`, comma-separated), checked when a
subscription is registered (a 400) and again by the worker before each send (rows from before the
rule, or a list made shorter since, are dropped unsent). Dev mode adds the loopback push endpoint of
`make up` and the tests, over https or http."""

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from localplus_common.config import dev_mode

PUSH_SERVICE_HOSTS_VAR = "PUSH_SERVICE_HOSTS"
# Chrome and Edge's (FCM), Firefox's (Mozilla autopush), Safari's (Apple), Windows' (WNS).
DEFAULT_PUSH_SERVICE_HOSTS = (
    "fcm.googleapis.com",
    "push.services.mozilla.com",
    "push.apple.com",
    "notify.windows.com",
)
DEV_PUSH_SERVICE_HOSTS = ("127.0.0.1", "localhost")


def push_service_hosts(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    configured = [host.strip().lower().strip(".") for host in env.get(PUSH_SERVICE_HOSTS_VAR, "").split(",")]
    hosts = tuple(host for host in configured if host) or DEFAULT_PUSH_SERVICE_HOSTS
    return hosts + DEV_PUSH_SERVICE_HOSTS if dev_mode(env) else hosts


def is_push_service(endpoint: str, hosts: tuple[str, ...]) -> bool:
    """An https URL on port 443 (http on any port too for dev mode's loopback hosts) on one of `hosts`
    or a subdomain of one, with no user info (`https://fcm.googleapis.com@10.0.0.1/` is a request to
    10.0.0.1). Push services answer on 443 only; another port would reach whatever else listens there."""
    try:
        parts = urlsplit(endpoint)
        host, port = (parts.hostname or "").lower(), parts.port  # a malformed port raises
    except ValueError:
        return False
    if parts.username is not None or parts.password is not None or not host:
        return False
    if port not in (None, 443) and host not in DEV_PUSH_SERVICE_HOSTS:
        return False
    if parts.scheme != "https" and not (parts.scheme == "http" and host in DEV_PUSH_SERVICE_HOSTS):
        return False
    return any(host == allowed or host.endswith("." + allowed) for allowed in hosts)
