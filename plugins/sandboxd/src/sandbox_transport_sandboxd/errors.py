"""How a service's error reaches a sandboxd client: a gRPC status code, or a REST status with
the spec's error body ``{"code", "message"}``. Data: a code's own entry first, else its HTTP
status's, else INTERNAL."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from sandbox_core.errors import ErrorCode, SandboxError


@dataclass(frozen=True)
class Mapped:
    grpc: grpc.StatusCode
    status: int  # REST
    code: str  # REST body's "code" (the spec's names)


INVALID = Mapped(grpc.StatusCode.INVALID_ARGUMENT, 400, "INVALID_ARGUMENT")
NOT_FOUND = Mapped(grpc.StatusCode.NOT_FOUND, 404, "NOT_FOUND")
DENIED = Mapped(grpc.StatusCode.PERMISSION_DENIED, 403, "PERMISSION_DENIED")
UNAVAILABLE = Mapped(grpc.StatusCode.UNAVAILABLE, 503, "UNAVAILABLE")
INTERNAL = Mapped(grpc.StatusCode.INTERNAL, 500, "INTERNAL")

#: Codes whose meaning is not their HTTP status's (a 409 is FAILED_PRECONDITION by default).
BY_CODE: dict[str, Mapped] = {
    ErrorCode.FILE_EXISTS: Mapped(grpc.StatusCode.ALREADY_EXISTS, 409, "CONFLICT"),
    ErrorCode.RESOURCE_BUSY: Mapped(grpc.StatusCode.RESOURCE_EXHAUSTED, 409, "CONFLICT"),
    ErrorCode.FILE_TOO_LARGE: Mapped(grpc.StatusCode.RESOURCE_EXHAUSTED, 413, "RESOURCE_EXHAUSTED"),
    ErrorCode.NO_SPACE: Mapped(grpc.StatusCode.RESOURCE_EXHAUSTED, 507, "RESOURCE_EXHAUSTED"),
    ErrorCode.TOO_MANY_FILES: Mapped(grpc.StatusCode.RESOURCE_EXHAUSTED, 500, "RESOURCE_EXHAUSTED"),
    ErrorCode.PROCESS_STDIN_TIMEOUT: Mapped(grpc.StatusCode.DEADLINE_EXCEEDED, 408, "DEADLINE_EXCEEDED"),
    ErrorCode.PROCESS_READY_TIMEOUT: Mapped(grpc.StatusCode.DEADLINE_EXCEEDED, 408, "DEADLINE_EXCEEDED"),
    ErrorCode.UNAUTHORIZED: Mapped(grpc.StatusCode.UNAUTHENTICATED, 401, "UNAUTHENTICATED"),
    ErrorCode.SESSION_DESTROYED: NOT_FOUND,
    ErrorCode.SESSION_TERMINATED: NOT_FOUND,
}

#: By HTTP status, for every other code.
BY_STATUS: dict[int, Mapped] = {
    400: INVALID,
    401: Mapped(grpc.StatusCode.UNAUTHENTICATED, 401, "UNAUTHENTICATED"),
    403: DENIED,
    404: NOT_FOUND,
    405: Mapped(grpc.StatusCode.UNIMPLEMENTED, 405, "METHOD_NOT_ALLOWED"),
    408: Mapped(grpc.StatusCode.DEADLINE_EXCEEDED, 408, "DEADLINE_EXCEEDED"),
    409: Mapped(grpc.StatusCode.FAILED_PRECONDITION, 409, "CONFLICT"),
    410: NOT_FOUND,
    413: Mapped(grpc.StatusCode.RESOURCE_EXHAUSTED, 413, "RESOURCE_EXHAUSTED"),
    501: Mapped(grpc.StatusCode.UNIMPLEMENTED, 501, "UNIMPLEMENTED"),
    503: UNAVAILABLE,
}


def mapped(exc: SandboxError) -> Mapped:
    """Where ``exc`` goes on this transport's wires."""
    if exc.status == 503:  # whatever the code, the server says "not now, retry" (a full budget, shutdown)
        return UNAVAILABLE
    return BY_CODE.get(exc.code) or BY_STATUS.get(exc.status) or INTERNAL
