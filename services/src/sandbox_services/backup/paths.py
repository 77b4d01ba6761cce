"""Where backups may read and write (contract sections a8 and g).

``dir`` must be a safe absolute path (no ``..``, no NUL, at most 4096 bytes) under one of the
allowed directory roots, and ``archivePath`` one under the archive root. Both are checked as
written *and* after resolving symbolic links, so a link inside an allowed root cannot point a
backup or a restore somewhere else.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from sandbox_core.errors import ErrorCode, SandboxError

from ..files.errors import NotRegularFile, fs_error

MAX_PATH_BYTES = 4096
#: The longest name of one directory entry (Linux filesystems: 255 bytes).
NAME_MAX = 255
#: Errors a path causes by what it is, whoever made it so: mapped as the files service maps them.
_PATH_ERRNOS = {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR}
#: The contract's allowed roots for ``dir``; the server's workspace is added to them by default.
UPSTREAM_DIR_ROOTS = ("/workspace", "/home", "/tmp", "/var/tmp", "/app")


def invalid(message: str, operation: str, field: str | None = None, **details: object) -> SandboxError:
    """400 INVALID_BACKUP_CONFIG (with the operation, ``backup.create`` or ``backup.restore``)."""
    if field is not None:
        details["field"] = field
    return SandboxError(ErrorCode.INVALID_BACKUP_CONFIG, message, {**details, "operation": operation})


def within(path: str, root: str) -> bool:
    """Whether the normalised absolute ``path`` is ``root`` or below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _shown(path: str) -> str:
    shown = path.replace("\x00", "\\0")
    return shown if len(shown) <= 300 else shown[:297] + "..."


def safe_absolute(path: str, field: str, operation: str) -> str:
    """``path`` normalised, when it is absolute, without ``..`` or NUL and at most 4096 bytes."""
    reason = None
    if not path:
        reason = "must not be empty"
    elif "\x00" in path:
        reason = "must not contain NUL bytes"
    elif not path.startswith("/"):
        reason = "must be an absolute path"
    elif ".." in path:
        reason = "must not contain '..'"
    else:
        try:
            size = len(os.fsencode(path))
        except UnicodeEncodeError:
            size = -1
            reason = "is not valid UTF-8"
        if size > MAX_PATH_BYTES:
            reason = f"must be at most {MAX_PATH_BYTES} bytes (it has {size})"
    if reason is not None:
        raise invalid(f"Invalid {field}: {reason}: {_shown(path)}", operation, field)
    return os.path.normpath(path)


def check_dir(path: str, roots: tuple[str, ...], operation: str) -> str:
    """The real path of a valid ``dir`` (see the module doc)."""
    normal = safe_absolute(path, "dir", operation)
    allowed = ", ".join(roots)
    if not any(within(normal, root) for root in roots):
        raise invalid(
            f"Directory not in allowed paths ({allowed}): {_shown(path)}", operation, "dir", allowedRoots=list(roots)
        )
    real = os.path.realpath(normal)
    if not any(within(real, os.path.realpath(root)) for root in roots):
        raise invalid(
            f"Directory {_shown(path)} resolves to {_shown(real)}, which is not in the allowed paths ({allowed})",
            operation,
            "dir",
            allowedRoots=list(roots),
        )
    return real


def check_archive(path: str, root: str, operation: str) -> str:
    """The real path of a valid ``archivePath`` (see the module doc)."""
    normal = safe_absolute(path, "archivePath", operation)
    if normal == root or not within(normal, root) or path.endswith("/"):
        raise invalid(
            f"Invalid archivePath: must be a file in the backup directory {root}/: {_shown(path)}",
            operation,
            "archivePath",
            archiveRoot=root,
        )
    real = os.path.realpath(normal)
    real_root = os.path.realpath(root)
    if real == real_root or not within(real, real_root):
        raise invalid(
            f"Invalid archivePath: {_shown(path)} resolves to {_shown(real)}, outside the backup directory {root}/",
            operation,
            "archivePath",
            archiveRoot=root,
        )
    return real


def mount_points() -> set[str]:
    """Every mount point of this process's mount namespace (bind mounts included)."""
    found: set[str] = set()
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                fields = line.split(" ")
                if len(fields) > 4:
                    found.add(_unescape(fields[4]))
    except OSError:
        pass
    return found


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are written as ``\\ooo``."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def is_mount_point(path: str) -> bool:
    return os.path.ismount(path) or path in mount_points()


def path_error(
    exc: OSError, path: str, field: str, operation: str, details: dict[str, Any] | None = None
) -> SandboxError | None:
    """The error for an OSError that the caller's ``path`` (the request's ``field``) caused (a
    name too long, a loop of symbolic links, a component that is a file, not a regular file),
    as the files service maps it and with ``details``; None for other errors (the operation's own)."""
    if isinstance(exc, FileExistsError):  # os.makedirs: a component of the path is a file
        exc = OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), exc.filename)
    if not isinstance(exc, NotRegularFile) and exc.errno not in _PATH_ERRNOS:
        return None
    error = fs_error(exc, path, operation, field)
    error.details.update(details or {})
    error.details["operation"] = operation
    return error


def sibling_name(name: str, tag: str, room: int = 0) -> str:
    """``.<name>.<tag>``, the name of a temporary entry beside ``name``, or ``.<tag>`` where that
    (and ``room`` more bytes) would be longer than a name may be."""
    long = f".{name}.{tag}"
    return long if len(os.fsencode(long)) + room <= NAME_MAX else f".{tag}"
