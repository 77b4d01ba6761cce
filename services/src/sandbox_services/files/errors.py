"""OSErrors as the contract's file errors: the error code by errno, the path and operation in details.

This is the one mapping of filesystem errors for every service that takes a path (files,
backup, watch). Errors caused by the path as written (a name too long, a loop of symbolic
links, a file where a directory must be) are 4xx and name the request's field as well; a path
that is not a regular file where one is needed (:class:`NotRegularFile`) is 400
``VALIDATION_FAILED`` naming the field.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from sandbox_core.errors import ErrorCode, SandboxError

_CODES = {
    errno.ENOENT: ErrorCode.FILE_NOT_FOUND,
    errno.EACCES: ErrorCode.PERMISSION_DENIED,
    errno.EPERM: ErrorCode.PERMISSION_DENIED,
    errno.ENOSPC: ErrorCode.NO_SPACE,
    errno.EDQUOT: ErrorCode.NO_SPACE,
    errno.EISDIR: ErrorCode.IS_DIRECTORY,
    errno.ENOTDIR: ErrorCode.NOT_DIRECTORY,
    errno.EEXIST: ErrorCode.FILE_EXISTS,
    errno.ENAMETOOLONG: ErrorCode.NAME_TOO_LONG,
    errno.ELOOP: ErrorCode.TOO_MANY_LINKS,
    errno.EMFILE: ErrorCode.TOO_MANY_FILES,
    errno.ENFILE: ErrorCode.TOO_MANY_FILES,
    errno.EROFS: ErrorCode.READ_ONLY,
    errno.ENOTEMPTY: ErrorCode.FILE_EXISTS,
    errno.EBUSY: ErrorCode.RESOURCE_BUSY,
}
#: Errors of the path as written: their details also name the request's field.
_PATH_SHAPED = {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR}
_REASONS = {
    errno.ENAMETOOLONG: "a name in it is longer than the filesystem allows (255 bytes)",
    errno.ELOOP: "it goes through too many symbolic links (a loop?)",
}


class NotRegularFile(OSError):
    """The path is a FIFO, a socket or a device where the operation needs a regular file."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file (a {kind})", path)
        self.kind = kind


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


def fs_error(exc: OSError, path: str, operation: str, field: str = "path") -> SandboxError:
    """The contract's error for an OSError: code by errno, ``path`` and ``operation`` in details
    (and ``field``, the request's field that named the path, for errors of the path itself)."""
    details: dict[str, Any] = {"path": path, "operation": operation}
    if isinstance(exc, NotRegularFile):
        details.update(field=field, fileType=exc.kind)
        return SandboxError(
            ErrorCode.VALIDATION_FAILED,
            f"{field} must name a regular file: {path} is a {exc.kind}",
            details,
        )
    code = _CODES.get(exc.errno or 0, ErrorCode.FILESYSTEM_ERROR)
    reason = exc.strerror or str(exc)
    if code == ErrorCode.FILE_NOT_FOUND:
        message = f"File not found: {path}"
    elif code == ErrorCode.FILESYSTEM_ERROR:
        message = f"Filesystem error on {path}: {reason}"
        details["stderr"] = reason
    else:
        message = f"{reason}: {path}"
        if exc.errno in _PATH_SHAPED:
            details["field"] = field
            if exc.errno in _REASONS:
                message = f"{reason}: {field} {path}: {_REASONS[exc.errno]}"
    return SandboxError(code, message, details)


def oserror(code: int, path: str) -> OSError:
    """An OSError for errno ``code`` on ``path``, as the system would raise it (mapped by :func:`fs_error`)."""
    return OSError(code, os.strerror(code), path)
