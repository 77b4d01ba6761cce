"""cgroups v2, where the server may write them: a cgroup per session and per background process,
so that ending one ends every process in it, however it forked, whatever its environment.

At start-up :func:`open_tree` looks for a writable cgroup2 mount and makes a directory for this
server below its own cgroup; where there is none (no cgroup v2, a read-only mount, no
permission) it returns None and the services rely on process groups, trees and environment
marks (see orphans.py). Only the core of cgroups is used: no controller is enabled, so the
processes of our own cgroup may stay where they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from sandbox_services import procfs


def _own_cgroup() -> tuple[str, str] | None:
    """(the cgroup2 mount point, this process's cgroup path in it), or None."""
    mount = None
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split(" - ")
                if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
                    mount = fields[0].split()[4]
                    break
        with open("/proc/self/cgroup") as fh:
            path = next((line.strip()[3:] for line in fh if line.startswith("0::")), None)
    except OSError:
        return None
    if mount is None or path is None:
        return None
    return mount, path


class Cgroup:
    """One cgroup directory of ours."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.procs = os.path.join(path, "cgroup.procs")  # writing "0" here moves the writer in

    def add(self, pid: int) -> bool:
        """Move process ``pid`` (not its existing children) into this cgroup; False if that failed."""
        try:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as fh:
                fh.write(str(pid))
            return True
        except OSError:
            return False

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as fh:
                return [int(pid) for pid in fh.read().split()]
        except OSError:
            return []

    def signal_kill(self) -> None:
        """SIGKILL every process in the cgroup: ``cgroup.kill``, or one by one where the kernel
        has none."""
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as fh:
                fh.write("1")
        except OSError:
            for pid in self.pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    async def kill(self, within: float = 5.0) -> None:
        """SIGKILL every process in the cgroup, wait (up to ``within`` seconds) until none is
        left, then remove it."""
        self.signal_kill()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while any(procfs.alive(pid) for pid in self.pids()) and loop.time() < deadline:
            for pid in self.pids():  # those forked while the kill was under way
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.01)
        self.remove()

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


class CgroupTree:
    """This server's cgroup directory, where the cgroups of its sessions and processes go."""

    def __init__(self, base: str) -> None:
        self.base = base

    def new(self, name: str) -> Cgroup | None:
        path = os.path.join(self.base, name)
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError:
            return None
        return Cgroup(path)

    def cgroups(self) -> list[Cgroup]:
        """Every cgroup of ours."""
        try:
            names = os.listdir(self.base)
        except OSError:
            return []
        return [Cgroup(os.path.join(self.base, n)) for n in names if os.path.isdir(os.path.join(self.base, n))]

    async def close(self) -> None:
        """Kill what is left in every cgroup of ours and remove them all."""
        for cgroup in self.cgroups():
            await cgroup.kill()
        with contextlib.suppress(OSError):
            os.rmdir(self.base)


def open_tree(name: str = "") -> CgroupTree | None:
    """A cgroup directory for this server below its own cgroup (``sandbox-<pid>``, or
    ``sandbox-<pid>-<name>`` for a service's own), or None where none can be made."""
    found = _own_cgroup()
    if found is None:
        return None
    mount, own = found
    base = os.path.join(mount, own.lstrip("/"), f"sandbox-{os.getpid()}" + (f"-{name}" if name else ""))
    try:
        os.makedirs(base, exist_ok=True)
        probe = os.path.join(base, "probe")
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError:
        return None
    return CgroupTree(base)
