"""Linux inotify, just what the shells need: which files of their directories were written.

One :class:`DirectoryWatcher` (one inotify instance: the kernel allows a process few of them,
128 by default) watches any number of directories and calls each directory's callback with
the names of the files written and closed in it, in order. :func:`parse_events` is the
sans-IO part. Written by hand over ctypes: the standard library has no binding, and the three
calls needed do not justify a dependency.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
from collections.abc import Callable

IN_CLOSE_WRITE = 0x00000008
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(result: int, *context: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), *context)
    return result


def parse_events(data: bytes) -> list[tuple[int, int, str]]:
    """The (watch descriptor, mask, file name) of each event in ``data`` (whole events, as one
    read returns them)."""
    events: list[tuple[int, int, str]] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, _, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        name = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append((wd, mask, os.fsdecode(name)))
    return events


class DirectoryWatcher:
    """Files written and closed (``IN_CLOSE_WRITE``) in watched directories, read on the loop."""

    def __init__(self) -> None:
        self.fd = _check(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        self._callbacks: dict[int, Callable[[list[str]], None]] = {}
        asyncio.get_running_loop().add_reader(self.fd, self.poll)

    def watch(self, path: str, callback: Callable[[list[str]], None]) -> int:
        """Call ``callback(names)`` with the files written in ``path`` from now on; the watch id."""
        wd = _check(_libc.inotify_add_watch(self.fd, os.fsencode(path), IN_CLOSE_WRITE), path)
        self._callbacks[wd] = callback
        return wd

    def unwatch(self, wd: int) -> None:
        if self._callbacks.pop(wd, None) is not None and self.fd >= 0:
            _libc.inotify_rm_watch(self.fd, wd)  # fails harmlessly once the directory is gone

    def poll(self) -> None:
        """Deliver every event waiting (the loop calls this; callers may too, to catch up)."""
        names: dict[int, list[str]] = {}
        size = 65536
        while True:
            try:
                data = os.read(self.fd, size)
            except BlockingIOError:
                break
            for wd, mask, name in parse_events(data):
                if mask & IN_CLOSE_WRITE and name:
                    names.setdefault(wd, []).append(name)
            if len(data) < size // 2:  # not near full: that was all of it (saves a read)
                break
        for wd, written in names.items():
            callback = self._callbacks.get(wd)
            if callback is not None:
                callback(written)

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
            self._callbacks.clear()
