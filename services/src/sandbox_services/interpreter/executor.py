"""What the interpreter service asks of an executor process (a Jupyter kernel, a Node REPL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from .output import RunOutput


class ExecutorDied(Exception):
    """The executor's process ended (or was closed) while it was needed."""


class ExecutorUnavailable(Exception):
    """The executor could not start (no runtime, no kernel, too slow to come up)."""


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

    def __init__(self) -> None:
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
