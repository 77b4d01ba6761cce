"""Processes a test started, checked by pid: never a search of the machine's processes.

A test learns the pids of its own processes (the command prints them, the API returns them,
or they are descendants of a process the test started), records each as a :class:`Proc`
while it runs, and later asks whether that very process still runs. A :class:`Proc` holds
the start time the kernel gives the process (field 22 of ``/proc/PID/stat``), so a later
process that reuses the pid is never mistaken for it. Linux only (``/proc``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Proc", "cmdline", "descendants", "running", "still_alive"]


# The few /proc readings a test needs, of its own (the services' own reader is
# sandbox_services.procfs, which test support for any transport or service cannot depend on).


def stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) of ``pid``; None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # after "pid (comm) ": field 3 (state) onwards
    return fields[0].decode(), int(fields[19])  # fields 3 and 22


def running(pid: int) -> bool:
    """True while some process ``pid`` exists and is not a zombie (whichever process it is)."""
    found = stat(pid)
    return found is not None and found[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str] | None:
    """The argument list of ``pid`` (empty for a zombie); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return [arg.decode("utf-8", "replace") for arg in raw.split(b"\0")[:-1]]


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before children (read from each task's children)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as fh:
                    children = [int(child) for child in fh.read().split()]
            except OSError:
                continue
            for child in children:
                if child not in out and child != pid:
                    out.append(child)
                    stack.append(child)
    return out


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
