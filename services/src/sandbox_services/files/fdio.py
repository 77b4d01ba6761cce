"""Blocking fd-level I/O for worker threads: opening for read, whole reads and writes, shared handles."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

from .errors import NotRegularFile, kind_of, oserror
from .mime import SNIFF_BYTES

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Handle:
    """An fd used from worker threads one call at a time; :meth:`close` never blocks the loop.

    Closing while a worker uses the fd defers the close (and ``on_close``) to that worker, so a
    cancelled stream never closes an fd under a running read or write."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._on_close: Callable[[], None] | None = None
        self._state = threading.Lock()
        self._busy = False
        self._closing = False

    def run(self, fn: Callable[[int, *Ts], T], *args: *Ts) -> T:
        """``fn(fd, *args)``; EBADF once the handle is closing."""
        with self._state:
            if self._closing:
                raise oserror(errno.EBADF, "")
            self._busy = True
        try:
            return fn(self.fd, *args)
        finally:
            with self._state:
                self._busy = False
                if self._closing:
                    self._close_locked()

    def close(self, on_close: Callable[[], None] | None = None) -> None:
        """Close the fd now, or when the running call returns; then call ``on_close``."""
        with self._state:
            if on_close is not None:
                self._on_close = on_close
            self._closing = True
            if not self._busy:
                self._close_locked()

    def _close_locked(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
            if self._on_close is not None:
                with contextlib.suppress(OSError):
                    self._on_close()


def read_full(fd: int, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of file."""
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.read(fd, size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def pread_full(fd: int, size: int, position: int) -> bytes:
    """Up to ``size`` bytes at ``position``: fewer only at the end of the file."""
    data = os.pread(fd, size, position)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, position + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data``, however many ``write`` calls it takes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def check_regular(st: os.stat_result, path: str) -> None:
    """Raise unless ``st`` is a regular file's: EISDIR for a directory, :class:`NotRegularFile`
    for a FIFO, a socket or a device (a read of one could wait forever or never end)."""
    if stat.S_ISDIR(st.st_mode):
        raise oserror(errno.EISDIR, path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(path, kind_of(st.st_mode))


def open_read(path: str) -> tuple[int, os.stat_result]:
    """Open a regular file for reading (see :func:`check_regular`), checked before the open (a
    device is never opened) and after it (the path may have changed meanwhile)."""
    check_regular(os.stat(path), path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO put there meanwhile
    try:
        st = os.fstat(fd)
        check_regular(st, path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def head(fd: int) -> Callable[[], bytes]:
    """Reads the first bytes of ``fd`` for MIME sniffing, when called."""
    return lambda: os.pread(fd, SNIFF_BYTES, 0)
