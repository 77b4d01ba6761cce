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

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# 8: one call moves at most one I/O batch (``io_batch_bytes``, 1 MiB by default) or walks one
# directory listing. Eight at once keep a disk and the page cache busy while bounding the data
# in flight to a few MiB; more threads would only queue in the kernel.
FILE_IO_THREADS = 8
file_io_limiter = anyio.CapacityLimiter(FILE_IO_THREADS)


async def run_sync(func: Callable[[*Ts], T], *args: *Ts) -> T:
    """``func(*args)`` in a worker thread under :data:`file_io_limiter`; its result or exception."""
    return await anyio.to_thread.run_sync(func, *args, limiter=file_io_limiter)
