"""What the interpreter service asks of an executor process (a Jupyter kernel, a Node REPL), and
how everything an executor started is ended with it (:class:`Containment`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from sandbox_core.config import user_environment

from ..cgroups import Cgroup
from ..orphans import end_adopted
from ..proctree import kill_tree
from .output import RunOutput

#: The environment mark of an executor's processes (``SANDBOX_EXECUTOR=<n>``), as
#: ``SANDBOX_SESSION`` marks a session's: how the server recognises those that escaped its tree.
EXECUTOR_MARK = "SANDBOX_EXECUTOR"


class ExecutorDied(Exception):
    """The executor's process ended (or was closed) while it was needed."""


class ExecutorUnavailable(Exception):
    """The executor could not start (no runtime, no kernel, too slow to come up)."""


class Containment:
    """What holds the processes of one executor: its cgroup, where the server may make one (see
    cgroups.py), and its environment mark, which every process it starts inherits. Ending it ends
    them all, as a session's: its tree, those that escaped the tree (double fork, ``setsid``)
    and that the server, a child subreaper, adopted, and whatever else is in its cgroup."""

    def __init__(self, tag: str, cgroup: Cgroup | None) -> None:
        self.tag = tag
        self.mark = f"{EXECUTOR_MARK}={tag}"
        self.cgroup = cgroup

    def environment(self) -> dict[str, str]:
        """The environment an executor starts with: the user's (no server configuration) and the mark."""
        return {**user_environment(), EXECUTOR_MARK: self.tag}

    def enter(self, pid: int) -> None:
        """Put the executor's process in the cgroup (before it runs any code of the user's)."""
        if self.cgroup is not None:
            self.cgroup.add(pid)

    async def end_children(self, pid: int) -> None:
        """End the tree below the executor's process ``pid``, which must still be running and not
        reaped (so that the pid is still its). Everything gets SIGKILL at once, as the executor."""
        await kill_tree(pid, include_root=False, grace=0)

    async def end_escaped(self) -> None:
        """Once the executor has ended: end the processes carrying the mark that the server
        adopted, then anything left in the cgroup (which is removed)."""
        await end_adopted(self.mark, grace=0)
        if self.cgroup is not None:
            await self.cgroup.kill()


class Run:
    """The run an executor is busy with: its id, where its events go, and its end."""

    def __init__(self, run_id: str, out: RunOutput) -> None:
        self.id = run_id
        self.out = out
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def end(self, exc: BaseException | None = None) -> None:
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)
            self.done.exception()  # retrieved: no "never retrieved" warning when nobody waits


class Executor:
    """Base of the executors: one run at a time (the service serialises them)."""

    kind = ""

    def __init__(self, containment: Containment) -> None:
        self.containment = containment
        self.run: Run | None = None
        self.closed = False
        self.exit_code: int | None = None

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    async def start(self, limit_s: float) -> None:
        raise NotImplementedError

    async def setup(self, cwd: str, env: Mapping[str, str], limit_s: float) -> None:
        """Apply a context's working directory and environment (raises ValueError if refused)."""
        raise NotImplementedError

    async def execute(self, code: str, language: str, out: RunOutput) -> None:
        """Run ``code``: events go to ``out`` (the final one too); returns when the run ended.
        Cancelling this leaves the run going (see :meth:`settle`)."""
        raise NotImplementedError

    async def interrupt(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """End the executor and everything it started (see :class:`Containment`)."""
        raise NotImplementedError

    async def settle(self, grace: float) -> bool:
        """Interrupt the current run and wait up to ``grace`` seconds for it to end: whether it did."""
        run = self.run
        if run is None or run.done.done():
            return True
        if not self.alive:
            return False
        with contextlib.suppress(Exception):
            await self.interrupt()
        try:
            await asyncio.wait_for(asyncio.shield(run.done), grace)
        except (TimeoutError, ExecutorDied):
            return False
        return True
