"""One mapping from failures to gRPC statuses (AIP-193), so no client mistake becomes a 500.

Errors carry a google.rpc.ErrorInfo reason where a client can act on it, and a BadRequest
field violation for invalid input; Envoy renders both as JSON.
"""

import logging
from dataclasses import dataclass

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "localplus.app"
log = logging.getLogger(__name__)


@dataclass
class ApiError(Exception):
    code: grpc.StatusCode
    message: str
    reason: str = ""
    field: str = ""

    def to_status(self) -> grpc.Status:
        details = []
        if self.reason:
            details.append(error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN))
        if self.field:
            violation = error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)
            details.append(error_details_pb2.BadRequest(field_violations=[violation]))
        packed = []
        for detail in details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        proto = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        return rpc_status.to_status(proto)


def invalid_argument(field: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, "INVALID_ARGUMENT", field)


def unauthenticated(message: str = "sign in first") -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message, "UNAUTHENTICATED")


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


def _field_from_constraint(table: str | None, constraint: str | None) -> str:
    """`events_title_check` -> `title`; `event_permissions_user_id_fkey` -> `user_id`."""
    name = constraint or ""
    if table and name.startswith(table + "_"):
        name = name[len(table) + 1 :]
    for suffix in ("_check", "_fkey", "_key", "_pkey"):
        name = name.removesuffix(suffix)
    return name


def from_database_error(error: asyncpg.PostgresError) -> ApiError:
    """Turn what Postgres refused into the status a client should see."""
    sqlstate = error.sqlstate or ""
    table = getattr(error, "table_name", None)
    constraint = getattr(error, "constraint_name", None)
    if isinstance(error, asyncpg.UniqueViolationError):
        return already_exists("that already exists")
    if isinstance(error, asyncpg.ForeignKeyViolationError):
        field = _field_from_constraint(table, constraint)
        return invalid_argument(field, f"{field or 'a referenced record'} does not exist")
    if isinstance(error, asyncpg.CheckViolationError):
        field = _field_from_constraint(table, constraint)
        return invalid_argument(field, f"{field or 'a value'} is out of range or malformed")
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        # Row-level security refused the write (SQLSTATE 42501), or one of our triggers did, in words.
        generic = (error.message or "").startswith(("new row violates", "permission denied"))
        return permission_denied("you may not do that" if generic else error.message)
    if sqlstate.startswith(("22", "23")):
        return invalid_argument("", "invalid value: " + (error.message or "data exception").split("\n")[0])
    if sqlstate in ("40001", "40P01"):
        return aborted("the record changed concurrently; try again", "CONCURRENT_MODIFICATION")
    if sqlstate == "P0001":
        hint = getattr(error, "hint", None) or "FAILED_PRECONDITION"
        return failed_precondition(error.message or "not allowed now", hint)
    if sqlstate == "57014":
        return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "the request took too long")
    log.error("unmapped database error %s: %s", sqlstate, error.message)
    return ApiError(grpc.StatusCode.INTERNAL, "internal error")


UNAVAILABLE = ApiError(grpc.StatusCode.UNAVAILABLE, "the database is unavailable; try again", "UNAVAILABLE")
