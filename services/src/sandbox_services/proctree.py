"""Ending processes: a process tree found through /proc, or a process group.

Ending a tree sends SIGTERM to every member (leaves first), waits up to a grace period for
all of them to go, then sends SIGKILL to whatever is left, including members that appeared
meanwhile. Ending a group sends SIGTERM to the group, waits up to a grace period for its
leader to go, then sends SIGKILL to the group (whatever the leader left in it). Zombies count
as gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from sandbox_services.procfs import alive, descendants


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in reversed(pids):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _members(pid: int, exclude: frozenset[int] | set[int], known: set[int] | None) -> list[int]:
    """``pid``'s descendants, then the members of ``known`` the walk no longer reaches (their parent
    died first) that are still alive, with their descendants; ``known`` gets every one of them."""
    found = descendants(pid, exclude)
    if known is not None:
        for member in sorted(known):
            if member != pid and member not in found and alive(member):
                found += [member, *(p for p in descendants(member, exclude) if p not in found)]
        known.update(found)
    return found


def remember_tree(pid: int, known: set[int]) -> None:
    """Add ``pid``'s descendants to ``known`` (see kill_tree) before signalling its group: a
    member that ignores SIGTERM is then waited for (the grace period) even if the leader dies
    first and the member is re-parented out of the tree."""
    _members(pid, frozenset(), known)


async def kill_tree(
    pid: int,
    *,
    include_root: bool = True,
    grace: float = 2.0,
    exclude: frozenset[int] | set[int] = frozenset(),
    known: set[int] | None = None,
) -> int:
    """End ``pid``'s tree (and ``pid`` itself unless ``include_root`` is false).

    ``known`` is the memory of one tree across kills: the members found are added to it, and a
    later kill also ends those of them still alive that are no longer below ``pid`` (a kill
    under way ended their parent, so they were re-parented elsewhere).

    Returns the signal that ended it: SIGTERM if TERM sufficed, SIGKILL otherwise.
    """
    members = _members(pid, exclude, known)
    if include_root:
        members.insert(0, pid)
    _signal_all(members, signal.SIGTERM)
    deadline = time.monotonic() + grace
    delay = 0.005
    while any(alive(p) for p in members):
        if time.monotonic() >= deadline:
            extra = _members(pid, exclude, known)
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


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pgid``; a group that is gone is no error (False)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def kill_group(pgid: int, *, grace: float = 2.0) -> int:
    """End the process group whose leader is ``pgid``: SIGTERM to the group, then, once the
    leader is gone or ``grace`` has passed, SIGKILL to whatever is left in the group.

    Returns the signal that ended the leader: SIGTERM if it went within ``grace``, SIGKILL otherwise.
    """
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    delay = 0.005
    while alive(pgid) and time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    ended = signal.SIGKILL if alive(pgid) else signal.SIGTERM
    signal_group(pgid, signal.SIGKILL)
    return ended
