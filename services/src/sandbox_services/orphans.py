"""Processes that escaped their tree: the server is a child subreaper, so a process whose
parents died (``(setsid nohup cmd &)``, a daemon) becomes the server's child instead of init's.

Every process a session starts carries ``SANDBOX_SESSION=<id>`` in its environment (and a
background process ``SANDBOX_PROCESS=<id>``), inherited unless a command clears it. When a
session is deleted or a process killed, the server's adopted children (children it did not
spawn itself) whose environment carries that mark are ended with everything below them; when
the server stops, all of them are. Adopted children that exit are reaped.

Where the kernel has no subreapers (not Linux), orphans go to init and this does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal

from sandbox_services import procfs

from .proctree import kill_tree, signal_group
from .spawn import spawned

_PR_SET_CHILD_SUBREAPER = 36
#: How often adopted children that have exited are reaped (they are zombies until then).
REAP_EVERY_S = 1.0


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; False where that fails."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def adopted() -> list[int]:
    """The children of this process it did not spawn itself (orphans it adopted)."""
    mine = spawned()
    return [pid for pid in procfs.children(os.getpid()) if pid not in mine]


def reap() -> None:
    """Collect the exit status of adopted children that have exited (never our own spawns')."""
    for pid in adopted():
        state = procfs.stat(pid)
        if state is not None and state[0] in ("Z", "X"):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def marked(pid: int, mark: bytes) -> bool:
    """Whether ``pid`` started with ``mark`` (``NAME=value``) in its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return mark in fh.read().split(b"\0")
    except OSError:
        return False


async def end_adopted(mark: str | None, grace: float) -> int:
    """End the adopted children carrying ``mark`` (every one when None) and what is below them:
    SIGTERM to their process groups and trees, SIGKILL after ``grace``. Returns how many."""
    wanted = None if mark is None else mark.encode()
    targets = [pid for pid in adopted() if wanted is None or marked(pid, wanted)]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                signal_group(pid, signal.SIGTERM)
    await asyncio.gather(*(kill_tree(pid, grace=grace) for pid in targets), return_exceptions=True)
    for pid in targets:
        signal_group(pid, signal.SIGKILL)  # a group leader's group, members forked meanwhile included
    reap()
    return len(targets)


class Reaper:
    """The task that reaps adopted children now and then, owned by the sessions service."""

    def __init__(self) -> None:
        self.active = become_subreaper()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.active:
            self._task = asyncio.create_task(self._run(), name="orphan reaper")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            reap()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
