"""Small helpers shared by the conformance suites."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Protocol, TypeVar

import pytest

from sandbox_core.contract.client import Sandbox

T = TypeVar("T")

#: Runs a command with no session state (raw output).
SESSIONLESS = "__DISABLE_SESSION__"


def sid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def collect(stream: AsyncIterable[T]) -> list[T]:
    return [event async for event in stream]


class _HasData(Protocol):
    @property
    def data(self) -> str: ...


D = TypeVar("D", bound=_HasData)


def joined(events: Sequence[object], kind: type[D]) -> str:
    """The ``data`` of the events of type ``kind``, joined."""
    return "".join(e.data for e in events if isinstance(e, kind))


class Sleeper:
    """A long ``sleep`` that reports its own pid, so a test checks that one process by its pid
    (never by searching the machine's processes, where other tests' processes are too).

    :attr:`command` is a subshell that writes its pid to :attr:`pid_file` and then execs
    ``sleep`` (same pid). The sleep's argument is unique, so comparing ``/proc/PID/cmdline``
    with it tells our sleep from a later process that got the same pid. Every check runs in the
    sandbox through :meth:`Sandbox.exec`, so it holds for a server on another host too.
    """

    def __init__(self) -> None:
        self.seconds = f"86{random.randrange(10**6, 10**7)}"
        self.pid_file = f"/tmp/conformance-sleeper-{uuid.uuid4().hex}"

    @property
    def command(self) -> str:
        return f"(echo $BASHPID > {self.pid_file}; exec sleep {self.seconds})"

    def _is_ours(self, pid: str) -> str:
        """Shell test: ``pid`` runs this sleep now (a zombie's cmdline is empty, so it fails)."""
        return f"[ \"$(tr '\\0' ' ' < /proc/{pid}/cmdline 2>/dev/null)\" = 'sleep {self.seconds} ' ]"

    async def started(self, sandbox: Sandbox, timeout_ms: int = 20_000) -> int:
        """Wait until the sleep runs; its pid."""
        result = await sandbox.exec(
            f'until p=$(cat {self.pid_file} 2>/dev/null) && [ -n "$p" ] && {self._is_ours("$p")}; do sleep 0.01; done;'
            ' echo "$p"',
            session_id=SESSIONLESS,
            timeout_ms=timeout_ms,
        )
        assert result.exit_code == 0, f"the sleep did not start: {result}"
        return int(result.stdout)

    async def reported_pid(self, sandbox: Sandbox) -> int:
        """The pid the subshell wrote (it has started, and may have ended since)."""
        result = await sandbox.exec(f"cat {self.pid_file}", session_id=SESSIONLESS)
        assert result.exit_code == 0 and result.stdout.strip(), f"the sleep never started: {result}"
        return int(result.stdout)

    async def running(self, sandbox: Sandbox, pid: int) -> bool:
        """Whether process ``pid`` still is this sleep (not ended, not a zombie, not a reused pid)."""
        result = await sandbox.exec(f"{self._is_ours(str(pid))} && echo running || echo gone", session_id=SESSIONLESS)
        assert result.stdout in ("running\n", "gone\n"), result
        return result.stdout == "running\n"

    async def cleanup(self, sandbox: Sandbox) -> None:
        """Kill the sleep if it still runs, remove the pid file."""
        await sandbox.exec(
            f'p=$(cat {self.pid_file} 2>/dev/null); [ -n "$p" ] && {self._is_ours("$p")} && kill -KILL "$p";'
            f" rm -f {self.pid_file}; true",
            session_id=SESSIONLESS,
        )


#: What the ``sleepers`` fixture gives a test: each call makes a new :class:`Sleeper`.
MakeSleeper = Callable[[], Sleeper]


class SleeperFixture:
    """Mixin of the suites that start sleeps: the ``sleepers`` fixture makes them and, after
    the test (passed or failed), kills any still running and removes their files."""

    @pytest.fixture
    async def sleepers(self, sandbox: Sandbox) -> AsyncIterator[MakeSleeper]:
        made: list[Sleeper] = []

        def make() -> Sleeper:
            made.append(Sleeper())
            return made[-1]

        try:
            yield make
        finally:
            for sleeper in made:
                await sleeper.cleanup(sandbox)
