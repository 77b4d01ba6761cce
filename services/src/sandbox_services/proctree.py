"""Process trees from /proc: find every descendant of a pid and end them all.

Ending a tree sends SIGTERM to every member (leaves first), waits up to a grace period for
all of them to go, then sends SIGKILL to whatever is left, including members that appeared
meanwhile. Zombies count as gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return found


def descendants(pid: int, exclude: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """Every descendant of ``pid``, parents before children, skipping the subtrees of ``exclude``."""
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


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in reversed(pids):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


async def kill_tree(
    pid: int, *, include_root: bool = True, grace: float = 2.0, exclude: frozenset[int] | set[int] = frozenset()
) -> int:
    """End ``pid``'s tree (and ``pid`` itself unless ``include_root`` is false).

    Returns the signal that ended it: SIGTERM if TERM sufficed, SIGKILL otherwise.
    """
    members = descendants(pid, exclude)
    if include_root:
        members.insert(0, pid)
    _signal_all(members, signal.SIGTERM)
    deadline = time.monotonic() + grace
    delay = 0.005
    while any(alive(p) for p in members):
        if time.monotonic() >= deadline:
            extra = descendants(pid, exclude)
            everyone = (
                ([pid] if include_root else [])
                + [p for p in members if p != pid]
                + [p for p in extra if p not in members]
            )
            _signal_all(everyone, signal.SIGKILL)
            return signal.SIGKILL
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return signal.SIGTERM
