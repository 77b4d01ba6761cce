"""The one error table: every code, its HTTP status, its client exception class and suggestion.

Services raise :class:`SandboxError` with an :class:`ErrorCode`; transports turn it into their
wire shape with :meth:`SandboxError.to_body`; clients turn a wire error back into the typed
subclass the code names with :func:`error_from_code`. A code outside the table (from a
third-party plugin, or a newer server) is still carried, with status 500 and the base class.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, ClassVar

from .clock import now_iso


class SandboxError(Exception):
    """An error with a code from the table, a message for people and details for programs."""

    default_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        details: dict[str, Any] | None = None,
        *,
        operation: str | None = None,
        status: int | None = None,
    ) -> None:
        self.code: str = str(code or self.default_code)
        self.message = message or self.code
        self.details: dict[str, Any] = dict(details or {})
        self.operation: str | None = operation or self.details.get("operation")
        self._status = status
        super().__init__(self.message)

    @property
    def status(self) -> int:
        """The HTTP status of this error's code (500 for codes outside the table)."""
        if self._status is not None:
            return self._status
        entry = lookup(self.code)
        return entry.status if entry is not None else 500

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
        entry = lookup(self.code)
        if entry is not None and entry.suggestion:
            body["suggestion"] = entry.suggestion
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, details={self.details!r})"


# The typed exceptions a client raises, one per family of the official SDK's classes. A family
# base (FileSystemError, CommandError, ...) is what a caller catches for any of its codes.


class ValidationFailed(SandboxError):
    default_code = "VALIDATION_FAILED"


class FileSystemError(SandboxError):
    default_code = "FILESYSTEM_ERROR"


class FileNotFound(FileSystemError):
    default_code = "FILE_NOT_FOUND"


class FileExists(FileSystemError):
    default_code = "FILE_EXISTS"


class FileTooLarge(FileSystemError):
    default_code = "FILE_TOO_LARGE"


class PermissionDenied(FileSystemError):
    default_code = "PERMISSION_DENIED"


class CommandError(SandboxError):
    default_code = "COMMAND_EXECUTION_ERROR"


class CommandNotFound(CommandError):
    default_code = "COMMAND_NOT_FOUND"


class ProcessError(SandboxError):
    default_code = "PROCESS_ERROR"


class ProcessNotFound(ProcessError):
    default_code = "PROCESS_NOT_FOUND"


class ProcessReadyTimeout(ProcessError):
    default_code = "PROCESS_READY_TIMEOUT"


class ProcessExitedBeforeReady(ProcessError):
    default_code = "PROCESS_EXITED_BEFORE_READY"


class SessionAlreadyExists(SandboxError):
    default_code = "SESSION_ALREADY_EXISTS"


class SessionNotFound(SandboxError):
    default_code = "SESSION_NOT_FOUND"


class SessionTerminated(SandboxError):
    default_code = "SESSION_TERMINATED"


class SessionDestroyed(SandboxError):
    default_code = "SESSION_DESTROYED"


class PortError(SandboxError):
    default_code = "PORT_OPERATION_ERROR"


class InvalidPort(PortError):
    default_code = "INVALID_PORT"


class PortNotExposed(PortError):
    default_code = "PORT_NOT_EXPOSED"


class PortAlreadyExposed(PortError):
    default_code = "PORT_ALREADY_EXPOSED"


class PortInUse(PortError):
    default_code = "PORT_IN_USE"


class ServiceNotResponding(PortError):
    default_code = "SERVICE_NOT_RESPONDING"


class GitError(SandboxError):
    default_code = "GIT_OPERATION_FAILED"


class GitRepositoryNotFound(GitError):
    default_code = "GIT_REPOSITORY_NOT_FOUND"


class GitAuthenticationFailed(GitError):
    default_code = "GIT_AUTH_FAILED"


class GitBranchNotFound(GitError):
    default_code = "GIT_BRANCH_NOT_FOUND"


