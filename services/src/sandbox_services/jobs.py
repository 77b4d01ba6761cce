"""Jobs: commands that run outside a session's foreground (streams and background processes).

A job's stdout and stderr are read from two pipes into a bounded :class:`OutputRing`; its
exit status comes from whoever started it (the shell's control-pipe report, or
``wait()`` for a process we spawned ourselves). When a live reader lags a full ring behind,
reading stops until it catches up, so the process itself is slowed instead of memory growing.
After the job ends, its pipes are drained of what it wrote; anything its own background
children write later is read and discarded until they close the pipes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from .output import Kind, OutputRing
from .proctree import kill_tree
from .shell import READ_SIZE


def exit_status_of(signum: int) -> int:
    return 128 + signum


class Job:
    def __init__(self, tag: int, command: str, *, session_id: str | None, ring_bytes: int) -> None:
        self.tag = tag
        self.command = command
        self.session_id = session_id
        self.pid: int | None = None
        self.ring = OutputRing(ring_bytes)
        self.ring.on_pause = self._pause
        self.ring.on_resume = self._resume
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.exit_code: int | None = None
        self.killed = False
        self.timed_out = False
        self._done = asyncio.Event()
        self._fds: dict[int, Kind] = {}
        self._reading: set[int] = set()
        self._pidfd = -1
        self._timer: asyncio.TimerHandle | None = None
        self.on_done: list[Callable[[Job], None]] = []
        self._attached = False
        self._early_exit: tuple[int | None] | None = None
        self.reaper: asyncio.Future[None] | None = None  # the task waiting for a child we spawned

    # plumbing ----------------------------------------------------------------------------

    def attach(self, out_fd: int, err_fd: int) -> None:
        """Start reading the job's output pipes (already non-blocking)."""
        self._fds = {out_fd: "stdout", err_fd: "stderr"}
        self._attached = True
        self._resume()
        if self._early_exit is not None:
            self.finish(self._early_exit[0])

    def _resume(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._fds:
            if fd not in self._reading:
                loop.add_reader(fd, self._on_readable, fd)
                self._reading.add(fd)

    def _pause(self) -> None:
        if self.done:
            return  # after exit we only drain; never stall a finished job's pipes
        loop = asyncio.get_running_loop()
        for fd in list(self._reading):
            loop.remove_reader(fd)
        self._reading.clear()

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_fd(fd)
            return
        self.ring.write(self._fds[fd], data)

    def _close_fd(self, fd: int) -> None:
        if fd in self._reading:
            asyncio.get_running_loop().remove_reader(fd)
            self._reading.discard(fd)
        if self._fds.pop(fd, None) is not None:
            os.close(fd)

    def _drain(self) -> None:
        for fd in list(self._fds):
            while True:
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    self._close_fd(fd)
                    break
                self.ring.write(self._fds[fd], data)

    def watch_pid(self, on_exit: Callable[[Job], None]) -> None:
        """Call ``on_exit`` when the (non-child) process ``self.pid`` exits."""
        assert self.pid is not None
        if self.done:
            return
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            asyncio.get_running_loop().call_soon(on_exit, self)
            return
        asyncio.get_running_loop().add_reader(self._pidfd, on_exit, self)

    def set_timeout(self, seconds: float, grace: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(seconds, lambda: asyncio.ensure_future(self._expire(seconds, grace)))

    async def _expire(self, seconds: float, grace: float) -> None:
        if self.done:
            return
        self.timed_out = True
        await self.kill(grace)

    # lifecycle ---------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> int | None:
        await self._done.wait()
        return self.exit_code

    def finish(self, exit_code: int | None) -> None:
        """The job's process ended with ``exit_code`` (None when unknown)."""
        if self.done:
            return
        if not self._attached:  # its status came before we started reading its pipes
            self._early_exit = (exit_code,)
            return
        if self._timer is not None:
            self._timer.cancel()
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self._drain()
        if self.timed_out:
            ms = round((time.time() - self.started_at) * 1000)
            self.ring.write("stderr", f"Command timed out after {ms} ms\n".encode())
            exit_code = 124
        self.exit_code = exit_code
        self.ended_at = time.time()
        self._done.set()
        self.ring.close()
        self._resume()  # keep reading (and discarding) until the pipes close
        for callback in self.on_done:
            callback(self)

    async def kill(self, grace: float = 2.0) -> None:
        """SIGTERM the job's whole tree, SIGKILL after ``grace``; it ends as 143 or 137."""
        if self.done or self.pid is None:
            return
        self.killed = True
        sig = await kill_tree(self.pid, grace=grace)
        self.finish(124 if self.timed_out else exit_status_of(sig))

    def close(self) -> None:
        """Release every descriptor (server shutdown)."""
        for fd in list(self._fds):
            self._close_fd(fd)
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
