"""Reading processes from ``/proc`` (Linux): children, descendants, state and start time.

Shared by the services (ending a command's process tree) and the test support (checking the
very processes a test started). Nothing here signals or changes a process.
"""

from __future__ import annotations

import os


def stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) of ``pid`` from ``/proc/PID/stat``;
    None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # after "pid (comm) ": field 3 (state) onwards
    return fields[0].decode(), int(fields[19])  # fields 3 and 22


def alive(pid: int) -> bool:
    """True while some process ``pid`` exists and is not a zombie (whichever process it is)."""
    found = stat(pid)
    return found is not None and found[0] not in ("Z", "X")


_SIGKILL_BIT = 1 << (9 - 1)


def dying(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie, or gone) or is being killed: a SIGKILL pending
    (the kernel also marks so a signal whose default action ends the process)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key == "State" and value.split()[0] in ("Z", "X"):
                    return True
                if key in ("SigPnd", "ShdPnd") and int(value, 16) & _SIGKILL_BIT:
                    return True
    except (OSError, ValueError, IndexError):
        return True
    return False


def cmdline(pid: int) -> list[str] | None:
    """The argument list of ``pid`` (empty for a zombie); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return [arg.decode("utf-8", "replace") for arg in raw.split(b"\0")[:-1]]


def children(pid: int) -> list[int]:
    """The child pids of ``pid`` (of each of its threads)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(child) for child in fh.read().split())
        except OSError:
            continue
    return found


def descendants(pid: int, exclude: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """Every descendant of ``pid`` (children, their children, ...), parents before children,
    skipping the subtrees of ``exclude``."""
    out: list[int] = []
    stack = [pid]
    seen = {pid}
    while stack:
        for child in children(stack.pop()):
            if child not in seen and child not in exclude:
                seen.add(child)
                out.append(child)
                stack.append(child)
    return out
