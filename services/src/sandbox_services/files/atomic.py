"""Atomic writes: a temp file beside the target, renamed over it at the end, keeping the old file's mode
(or taking the one the caller gives).

Parents are created; a device is written in place, never replaced; a FIFO or a socket is
refused (:class:`~.errors.NotRegularFile`: a write to one could wait forever for a reader).
Everything here blocks: call it in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .errors import NotRegularFile, kind_of, oserror
from .fdio import Handle


@dataclass
class Target:
    """Where an atomic write goes: a temp file beside ``target``, renamed over it at the end."""

    target: str
    tmp: str | None  # None: written in place (the path is a device, not a regular file)
    handle: Handle


def _unlink_quietly(path: str) -> Callable[[], None]:
    """A callable that removes ``path`` if it is still there."""

    def unlink() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    return unlink


def prepare_write(path: str, mode: int | None = None) -> Target:
    """Create parents and open a temp file in the target's directory, with ``mode`` if given (a
    device written in place keeps its own), else the old file's mode."""
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    target = os.path.realpath(path) if os.path.islink(path) else path
    if os.path.basename(target) in ("", ".", ".."):  # "dir/", "dir/.", "dir/..": not a file name
        raise oserror(errno.EISDIR, path)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise oserror(errno.EISDIR, path)
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):  # a write would wait for a reader
            raise NotRegularFile(path, kind_of(st.st_mode))
        if not stat.S_ISREG(st.st_mode):  # a device (/dev/null): write in place, never replace it
            fd = os.open(target, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NONBLOCK)  # never blocks
            os.set_blocking(fd, True)
            return Target(target, None, Handle(fd))
    parent = os.path.dirname(target) or "."
    try:
        os.makedirs(parent, exist_ok=True)
    except FileExistsError:  # a parent component is a file
        raise oserror(errno.ENOTDIR, parent) from None
    name = os.path.basename(target)
    tmp = os.path.join(parent, f".{name[:120]}.tmp.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        if st is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):
                    os.fchown(fd, st.st_uid, st.st_gid)
        if mode is not None:  # after the chown, which clears set-id bits
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return Target(target, tmp, Handle(fd))


def commit(fd: int, target: Target) -> None:
    """Runs under the handle: the data is written; rename the temp file over the target."""
    if target.tmp is not None:
        os.rename(target.tmp, target.target)
        target.tmp = None


def finish(target: Target) -> None:
    """Close the handle; a temp file that was never renamed is removed."""
    target.handle.close(_unlink_quietly(target.tmp) if target.tmp else None)
