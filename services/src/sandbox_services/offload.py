"""Blocking file I/O in worker threads, at most :data:`FILE_IO_THREADS` calls at a time.

Every thread offload of the files service goes through :func:`run_sync`, so file work has
one bound of its own: a burst of reads and writes neither grows the thread count without
limit nor takes the threads that other work offloads through anyio's default limiter.

Cancellation is anyio's default (not abandonable). This server cancels with plain asyncio
(``Task.cancel()``), and then a waiting call ends at once, as with :func:`asyncio.to_thread`:
its token goes back and the worker finishes its one call in the background. Only an anyio
cancel scope would make the caller wait for the worker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple

if TYPE_CHECKING:
    import anyio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# 8: one call moves at most one I/O batch (``io_batch_bytes``, 1 MiB by default) or walks one
# directory listing. Eight at once keep a disk and the page cache busy while bounding the data
# in flight to a few MiB; more threads would only queue in the kernel.
FILE_IO_THREADS = 8


@functools.cache
def file_io_limiter() -> anyio.CapacityLimiter:
    """The one limiter of file I/O threads (anyio is imported on first use: an idle server has
    no need of it)."""
    import anyio

    return anyio.CapacityLimiter(FILE_IO_THREADS)


async def run_sync(func: Callable[[*Ts], T], *args: *Ts) -> T:
    """``func(*args)`` in a worker thread under :func:`file_io_limiter`; its result or exception."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(func, *args, limiter=file_io_limiter())
