"""Who is looking, for counting views and clicks once per viewer and day: `u:<user id>` when signed in;
an anonymous viewer is a hash of the client's address as the gateway saw it (no address is stored) and,
for views, its User-Agent (people behind one address with the same browser count once). Nothing the
client writes in the body or in x-forwarded-for makes it a new viewer; a promotion's clicks, which
spend its pay-per-click budget, leave out the User-Agent too (any client may write any), so rotating
made-up values spends nothing."""

import hashlib

import grpc

from localplus_common.auth import Identity


def client_of(context: grpc.aio.ServicerContext) -> tuple[str, str]:
    """The client's address and User-Agent: the last x-forwarded-for entry, which the gateway appends
    (use_remote_address), or the connection's peer for a client that calls the service directly."""
    metadata = dict((k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str))
    forwarded = [part.strip() for part in metadata.get("x-forwarded-for", "").split(",") if part.strip()]
    address = forwarded[-1] if forwarded else context.peer().rpartition(":")[0]
    return address, metadata.get("user-agent", "")


def viewer_key(identity: Identity, context: grpc.aio.ServicerContext, *, by_browser: bool = True) -> str:
    """`by_browser=False` for what spends money (a promotion's clicks): the User-Agent is the client's
    to write, so an anonymous viewer is then the address alone."""
    if identity.user_id is not None:
        return f"u:{identity.user_id}"
    address, user_agent = client_of(context)
    seen = f"{address}\n{user_agent}" if by_browser else address
    digest = hashlib.sha256(seen.encode()).hexdigest()[:32]
    return f"a:{digest}"
