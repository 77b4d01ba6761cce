"""Start child processes and read their pipes without the event loop's subprocess machinery.

``subprocess.Popen`` keeps descriptor numbers given in ``pass_fds`` and closes all others;
the exit is watched with a pidfd on the running loop (any loop: asyncio or uvloop) and
reaped with ``waitpid`` once it is readable, so no child-watcher thread is involved.
Pipes are plain non-blocking descriptors read with :func:`read_nonblocking` (from a reader
callback) or :func:`read_some` (from a coroutine).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence

READ_SIZE = 256 * 1024


def set_once(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` unless it already is (a loop reader/writer callback)."""
    if not future.done():
        future.set_result(None)


def read_nonblocking(fd: int, size: int = READ_SIZE) -> bytes | None:
    """Read from the non-blocking ``fd``: its bytes, ``b""`` at end of file (or on an error
    that ends the stream), None when nothing is there yet."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError:
        return b""


async def read_some(fd: int, size: int = READ_SIZE) -> bytes:
    """The next bytes of the non-blocking ``fd``, waiting until there are some; ``b""`` at end of file."""
    loop = asyncio.get_running_loop()
    while (data := read_nonblocking(fd, size)) is None:
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, set_once, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
    return data


async def read_bounded(fd: int, limit: int) -> bytes:
    """Read the non-blocking ``fd`` to EOF, keeping the first ``limit`` bytes; the rest is read
    and dropped, and a note at the end says how much (a tool's output, for its error message)."""
    kept = bytearray()
    dropped = 0
    while chunk := await read_some(fd, 65536):
        room = max(limit - len(kept), 0)
        kept += chunk[:room]
        dropped += len(chunk) - min(room, len(chunk))
    if dropped:
        kept += f"\n[... {dropped} bytes of output dropped]".encode()
    return bytes(kept)


#: The pids of the children we spawned and have not reaped yet (see :func:`spawned`).
_SPAWNED: set[int] = set()


def spawned() -> frozenset[int]:
    """The pids of the live children this process spawned (the others are adopted orphans)."""
    return frozenset(_SPAWNED)


def claim(pid: int) -> None:
    """Count a child another library started (a Jupyter kernel's Popen, an asyncio subprocess) as
    spawned here, so the orphan reaper leaves its exit status to that library; :func:`disclaim`
    it once that library has reaped it."""
    _SPAWNED.add(pid)


def disclaim(pid: int) -> None:
    _SPAWNED.discard(pid)


class Child:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        _SPAWNED.add(self.pid)
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        code = self.popen.poll()
        if code is None:
            return
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        _SPAWNED.discard(self.pid)
        self.returncode = code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as shells say
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def on_exit(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(exit code)`` from the loop once the child has exited and been reaped."""
        self._exited.add_done_callback(lambda exited: callback(exited.result()))


def spawn(
    argv: Sequence[str],
    *,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = None,
    stderr: int | None = None,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = False,
) -> Child:
    return Child(
        subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            pass_fds=tuple(pass_fds),
            start_new_session=start_new_session,
            close_fds=True,
        )
    )