class GitNetworkError(GitError):
    default_code = "GIT_NETWORK_ERROR"


class GitCloneFailed(GitError):
    default_code = "GIT_CLONE_FAILED"


class GitCheckoutFailed(GitError):
    default_code = "GIT_CHECKOUT_FAILED"


class InvalidGitUrl(GitError):
    default_code = "INVALID_GIT_URL"


class InterpreterNotReady(SandboxError):
    default_code = "INTERPRETER_NOT_READY"


class ContextNotFound(SandboxError):
    default_code = "CONTEXT_NOT_FOUND"


class CodeExecutionError(SandboxError):
    default_code = "CODE_EXECUTION_ERROR"


class OperationInterrupted(SandboxError):
    default_code = "OPERATION_INTERRUPTED"


class AccessDenied(SandboxError):
    """The server refused the request at its edge: no or a wrong token (401), or a Host or
    browser Origin it does not allow (403). Not part of the upstream contract."""

    default_code = "UNAUTHORIZED"


class IdempotencyKeyReused(SandboxError):
    """An ``idempotencyKey`` sent again with other parameters (another command, another
    operation) within its window. Not part of the upstream contract."""

    default_code = "IDEMPOTENCY_KEY_REUSED"


class ContainerUnavailable(SandboxError):
    default_code = "CONTAINER_UNAVAILABLE"


class TransportError(SandboxError):
    """The connection to the server failed or answered something that is not the contract."""

    default_code = "RPC_TRANSPORT_ERROR"


class BackupError(SandboxError):
    default_code = "BACKUP_CREATE_FAILED"


class BucketMountError(SandboxError):
    default_code = "BUCKET_MOUNT_ERROR"


class WatchError(SandboxError):
    default_code = "WATCH_START_ERROR"


