"""Paths: format-only validation, as the contract's, and resolution of relative paths."""

from __future__ import annotations

import os
from collections.abc import Callable

from sandbox_core.errors import validation_error

MAX_PATH_BYTES = 4096


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


def resolve_path(path: str, cwd: Callable[[], str], field: str = "path") -> str:
    """Validate ``path``; a relative one is joined to ``cwd()``, asked only then."""
    check_path(path, field)
    if os.path.isabs(path):
        return path
    return os.path.join(cwd(), path)
