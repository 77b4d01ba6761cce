"""OSErrors as the contract's file errors: the error code by errno, the path and operation in details."""

from __future__ import annotations

import errno
import os
from typing import Any

from sandbox_core.errors import SandboxError

_CODES = {
    errno.ENOENT: "FILE_NOT_FOUND",
    errno.EACCES: "PERMISSION_DENIED",
    errno.EPERM: "PERMISSION_DENIED",
    errno.ENOSPC: "NO_SPACE",
    errno.EDQUOT: "NO_SPACE",
    errno.EISDIR: "IS_DIRECTORY",
    errno.ENOTDIR: "NOT_DIRECTORY",
    errno.EEXIST: "FILE_EXISTS",
    errno.ENAMETOOLONG: "NAME_TOO_LONG",
    errno.ELOOP: "TOO_MANY_LINKS",
    errno.EMFILE: "TOO_MANY_FILES",
    errno.ENFILE: "TOO_MANY_FILES",
    errno.EROFS: "READ_ONLY",
    errno.ENOTEMPTY: "FILE_EXISTS",
    errno.EBUSY: "RESOURCE_BUSY",
}


def fs_error(exc: OSError, path: str, operation: str) -> SandboxError:
    """The contract's error for an OSError: code by errno, ``path`` and ``operation`` in details."""
    code = _CODES.get(exc.errno or 0, "FILESYSTEM_ERROR")
    reason = exc.strerror or str(exc)
    details: dict[str, Any] = {"path": path, "operation": operation}
    if code == "FILE_NOT_FOUND":
        message = f"File not found: {path}"
    elif code == "FILESYSTEM_ERROR":
        message = f"Filesystem error on {path}: {reason}"
        details["stderr"] = reason
    else:
        message = f"{reason}: {path}"
    return SandboxError(code, message, details)


def oserror(code: int, path: str) -> OSError:
    """An OSError for errno ``code`` on ``path``, as the system would raise it (mapped by :func:`fs_error`)."""
    return OSError(code, os.strerror(code), path)
