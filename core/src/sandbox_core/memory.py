"""Giving memory back to the system after large requests.

glibc's allocator keeps the memory a large request used: freed blocks stay in its heaps for
later reuse, so a server that once read a 16 MiB file keeps ~80 MB more RSS for good. Two
things return it:

* :func:`tune_malloc` (once, at start-up) makes every thread allocate from the one main heap
  (``M_ARENA_MAX=1``): ``malloc_trim`` gives back everything free in the main heap but never the
  free top of a thread's own heap, where a worker thread's large reads would otherwise stay.
* :func:`trim_soon` (or :func:`trim_after` with the size), called by a service that has just
  handled a large amount of data, runs one ``malloc_trim(0)`` :data:`TRIM_DELAY_S` after the last
  such call, in a worker thread: after the answer was sent and its buffers freed, never on the
  event loop (a trim of a large heap takes milliseconds), and not between the requests of a burst
  (which reuse the memory at no cost instead of faulting it in again).

Without glibc (musl, macOS) both are no-ops. ``MALLOC_ARENA_MAX`` or a ``glibc.malloc.arena_max``
tunable in the environment wins over :func:`tune_malloc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
from typing import Any

#: Seconds after the last large request before the trim (the requests of a burst share one).
TRIM_DELAY_S = 1.0
#: What counts as a large request for :func:`trim_after`: below this, a trim would not give back
#: enough to be worth it.
TRIM_AFTER_BYTES = 1024 * 1024
#: glibc's ``mallopt`` parameter number (malloc.h).
_M_ARENA_MAX = -8


@functools.cache
def _libc_function(name: str) -> Any:
    """A function of the C library by name (looked up among the process's own symbols, which
    include libc's), or None where it has none (not glibc)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


@functools.cache
def tune_malloc() -> bool:
    """One malloc heap for every thread (``mallopt(M_ARENA_MAX, 1)``), so that :func:`trim_soon`
    can give back all free memory. Call it at start-up, before worker threads allocate; once per
    process (later calls do nothing). True when set."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if os.environ.get("MALLOC_ARENA_MAX") is not None or "glibc.malloc.arena_max" in tunables:
        return False  # the environment says how many heaps
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, 1))


def malloc_trim() -> bool:
    """Return the free memory of the malloc heaps to the kernel now; True when some was returned.

    It blocks (milliseconds for a large heap): call it in a worker thread (ctypes releases the GIL)."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


class _Trimmer:
    """The pending trim of one event loop: runs :data:`TRIM_DELAY_S` after the last request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.running: asyncio.Future[bool] | None = None

    def request(self) -> None:
        self.last = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_at(self.last + TRIM_DELAY_S, self._fire)

    def _fire(self) -> None:
        self.timer = None
        due = self.last + TRIM_DELAY_S
        if self.running is not None and not self.running.done():
            due = max(due, self.loop.time() + TRIM_DELAY_S)  # one trim at a time
        if self.loop.time() < due:  # asked again meanwhile: wait for the burst to end
            self.timer = self.loop.call_at(due, self._fire)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to trim for
            self.running = self.loop.run_in_executor(None, malloc_trim)
            self.running.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()  # a failed trim is not worth a warning


_trimmers: dict[asyncio.AbstractEventLoop, _Trimmer] = {}


def trim_soon() -> None:
    """Have the malloc heaps trimmed :data:`TRIM_DELAY_S` after the last call. Call it on the
    event loop after handling a large request; a no-op without glibc or a running loop."""
    if _libc_function("malloc_trim") is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    trimmer = _trimmers.get(loop)
    if trimmer is None:
        for old in [other for other in _trimmers if other.is_closed()]:  # loops of earlier runs
            del _trimmers[old]
        trimmer = _trimmers[loop] = _Trimmer(loop)
    trimmer.request()


def trim_after(nbytes: int) -> None:
    """:func:`trim_soon` when ``nbytes``, the data a request moved, is :data:`TRIM_AFTER_BYTES` or more."""
    if nbytes >= TRIM_AFTER_BYTES:
        trim_soon()
