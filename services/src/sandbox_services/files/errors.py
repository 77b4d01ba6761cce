"""OSErrors as the contract's file errors: the error code by errno, the path and operation in details."""

from __future__ import annotations

import errno
import os
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


def fs_error(exc: OSError, path: str, operation: str) -> SandboxError:
    """The contract's error for an OSError: code by errno, ``path`` and ``operation`` in details."""
    code = _CODES.get(exc.errno or 0, ErrorCode.FILESYSTEM_ERROR)
    reason = exc.strerror or str(exc)
    details: dict[str, Any] = {"path": path, "operation": operation}
    if code == ErrorCode.FILE_NOT_FOUND:
        message = f"File not found: {path}"
    elif code == ErrorCode.FILESYSTEM_ERROR:
        message = f"Filesystem error on {path}: {reason}"
        details["stderr"] = reason
    else:
        message = f"{reason}: {path}"
    return SandboxError(code, message, details)


def oserror(code: int, path: str) -> OSError:
    """An OSError for errno ``code`` on ``path``, as the system would raise it (mapped by :func:`fs_error`)."""
    return OSError(code, os.strerror(code), path)
