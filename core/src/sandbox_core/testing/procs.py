"""Processes a test started, checked by pid: never a search of the machine's processes.

A test learns the pids of its own processes (the command prints them, the API returns them,
or they are descendants of a process the test started), records each as a :class:`Proc`
while it runs, and later asks whether that very process still runs. A :class:`Proc` holds
the start time the kernel gives the process (field 22 of ``/proc/PID/stat``), so a later
process that reuses the pid is never mistaken for it. Linux only (``/proc``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..procfs import alive as running
from ..procfs import cmdline, descendants, stat

__all__ = ["Proc", "cmdline", "descendants", "running", "still_alive"]


@dataclass(frozen=True)
class Proc:
    """One process, as the test saw it: its pid and its start time (clock ticks after boot)."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Proc:
        """``pid`` as it is now; it must be running."""
        found = stat(pid)
        assert found is not None and found[0] not in ("Z", "X"), f"process {pid} is not running"
        return cls(pid, found[1])

    def alive(self) -> bool:
        """True while this process (not a later one with its pid) exists and is not a zombie."""
        found = stat(self.pid)
        return found is not None and found[1] == self.start and found[0] not in ("Z", "X")

    def cmdline(self) -> list[str] | None:
        """Its argument list while it is alive, else None."""
        argv = cmdline(self.pid)
        return argv if self.alive() else None  # checked after the read: the pid was still this process


def still_alive(procs: Iterable[Proc], within: float = 5.0) -> list[Proc]:
    """Those of ``procs`` still alive after waiting up to ``within`` seconds for them all to end."""
    procs = list(procs)
    deadline = time.monotonic() + within
    while (left := [p for p in procs if p.alive()]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+); False where that is refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True
