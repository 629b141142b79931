"""Calls from one service to another (CONTRACT §1): they carry the caller's `authorization`
metadata, its request id and trace, and what is left of the caller's deadline, and an error the other
service answered with reaches our caller unchanged (status, message, ErrorInfo reason, BadRequest field)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

from localplus_common.auth import bearer_from_metadata
from localplus_common.errors import REQUEST_ID_KEY, STATUS_DETAILS_KEY, ApiError
from localplus_common.telemetry import trace_context

# The longest a call to another service may take when our caller set no deadline.
DEFAULT_TIMEOUT_S = 10.0
# Client-side balancing: a plain target resolves once to one address and keeps one HTTP/2 connection, so
# behind a k8s Service every call would go to one pod. `dns:///` with round_robin connects to every
# address the name has (a headless Service: each ready pod) and spreads calls over them; the servers'
# max connection age (localplus_common.server) makes the channel resolve again and find new pods.
CHANNEL_OPTIONS = [("grpc.lb_policy_name", "round_robin")]


def channel_to(address: str) -> grpc.aio.Channel:
    """A channel to another service at `address` (host:port), balanced per call over its addresses."""
    return grpc.aio.insecure_channel(f"dns:///{address}", options=CHANNEL_OPTIONS)


@dataclass(frozen=True)
class Forward:
    """What a call to another service takes over from the call being served."""

    authorization: str | None = None
    deadline_s: float | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext) -> Forward:
        metadata = context.invocation_metadata()
        request_id = next((v for k, v in metadata or () if k == REQUEST_ID_KEY and isinstance(v, str)), None)
        return cls(bearer_from_metadata(metadata), context.time_remaining(), request_id)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Read when the call is made, so the trace context is that of the span current then."""
        pairs = [("authorization", self.authorization), (REQUEST_ID_KEY, self.request_id), *trace_context()]
        return tuple((key, value) for key, value in pairs if value)

    @property
    def timeout(self) -> float:
        return DEFAULT_TIMEOUT_S if self.deadline_s is None else min(self.deadline_s, DEFAULT_TIMEOUT_S)


def passed_on(error: grpc.aio.AioRpcError, service: str) -> ApiError:
    """The other service's answer as our own error; when the answer is not one of its own (it could
    not be reached, or did not answer in time), a stable message naming `service`."""
    reason, field, ours = error.code().name, "", False
    metadata: dict[str, str] = {}
    for key, value in error.trailing_metadata() or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status, ours = status_pb2.Status.FromString(value), True
        for detail in status.details:
            info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
            if detail.Unpack(info):
                reason = info.reason or reason
                metadata = {key: value for key, value in info.metadata.items() if key != "request_id"}
            elif detail.Unpack(bad_request) and bad_request.field_violations:
                field = bad_request.field_violations[0].field
    if not ours:
        return ApiError(error.code(), f"the {service} service did not answer ({reason}); try again", reason)
    return ApiError(error.code(), error.details() or "", reason, field, metadata)