class ErrorCode(StrEnum):
    """Every error code of the contract, with its HTTP status, client exception and suggestion."""

    status: int
    error_class: type[SandboxError]
    suggestion: str

    def __new__(
        cls, value: str, status: int, error_class: type[SandboxError] = SandboxError, suggestion: str = ""
    ) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.error_class = error_class
        member.suggestion = suggestion
        return member

    # files
    FILE_NOT_FOUND = "FILE_NOT_FOUND", 404, FileNotFound, "Ensure the file exists before attempting to access it"
    FILE_EXISTS = "FILE_EXISTS", 409, FileExists, "Use a different path or delete the existing file first"
    FILE_TOO_LARGE = "FILE_TOO_LARGE", 413, FileTooLarge, "Read the file as a stream instead"
    PERMISSION_DENIED = "PERMISSION_DENIED", 403, PermissionDenied, "Check file and directory permissions"
    IS_DIRECTORY = "IS_DIRECTORY", 400, FileSystemError, "The path is a directory; this operation needs a file"
    NOT_DIRECTORY = "NOT_DIRECTORY", 400, FileSystemError, "A component of the path is a file, not a directory"
    NAME_TOO_LONG = "NAME_TOO_LONG", 400, FileSystemError, "Use a shorter file name or path"
    NO_SPACE = "NO_SPACE", 500, FileSystemError, "Free disk space in the sandbox or increase its storage"
    TOO_MANY_FILES = "TOO_MANY_FILES", 500, FileSystemError, "Close files or raise the open-file limit"
    # upstream: 500; here only a loop of symbolic links in the caller's path (ELOOP) raises it
    TOO_MANY_LINKS = "TOO_MANY_LINKS", 400, FileSystemError, "The path has too many symbolic links or hard links"
    READ_ONLY = "READ_ONLY", 403, FileSystemError, "The file system is read-only"
    RESOURCE_BUSY = "RESOURCE_BUSY", 409, FileSystemError, "The resource is in use; retry when it is free"
    FILESYSTEM_ERROR = "FILESYSTEM_ERROR", 500, FileSystemError
    # commands and sessions
    COMMAND_NOT_FOUND = "COMMAND_NOT_FOUND", 404, CommandNotFound, "Check that the command is installed and on PATH"
    COMMAND_PERMISSION_DENIED = "COMMAND_PERMISSION_DENIED", 403, CommandError
    COMMAND_EXECUTION_ERROR = "COMMAND_EXECUTION_ERROR", 500, CommandError, "Check the command and its timeout"
    INVALID_COMMAND = "INVALID_COMMAND", 400, CommandError, "Provide a non-empty command"
    STREAM_START_ERROR = "STREAM_START_ERROR", 500, CommandError
    SESSION_ALREADY_EXISTS = (
        "SESSION_ALREADY_EXISTS",
        409,
        SessionAlreadyExists,
        "Use a different session id or delete the existing session first",
    )
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND", 404, SessionNotFound, "Create the session first or check the session id"
    SESSION_DESTROYED = "SESSION_DESTROYED", 410, SessionDestroyed, "Create a new session to continue"
    SESSION_TERMINATED = (
        "SESSION_TERMINATED",
        410,
        SessionTerminated,
        "The session's shell exited; the next call on this id starts a fresh shell",
    )
    # processes
    PROCESS_NOT_FOUND = (
        "PROCESS_NOT_FOUND",
        404,
        ProcessNotFound,
        "Check the process id; finished processes are kept only up to a limit",
    )
    PROCESS_ALREADY_EXISTS = (
        "PROCESS_ALREADY_EXISTS",
        409,
        ProcessError,
        "Use another process id or kill the running one",
    )
    # ours: a process's stdin, signals and terminal
    PROCESS_STDIN_UNAVAILABLE = (
        "PROCESS_STDIN_UNAVAILABLE",
        409,
        ProcessError,
        "Start the process with stdin 'pipe' (or a pty), and write before it exits or its stdin is closed",
    )
    PROCESS_STDIN_TIMEOUT = (
        "PROCESS_STDIN_TIMEOUT",
        408,
        ProcessError,
        "The process is not reading its stdin; write less at a time or raise the write's timeoutMs",
    )
    PROCESS_NOT_RUNNING = (
        "PROCESS_NOT_RUNNING",
        409,
        ProcessError,
        "The process has exited; a signal or resize reaches only a running process",
    )
    PROCESS_NO_TERMINAL = "PROCESS_NO_TERMINAL", 409, ProcessError, "Start the process with a pty to resize it"
    PROCESS_PERMISSION_DENIED = "PROCESS_PERMISSION_DENIED", 403, ProcessError
    PROCESS_ERROR = "PROCESS_ERROR", 500, ProcessError
    PROCESS_READY_TIMEOUT = "PROCESS_READY_TIMEOUT", 408, ProcessReadyTimeout
    PROCESS_EXITED_BEFORE_READY = "PROCESS_EXITED_BEFORE_READY", 500, ProcessExitedBeforeReady
    # ports
    INVALID_PORT_NUMBER = "INVALID_PORT_NUMBER", 400, InvalidPort, "Ports are 1 to 65535"
    INVALID_PORT = "INVALID_PORT", 400, InvalidPort, "Ports are 1 to 65535"
    PORT_NOT_EXPOSED = "PORT_NOT_EXPOSED", 404, PortNotExposed
    PORT_ALREADY_EXPOSED = "PORT_ALREADY_EXPOSED", 409, PortAlreadyExposed
    PORT_IN_USE = "PORT_IN_USE", 409, PortInUse, "Choose a different port"
    PORT_OPERATION_ERROR = "PORT_OPERATION_ERROR", 500, PortError
    SERVICE_NOT_RESPONDING = "SERVICE_NOT_RESPONDING", 502, ServiceNotResponding
    CUSTOM_DOMAIN_REQUIRED = "CUSTOM_DOMAIN_REQUIRED", 400
    # git
    GIT_REPOSITORY_NOT_FOUND = (
        "GIT_REPOSITORY_NOT_FOUND",
        404,
        GitRepositoryNotFound,
        "Check that the repository URL is right and reachable",
    )
    GIT_BRANCH_NOT_FOUND = "GIT_BRANCH_NOT_FOUND", 404, GitBranchNotFound, "Check the branch name"
    GIT_AUTH_FAILED = "GIT_AUTH_FAILED", 401, GitAuthenticationFailed, "Check the credentials in the repository URL"
    GIT_NETWORK_ERROR = "GIT_NETWORK_ERROR", 502, GitNetworkError, "Check the network, or raise the clone's timeout"
    GIT_CLONE_FAILED = "GIT_CLONE_FAILED", 500, GitCloneFailed
    GIT_CHECKOUT_FAILED = "GIT_CHECKOUT_FAILED", 500, GitCheckoutFailed
    GIT_OPERATION_FAILED = "GIT_OPERATION_FAILED", 500, GitError
    INVALID_GIT_URL = "INVALID_GIT_URL", 400, InvalidGitUrl, "Use an http(s), ssh or git URL"
    # interpreter
    INTERPRETER_NOT_READY = "INTERPRETER_NOT_READY", 503, InterpreterNotReady, "Retry in a moment"
    CONTEXT_NOT_FOUND = "CONTEXT_NOT_FOUND", 404, ContextNotFound, "Create the context first"
    CODE_EXECUTION_ERROR = "CODE_EXECUTION_ERROR", 500, CodeExecutionError
    PYTHON_NOT_AVAILABLE = "PYTHON_NOT_AVAILABLE", 501
    JAVASCRIPT_NOT_AVAILABLE = "JAVASCRIPT_NOT_AVAILABLE", 501
    # watch, backup, mounts
    WATCH_NOT_FOUND = "WATCH_NOT_FOUND", 404, WatchError
    WATCH_START_ERROR = "WATCH_START_ERROR", 500, WatchError
    WATCH_STOP_ERROR = "WATCH_STOP_ERROR", 500, WatchError
    BACKUP_NOT_FOUND = "BACKUP_NOT_FOUND", 404, BackupError
    BACKUP_EXPIRED = "BACKUP_EXPIRED", 400, BackupError
    INVALID_BACKUP_CONFIG = "INVALID_BACKUP_CONFIG", 400, BackupError
    BACKUP_CREATE_FAILED = "BACKUP_CREATE_FAILED", 500, BackupError
    BACKUP_RESTORE_FAILED = "BACKUP_RESTORE_FAILED", 500, BackupError
    MISSING_CREDENTIALS = "MISSING_CREDENTIALS", 400, BucketMountError
    INVALID_MOUNT_CONFIG = "INVALID_MOUNT_CONFIG", 400, BucketMountError
    BUCKET_MOUNT_ERROR = "BUCKET_MOUNT_ERROR", 500, BucketMountError
    BUCKET_UNMOUNT_ERROR = "BUCKET_UNMOUNT_ERROR", 500, BucketMountError
    S3FS_MOUNT_ERROR = "S3FS_MOUNT_ERROR", 500, BucketMountError
    # runtime and transport
    VALIDATION_FAILED = "VALIDATION_FAILED", 400, ValidationFailed, "Check the request body against the API contract"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED", 405
    OPERATION_INTERRUPTED = "OPERATION_INTERRUPTED", 409, OperationInterrupted
    INVALID_JSON_RESPONSE = "INVALID_JSON_RESPONSE", 400
    OPENCODE_STARTUP_FAILED = "OPENCODE_STARTUP_FAILED", 503
    RPC_TRANSPORT_ERROR = "RPC_TRANSPORT_ERROR", 503, TransportError
    CONTAINER_UNAVAILABLE = "CONTAINER_UNAVAILABLE", 503, ContainerUnavailable
    # ours: the readiness route's answer once the server has begun to shut down
    SHUTTING_DOWN = "SHUTTING_DOWN", 503, ContainerUnavailable, "The server is stopping: send requests elsewhere"
    UNKNOWN_ERROR = "UNKNOWN_ERROR", 500
    INTERNAL_ERROR = "INTERNAL_ERROR", 500
    # the edge (ours: upstream has no authentication; see sandbox_core.edge)
    UNAUTHORIZED = "UNAUTHORIZED", 401, AccessDenied, "Send the server's token as `Authorization: Bearer <token>`"
    HOST_NOT_ALLOWED = "HOST_NOT_ALLOWED", 403, AccessDenied, "Add the host to server.allowed_hosts"
    ORIGIN_NOT_ALLOWED = "ORIGIN_NOT_ALLOWED", 403, AccessDenied, "Add the page's origin to server.allowed_origins"
    # at-most-once requests (ours: upstream has no idempotency keys; see sandbox_services.idempotency)
    IDEMPOTENCY_KEY_REUSED = (
        "IDEMPOTENCY_KEY_REUSED",
        409,
        IdempotencyKeyReused,
        "Use a new idempotencyKey for a different request; reuse a key only to retry the same one",
    )


