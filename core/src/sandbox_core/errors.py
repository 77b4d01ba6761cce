"""The one error table: codes, their HTTP status, suggestions, and the typed exceptions.

Services raise :class:`SandboxError` with a code from this table; transports turn it into
their wire shape with :meth:`SandboxError.to_body`; clients turn a wire error back into the
typed subclass chosen by its code with :func:`error_from_code`.
"""

from __future__ import annotations

from typing import Any

from .clock import now_iso

#: HTTP status for each error code of the contract (unknown codes are 500).
STATUS: dict[str, int] = {}


def _codes(status: int, *codes: str) -> None:
    for code in codes:
        STATUS[code] = status


_codes(
    404,
    "FILE_NOT_FOUND",
    "COMMAND_NOT_FOUND",
    "PROCESS_NOT_FOUND",
    "PORT_NOT_EXPOSED",
    "GIT_REPOSITORY_NOT_FOUND",
    "GIT_BRANCH_NOT_FOUND",
    "CONTEXT_NOT_FOUND",
    "WATCH_NOT_FOUND",
    "BACKUP_NOT_FOUND",
    "SESSION_NOT_FOUND",
)
_codes(
    400,
    "IS_DIRECTORY",
    "NOT_DIRECTORY",
    "INVALID_COMMAND",
    "INVALID_PORT_NUMBER",
    "INVALID_PORT",
    "INVALID_GIT_URL",
    "CUSTOM_DOMAIN_REQUIRED",
    "INVALID_JSON_RESPONSE",
    "NAME_TOO_LONG",
    "VALIDATION_FAILED",
    "MISSING_CREDENTIALS",
    "INVALID_MOUNT_CONFIG",
    "BACKUP_EXPIRED",
    "INVALID_BACKUP_CONFIG",
)
_codes(401, "GIT_AUTH_FAILED")
_codes(403, "PERMISSION_DENIED", "COMMAND_PERMISSION_DENIED", "PROCESS_PERMISSION_DENIED", "READ_ONLY")
_codes(405, "METHOD_NOT_ALLOWED")
_codes(408, "PROCESS_READY_TIMEOUT")
_codes(
    409,
    "FILE_EXISTS",
    "PORT_ALREADY_EXPOSED",
    "PORT_IN_USE",
    "RESOURCE_BUSY",
    "SESSION_ALREADY_EXISTS",
    "OPERATION_INTERRUPTED",
    "PROCESS_ALREADY_EXISTS",
)
_codes(410, "SESSION_DESTROYED", "SESSION_TERMINATED")
_codes(413, "FILE_TOO_LARGE")
_codes(501, "PYTHON_NOT_AVAILABLE", "JAVASCRIPT_NOT_AVAILABLE")
_codes(502, "SERVICE_NOT_RESPONDING", "GIT_NETWORK_ERROR")
_codes(
    503,
    "INTERPRETER_NOT_READY",
    "OPENCODE_STARTUP_FAILED",
    "RPC_TRANSPORT_ERROR",
    "CONTAINER_UNAVAILABLE",
)

SUGGESTIONS: dict[str, str] = {
    "FILE_NOT_FOUND": "Ensure the file exists before attempting to access it",
    "SESSION_TERMINATED": "The session's shell exited; the next call on this id starts a fresh shell",
    "SESSION_ALREADY_EXISTS": "Use a different session id or delete the existing session first",
    "SESSION_NOT_FOUND": "Create the session first or check the session id",
    "VALIDATION_FAILED": "Check the request body against the API contract",
    "COMMAND_EXECUTION_ERROR": "Check the command and its timeout",
    "INVALID_COMMAND": "Provide a non-empty command",
}


