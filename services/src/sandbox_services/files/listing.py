"""Directory listings: a tree walk that does not follow symlinks, each entry as a FileInfo."""

from __future__ import annotations

import contextlib
import heapq
import os
import stat
from collections.abc import Iterator
from typing import Literal

from sandbox_core.clock import iso_us_from_ns
from sandbox_core.contract.models.files import FileInfo, FilePermissions
from sandbox_core.errors import ErrorCode, SandboxError

_RWX = ("---", "--x", "-w-", "-wx", "r--", "r-x", "rw-", "rwx")


def _file_type(mode: int) -> Literal["file", "directory", "symlink", "other"]:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _info(name: str, absolute: str, relative: str, st: os.stat_result) -> FileInfo:
    mode = st.st_mode
    owner = (mode >> 6) & 7
    return FileInfo(
        name=name,
        absolute_path=absolute,
        relative_path=relative,
        type=_file_type(mode),
        size=st.st_size,
        modified_at=iso_us_from_ns(st.st_mtime_ns),
        mode=_RWX[owner] + _RWX[(mode >> 3) & 7] + _RWX[mode & 7],
        permissions=FilePermissions(readable=bool(owner & 4), writable=bool(owner & 2), executable=bool(owner & 1)),
    )


def list_tree(full: str, recursive: bool, include_hidden: bool, limit: int) -> tuple[list[FileInfo], bool]:
    """The entries of directory ``full`` sorted by name, depth first when ``recursive`` (blocking):
    at most ``limit`` of them, and whether there were more (the walk stops there).

    Hidden entries are skipped unless ``include_hidden``, and so is everything inside a hidden
    directory; a subdirectory that cannot be read is listed but not entered. Memory stays bounded
    by ``limit`` even for a huge directory: only its first names (in order) are kept."""
    if not stat.S_ISDIR(os.stat(full).st_mode):
        raise SandboxError(
            ErrorCode.NOT_DIRECTORY, f"Path is not a directory: {full}", {"path": full, "operation": "directory.list"}
        )
    base = os.path.normpath(full)  # "dir/." lists as "dir"
    files: list[FileInfo] = []

    def entries(directory: str) -> list[os.DirEntry[str]]:
        """The first entries of ``directory`` by name: one more than there is room for, so a
        directory with more is seen as such."""
        with os.scandir(directory) as it:
            shown = (e for e in it if include_hidden or not e.name.startswith("."))
            return heapq.nsmallest(limit - len(files) + 1, shown, key=_name)

    stack: list[tuple[Iterator[os.DirEntry[str]], str]] = [(iter(entries(base)), "")]
    while stack:
        it, prefix = stack[-1]
        entry = next(it, None)
        if entry is None:
            stack.pop()
            continue
        relative = prefix + entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed while we list
            continue
        if len(files) >= limit:
            return files, True
        files.append(_info(entry.name, entry.path, relative, st))
        if recursive and stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                stack.append((iter(entries(entry.path)), relative + "/"))
    return files, False


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name
