"""Who is looking, for counting views and clicks once per viewer and day: `u:<user id>` when signed in;
an anonymous viewer is a hash of the client's address as the gateway saw it and its User-Agent (people
behind one address with the same browser count once; no address is stored). Nothing the client writes
in the body or in x-forwarded-for makes it a new viewer, so nobody can inflate counts (or spend a
promotion's pay-per-click budget) by rotating made-up ids."""

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


def viewer_key(identity: Identity, context: grpc.aio.ServicerContext) -> str:
    if identity.user_id is not None:
        return f"u:{identity.user_id}"
    address, user_agent = client_of(context)
    digest = hashlib.sha256(f"{address}\n{user_agent}".encode()).hexdigest()[:32]
    return f"a:{digest}"
