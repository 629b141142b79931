"""One mapping from failures to gRPC statuses (AIP-193), so no client mistake becomes a 500.

Every error carries a google.rpc.ErrorInfo with a reason a client can act on and the request id
(also sent as trailing metadata `x-request-id`), plus a BadRequest field violation for invalid
input; Envoy renders both as JSON.

What Postgres says is for the server's log, not for clients, with one exception: a message our
own PL/pgSQL raises (`raise exception '...' using errcode = ..., hint = '<REASON>'`) is written
for users and passed on, its HINT (when set) as the ErrorInfo reason and its DETAIL, when that is a
JSON object of strings (`detail = json_build_object('available', '1')::text`), as the ErrorInfo
metadata beside the request id; errcode P0001 is a 400 (FAILED_PRECONDITION), LP409 a 409
(ABORTED). Everything else becomes a stable message built from the SQLSTATE and the column or constraint Postgres names.
"""

import json
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "localplus.app"
REQUEST_ID_KEY = "x-request-id"
# What our own RAISEs use for a conflict with what others did meanwhile (sold out, taken): a 409,
# where P0001 (a state that forbids the request) is a 400.
CONFLICT_SQLSTATE = "LP409"
# grpc's key for the serialized google.rpc.Status, which Envoy's transcoder renders as the JSON body.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass
class ApiError(Exception):
    code: grpc.StatusCode
    message: str
    reason: str
    field: str = ""
    # What a client can act on besides the reason (e.g. how many tickets are left): ErrorInfo metadata.
    metadata: dict[str, str] = dataclass_field(default_factory=dict)

    def trailing_metadata(self, request_id: str) -> tuple[tuple[str, str | bytes], ...]:
        """The trailers that end a call with this error: the rich status and the request id."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata | {"request_id": request_id}
        )
        details: list[error_details_pb2.ErrorInfo | error_details_pb2.BadRequest] = [info]
        if self.field:
            violation = error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)
            details.append(error_details_pb2.BadRequest(field_violations=[violation]))
        packed = []
        for detail in details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        return (STATUS_DETAILS_KEY, status.SerializeToString()), (REQUEST_ID_KEY, request_id)


def invalid_argument(field: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, "INVALID_ARGUMENT", field)


def unauthenticated(message: str = "sign in first") -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message, "UNAUTHENTICATED")


def user_gone() -> ApiError:
    """A validly signed token whose `sub` is no longer in auth.users (the user was deleted)."""
    return unauthenticated("the token's user does not exist; sign in again")


def permission_denied(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, "PERMISSION_DENIED")


def not_found(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, message, "NOT_FOUND")


def already_exists(message: str, reason: str = "ALREADY_EXISTS") -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, message, reason)


def aborted(message: str, reason: str) -> ApiError:
    return ApiError(grpc.StatusCode.ABORTED, message, reason)


def failed_precondition(message: str, reason: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message, reason)


UNAVAILABLE = ApiError(grpc.StatusCode.UNAVAILABLE, "the database is unavailable; try again", "UNAVAILABLE")
INTERNAL = ApiError(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")


def _field_from_constraint(table: str | None, constraint: str | None) -> str:
    """`events_title_check` -> `title`; `event_permissions_user_id_fkey` -> `user_id`."""
    name = constraint or ""
    if table and name.startswith(table + "_"):
        name = name[len(table) + 1 :]
    for suffix in ("_check", "_fkey", "_key", "_pkey"):
        name = name.removesuffix(suffix)
    return name


def _raised_by_us(error: asyncpg.PostgresError) -> bool:
    """Whether a PL/pgSQL RAISE of ours wrote this error (its context names the RAISE statement) rather
    than Postgres itself; a statement failing inside one of our functions is Postgres's."""
    context: str = getattr(error, "context", None) or ""
    return context.partition("\n")[0].endswith(" at RAISE")


def from_database_error(error: asyncpg.PostgresError) -> ApiError:
    """Turn what Postgres refused into the status a client should see."""
    stable = _stable_error(error)
    if not _raised_by_us(error):
        return stable
    hint: str = getattr(error, "hint", None) or ""
    return ApiError(stable.code, error.message or stable.message, hint or stable.reason, stable.field, _metadata(error))


def _metadata(error: asyncpg.PostgresError) -> dict[str, str]:
    """The ErrorInfo metadata one of our RAISEs gave in its DETAIL (a JSON object of strings), if any."""
    try:
        detail = json.loads(getattr(error, "detail", None) or "{}")
    except ValueError:
        return {}
    if not isinstance(detail, dict):
        return {}
    return {str(key): str(value) for key, value in detail.items() if isinstance(value, str)}


def _stable_error(error: asyncpg.PostgresError) -> ApiError:
    """Our words for a SQLSTATE, naming the column or constraint involved where Postgres gives one."""
    sqlstate = error.sqlstate or ""
    column = getattr(error, "column_name", None) or ""
    field = column or _field_from_constraint(
        getattr(error, "table_name", None), getattr(error, "constraint_name", None)
    )
    subject = field or "a value"
    if sqlstate == "23505":
        return already_exists("that already exists")
    if sqlstate == "23503":
        return invalid_argument(field, f"{field or 'a referenced record'} does not exist")
    if sqlstate == "23502":
        return invalid_argument(field, f"{subject} is required")
    if sqlstate in ("23514", "23P01"):
        return invalid_argument(field, f"{subject} is out of range or malformed")
    if sqlstate in ("22021", "22P05"):
        # The only text a protobuf string carries that Postgres cannot store is a NUL character.
        return invalid_argument(field, "text may not contain NUL characters")
    if sqlstate == "22001":
        return invalid_argument(field, f"{subject} is too long")
    if sqlstate.startswith(("22", "23")):
        return invalid_argument(field, f"{subject} is out of range or malformed")
    if sqlstate == "42501":
        # Row-level security refused the write, or a grant is missing.
        return permission_denied("you may not do that")
    if sqlstate in ("40001", "40P01"):
        return aborted("the record changed concurrently; try again", "CONCURRENT_MODIFICATION")
    if sqlstate == "P0001":
        return failed_precondition("not allowed now", "FAILED_PRECONDITION")
    if sqlstate == CONFLICT_SQLSTATE:
        return aborted("that conflicts with a change made meanwhile", "CONFLICT")
    if sqlstate == "57014":
        return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "the request took too long", "DEADLINE_EXCEEDED")
    # Connection lost, the server shutting down or starting up, out of connections or resources.
    if sqlstate.startswith(("08", "53")) or sqlstate in ("57P01", "57P02", "57P03"):
        return UNAVAILABLE
    return INTERNAL