def lookup(code: str) -> ErrorCode | None:
    """The table's entry for ``code``, or None for a code outside it."""
    member = ErrorCode._value2member_map_.get(code)
    return member if isinstance(member, ErrorCode) else None


def not_found(message: str = "The requested endpoint was not found", **details: Any) -> SandboxError:
    """The contract's answer for a path or operation that does not exist (UNKNOWN_ERROR, 404)."""
    return SandboxError(ErrorCode.UNKNOWN_ERROR, message, details, status=404)


def validation_error(message: str, field: str | None = None, **details: Any) -> SandboxError:
    """A 400 VALIDATION_FAILED naming the offending field."""
    if field is not None:
        details["field"] = field
    return SandboxError(ErrorCode.VALIDATION_FAILED, message, details)


def error_class(code: str) -> type[SandboxError]:
    """The typed exception class for a code (SandboxError for codes outside the table)."""
    entry = lookup(code)
    return entry.error_class if entry is not None else SandboxError


def error_from_code(
    code: str, message: str, details: dict[str, Any] | None = None, *, status: int | None = None
) -> SandboxError:
    """Build the typed exception for an error received from the wire."""
    return error_class(code)(code, message, details, status=status)


def upgrade_refused(url: str, transport: str, status: int, body: bytes = b"") -> SandboxError:
    """The error for a WebSocket upgrade the server answered with an HTTP status instead:
    the server's own error when its body is the contract's (401/403 from the edge; 404 naming
    the transports it serves), else one saying what the status usually means."""
    sent: dict[str, Any] = {}
    try:
        decoded = json.loads(body) if body else None
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("code"), str) and isinstance(decoded.get("message"), str):
        sent = decoded
    context: dict[str, Any] = sent["context"] if isinstance(sent.get("context"), dict) else {}
    details: dict[str, Any] = {"url": url, "status": status}
    if status == 404:
        served = context.get("transports")
        if isinstance(served, list):
            details["transports"] = served
            message = f"{url} does not serve the {transport} transport; it serves: {', '.join(map(str, served))}"
        else:
            message = f"{url} does not serve the {transport} transport (HTTP 404)"
        return TransportError(ErrorCode.RPC_TRANSPORT_ERROR, message, details, status=status)
    if status in (401, 403):
        reason = sent.get("message") or "a missing or wrong token, or a Host or Origin it does not allow"
        code = sent.get("code") or ErrorCode.UNAUTHORIZED
        return error_from_code(
            str(code), f"The server refused the WebSocket upgrade (HTTP {status}): {reason}", details, status=status
        )
    reason = f": {sent['message']}" if sent else ""
    return TransportError(
        ErrorCode.RPC_TRANSPORT_ERROR,
        f"The server refused the WebSocket upgrade: HTTP {status}{reason}",
        details,
        status=status,
    )