class SandboxError(Exception):
    """An error with a code from the table, a message for people and details for programs."""

    default_code = "INTERNAL_ERROR"

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        details: dict[str, Any] | None = None,
        *,
        operation: str | None = None,
        status: int | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = message or self.code
        self.details = dict(details or {})
        self.operation = operation or self.details.get("operation")
        self._status = status
        super().__init__(self.message)

    @property
    def status(self) -> int:
        """The HTTP status of this error's code (500 for codes outside the table)."""
        return self._status or STATUS.get(self.code, 500)

    def to_body(self) -> dict[str, Any]:
        """The contract's error body: code, message, context, httpStatus, timestamp, ..."""
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "context": self.details,
            "httpStatus": self.status,
            "timestamp": now_iso(),
        }
        if self.operation:
            body["operation"] = self.operation
        suggestion = SUGGESTIONS.get(self.code)
        if suggestion:
            body["suggestion"] = suggestion
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, details={self.details!r})"


#: The contract's answer for a path or operation that does not exist (code UNKNOWN_ERROR, 404).
def not_found(message: str = "The requested endpoint was not found", **details: Any) -> SandboxError:
    return SandboxError("UNKNOWN_ERROR", message, details, status=404)


def validation_error(message: str, field: str | None = None, **details: Any) -> SandboxError:
    """A 400 VALIDATION_FAILED naming the offending field."""
    if field is not None:
        details["field"] = field
    return SandboxError("VALIDATION_FAILED", message, details)


# Typed exceptions chosen by code on the client side, mirroring the official SDK's classes.


class FileNotFound(SandboxError):
    default_code = "FILE_NOT_FOUND"


class FileSystemError(SandboxError):
    default_code = "FILESYSTEM_ERROR"


class CommandError(SandboxError):
    default_code = "COMMAND_EXECUTION_ERROR"


class ProcessNotFound(SandboxError):
    default_code = "PROCESS_NOT_FOUND"


class ProcessError(SandboxError):
    default_code = "PROCESS_ERROR"


class SessionAlreadyExists(SandboxError):
    default_code = "SESSION_ALREADY_EXISTS"


class SessionNotFound(SandboxError):
    default_code = "SESSION_NOT_FOUND"


class SessionTerminated(SandboxError):
    default_code = "SESSION_TERMINATED"


class SessionDestroyed(SandboxError):
    default_code = "SESSION_DESTROYED"


class ValidationFailed(SandboxError):
    default_code = "VALIDATION_FAILED"


class GitError(SandboxError):
    default_code = "GIT_OPERATION_FAILED"


class PortError(SandboxError):
    default_code = "PORT_OPERATION_ERROR"


class TransportError(SandboxError):
    """The connection to the server failed or answered something that is not the contract."""

    default_code = "RPC_TRANSPORT_ERROR"


_BY_CODE: dict[str, type[SandboxError]] = {
    "FILE_NOT_FOUND": FileNotFound,
    "PROCESS_NOT_FOUND": ProcessNotFound,
    "SESSION_ALREADY_EXISTS": SessionAlreadyExists,
    "SESSION_NOT_FOUND": SessionNotFound,
    "SESSION_TERMINATED": SessionTerminated,
    "SESSION_DESTROYED": SessionDestroyed,
    "VALIDATION_FAILED": ValidationFailed,
    "RPC_TRANSPORT_ERROR": TransportError,
}
_BY_PREFIX: list[tuple[str, type[SandboxError]]] = [
    ("GIT_", GitError),
    ("PORT_", PortError),
    ("PROCESS_", ProcessError),
    ("COMMAND_", CommandError),
    ("INVALID_COMMAND", CommandError),
]
_FS_CODES = {
    "IS_DIRECTORY",
    "NOT_DIRECTORY",
    "FILE_EXISTS",
    "FILE_TOO_LARGE",
    "FILESYSTEM_ERROR",
    "PERMISSION_DENIED",
    "NO_SPACE",
    "TOO_MANY_FILES",
    "TOO_MANY_LINKS",
    "READ_ONLY",
}


def error_class(code: str) -> type[SandboxError]:
    """The typed exception class for a code (SandboxError when none is more specific)."""
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls
    if code in _FS_CODES:
        return FileSystemError
    for prefix, klass in _BY_PREFIX:
        if code.startswith(prefix):
            return klass
    return SandboxError


def error_from_code(
    code: str, message: str, details: dict[str, Any] | None = None, *, status: int | None = None
) -> SandboxError:
    """Build the typed exception for an error received from the wire."""
    return error_class(code)(code, message, details, status=status)
