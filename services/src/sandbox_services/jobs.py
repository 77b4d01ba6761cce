"""Jobs: commands that run outside a session's foreground (streams and background processes).

A job's stdout and stderr are read from two pipes into a bounded :class:`OutputRing`; its
exit status comes from whoever started it (the shell's control-pipe report, or the exit of
a process we spawned ourselves). When a live reader lags a full ring behind,
reading stops until it catches up, so the process itself is slowed instead of memory growing.
After the job ends, its pipes are drained of what it wrote; anything its own background
children write later is read and discarded until they close the pipes.

A job owns the one task it may start: the kill that ends it when its time limit passes.
:meth:`Job.aclose` cancels and awaits it; its failure is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

import structlog

from .cgroups import Cgroup
from .orphans import end_adopted
from .output import Kind, OutputRing
from .proctree import kill_tree, remember_tree, signal_group
from .spawn import Child, read_nonblocking
from .stdio import Input

log = structlog.get_logger("sandbox.jobs")


def exit_status_of(signum: int) -> int:
    return 128 + signum


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("job.task_failed", task=task.get_name(), error=repr(exc), exc_info=exc)


class Job:
    def __init__(self, tag: int, command: str, *, session_id: str | None, ring_bytes: int) -> None:
        self.tag = tag
        self.command = command
        self.session_id = session_id
        self.pid: int | None = None
        self.group = False  # the pid leads a process group of its own: kills go to the whole group
        self.cwd: str | None = None
        self.mark: str | None = None  # NAME=value in the environment of its processes (see orphans.py)
        self.cgroup: Cgroup | None = None  # its own, where the server may make one
        self.time_limit_ms: int | None = None
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
        self._expiry: asyncio.Task[None] | None = None  # the kill started when the time limit passed
        self._tree: set[int] = set()  # every process a kill of this job has found (see kill_tree)
        self.on_done: list[Callable[[Job], None]] = []
        self._attached = False
        self._early_exit: tuple[int | None, str] | None = None
        self.input: Input | None = None  # a stdin pipe or a terminal the server writes
        self.argv: list[str] | None = None  # started without a shell: its argument list
        self._child: Child | None = None  # a process we spawned ourselves (sessionless)

    # plumbing ----------------------------------------------------------------------------

    def attach(self, out_fd: int, err_fd: int | None) -> None:
        """Start reading the job's output pipes (already non-blocking; a terminal's master
        alone: its output is stdout)."""
        self._fds = {out_fd: "stdout"} if err_fd is None else {out_fd: "stdout", err_fd: "stderr"}
        self._attached = True
        self._resume()
        if self._early_exit is not None:
            self.finish(*self._early_exit)

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

    def _on_readable(self, fd: int) -> bool:
        """Read once from ``fd`` into the ring; False when nothing more is there for now."""
        data = read_nonblocking(fd)
        if data is None:
            return False
        if not data:
            self._close_fd(fd)
            return False
        self.ring.write(self._fds[fd], data)
        return True

    def _close_fd(self, fd: int) -> None:
        if fd in self._reading:
            asyncio.get_running_loop().remove_reader(fd)
            self._reading.discard(fd)
        if self._fds.pop(fd, None) is not None:
            os.close(fd)

    def _drain(self) -> None:
        for fd in list(self._fds):
            while self._on_readable(fd):
                pass

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

    def watch_child(self, child: Child) -> None:
        """Finish with ``child``'s exit code when it exits (a process we spawned), unless killed."""

        self._child = child

        def exited(code: int) -> None:
            if not self.killed:  # kill() finishes it with the signal it used
                self.finish(code)

        child.on_exit(exited)

    def set_timeout(self, seconds: float, grace: float) -> None:
        """End the job ``seconds`` from now (SIGTERM, SIGKILL after ``grace``); it ends as 124."""
        self.time_limit_ms = round(seconds * 1000)
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired, grace)

    def _expired(self, grace: float) -> None:
        self._timer = None
        self._expiry = asyncio.create_task(self._expire(grace), name=f"job {self.tag} time limit")
        self._expiry.add_done_callback(_log_failure)

    async def _expire(self, grace: float) -> None:
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

    def unwatch_pid(self) -> None:
        """Stop being told of the exit of ``self.pid`` (its end is being worked out elsewhere)."""
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)

    def finish(self, exit_code: int | None, note: str = "") -> None:
        """The job's process ended with ``exit_code`` (None when unknown); ``note`` goes to its
        stderr after the last of its output."""
        if self.done:
            return
        if not self._attached:  # its status came before we started reading its pipes
            self._early_exit = (exit_code, note)
            return
        if self._timer is not None:
            self._timer.cancel()
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self._drain()
        if self.input is not None:  # writes now fail at once; a terminal's output still drains
            self.input.release()
        if note:
            self.ring.write("stderr", note.encode())
        if self.timed_out:
            self.ring.write("stderr", f"Command timed out after {self.time_limit_ms} ms\n".encode())
            exit_code = 124
        self.exit_code = exit_code
        self.ended_at = time.time()
        self._done.set()
        self.ring.close()
        self._resume()  # keep reading (and discarding) until the pipes close
        for callback in self.on_done:
            callback(self)

    def _still_ours(self) -> bool:
        """Whether the job's leader has not been reaped: its pid, and so the number of its
        process group, cannot have been given to another process (a pgid is not reused while
        any member lives, and the leader, alive or a zombie, is one)."""
        if self._child is not None:  # our own child: reaped only by us
            return self._child.returncode is None
        if self._pidfd >= 0:  # the session shell's child: the shell reaps it, the pidfd tells
            try:
                signal.pidfd_send_signal(self._pidfd, 0)
            except ProcessLookupError:
                return False
            return True
        return False

    def send_signal(self, sig: int) -> bool:
        """Send ``sig`` to the job's process group (the tree it started; with a terminal, also
        the terminal's foreground group). False when the job has ended: its group number may
        then belong to another process, so nothing is sent."""
        if self.done or self.pid is None or not self._still_ours():
            return False
        if self.group:
            if not signal_group(self.pid, sig):
                # No such group yet: a process started for a terminal, in the instant before its
                # setsid() (which makes the group, and does not fork): it is still that one process.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
        if self.input is not None and self.input.pty:
            foreground = self.input.foreground_group()  # a live group: the terminal holds it
            if foreground is not None and foreground != self.pid:
                signal_group(foreground, sig)
        return True

    async def kill(self, grace: float = 2.0) -> None:
        """SIGTERM the job's whole tree, SIGKILL after ``grace``; it ends as 143 or 137."""
        if self.done or self.pid is None:
            return
        self.killed = True
        if self.group:  # the whole group, members forked meanwhile included
            remember_tree(self.pid, self._tree)  # first: its leader may die of the TERM at once
            signal_group(self.pid, signal.SIGTERM)
        sig = await kill_tree(self.pid, grace=grace, known=self._tree)
        if self.group:
            signal_group(self.pid, signal.SIGKILL)
        if self.mark is not None:  # what escaped its tree (a double fork) and the server adopted
            await end_adopted(self.mark, grace)
        if self.cgroup is not None:  # and whatever else is still in its cgroup
            await self.cgroup.kill()
        self.finish(124 if self.timed_out else exit_status_of(sig))

    async def aclose(self) -> None:
        """Stop the job's own task and release every descriptor (server shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._expiry is not None and not self._expiry.done():
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        for fd in list(self._fds):
            self._close_fd(fd)
        if self.input is not None:
            self.input.release()
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
