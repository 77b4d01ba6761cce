"""Paths: format-only validation, as the contract's, and resolution of relative paths.

A relative path resolves against the session's current directory, which the sessions
service reads from ``/proc/<shell pid>/cwd``. When the shell's directory has been removed,
the kernel names it ``<old path> (deleted)``: joining a path to that would create a new
directory of that name, so a relative path is refused while the session's directory does
not exist (404 ``FILE_NOT_FOUND``, as the shell's own ``echo x > a.txt`` fails with ENOENT
there), with a message saying why. Absolute paths are unaffected.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sandbox_core.errors import ErrorCode, SandboxError, validation_error

MAX_PATH_BYTES = 4096
#: What the kernel appends to ``/proc/<pid>/cwd`` when that directory has been removed.
DELETED_SUFFIX = " (deleted)"


def check_path(path: str, field: str = "path") -> None:
    """Format-only validation, as the contract's: not empty, no NUL, at most 4096 bytes."""
    if not path:
        raise validation_error(f"{field} must not be empty", field)
    if "\x00" in path:
        raise validation_error(f"{field} must not contain NUL bytes", field)
    try:
        size = len(os.fsencode(path))
    except UnicodeEncodeError:
        raise validation_error(f"{field} is not valid UTF-8", field) from None
    if size > MAX_PATH_BYTES:
        raise validation_error(f"{field} is longer than {MAX_PATH_BYTES} bytes ({size})", field)


def check_cwd(cwd: str, path: str, field: str = "path") -> None:
    """Refuse to resolve ``path`` against ``cwd`` when ``cwd`` is not an existing directory
    (a removed one, which the kernel names ``<old path> (deleted)``): the join would create
    a directory there (a write creates parents) that the session's shell never sees."""
    if os.path.isdir(cwd):
        return  # also a real directory whose name happens to end in " (deleted)"
    if cwd.endswith(DELETED_SUFFIX):
        gone = cwd[: -len(DELETED_SUFFIX)]
        why = f"The session's working directory {gone} no longer exists (it was deleted)"
    else:
        gone = cwd
        why = f"The session's working directory {gone} does not exist (or is not a directory)"
    raise SandboxError(
        ErrorCode.FILE_NOT_FOUND,
        f"{why}, so the relative {field} '{path}' cannot be resolved: use an absolute path,"
        " or cd the session to an existing directory",
        {"path": path, "field": field, "cwd": gone},
    )


def resolve_path(path: str, cwd: Callable[[], str], field: str = "path") -> str:
    """Validate ``path``; a relative one is joined to ``cwd()``, asked only then (and refused
    when that directory has been removed, see :func:`check_cwd`)."""
    check_path(path, field)
    if os.path.isabs(path):
        return path
    base = cwd()
    check_cwd(base, path, field)
    return os.path.join(base, path)


def _inside(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


def confine_path(path: str, root: str, field: str = "path") -> str:
    """``path`` taken inside the directory ``root`` (the workspace), or 403 PERMISSION_DENIED.

    The rule of agent-sandbox's sandboxd: a relative path is relative to ``root``; an absolute
    path already under ``root`` keeps its meaning, any other absolute path is re-rooted there
    (``/etc/passwd`` is ``<root>/etc/passwd``); empty or ``/`` is ``root`` itself. The result
    must stay inside ``root`` once symlinks are resolved: its directory is resolved (symlinks
    and ``..`` as the kernel would), and a symlink as the last component must point inside
    too, or the path is refused, naming it and ``field``. The answer is the path with its
    directory resolved and its last component as given (an operation on a link acts on the
    link). Blocking (it reads symlinks): call it in a worker thread."""
    if path:
        check_path(path, field)
    base = os.path.realpath(root)
    rel = path
    if os.path.isabs(path):  # cleaned first, as sandboxd does: "/../x" is "/x"
        clean = os.path.normpath(path)
        rel = clean.lstrip("/")
        for prefix in (os.path.normpath(root), base):
            if prefix != "/" and _inside(clean, prefix):
                rel = os.path.relpath(clean, prefix)
                break
    joined = os.path.join(base, rel)
    head, name = os.path.split(joined.rstrip("/") or "/")
    if name in ("", ".", ".."):  # a directory named by itself: resolve it whole
        final = resolved = os.path.realpath(joined)
    else:
        final = os.path.join(os.path.realpath(head), name)
        resolved = os.path.realpath(final)  # a symlink's target must be inside too
    if not (_inside(final, base) and _inside(resolved, base)):
        raise SandboxError(
            ErrorCode.PERMISSION_DENIED,
            f"{field} '{path}' resolves outside the workspace {root} (to {resolved})",
            {"path": path, "field": field, "root": root, "resolved": resolved, "operation": "path.confine"},
        )
    return final
