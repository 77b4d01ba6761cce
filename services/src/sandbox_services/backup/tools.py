"""Running squashfs-tools (through :func:`sandbox_services.tools.run`: argument lists, a process
group of their own, a kill deadline, output kept to a bound).

:func:`run_tool` keeps a tool's stdout and stderr together (one pipe), the first ``limit``
bytes of it; :func:`run_lines` hands a tool's stdout to a callback line by line instead,
holding at most one line, and keeps its stderr to the bound.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import tools
from ..spawn import read_some
from ..tools import OUTPUT_LIMIT

#: The longest line :func:`run_lines` hands over (a longer one is dropped whole).
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class ToolResult:
    exit_code: int | None
    output: str  # at most ``limit`` bytes of stdout and stderr, then a note of what was dropped
    timed_out: bool


def find_tool(path: str) -> str | None:
    """The executable ``path`` names (a bare name is looked up on PATH), or None."""
    if os.sep in path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(path)


async def _read_lines(fd: int, on_line: Callable[[bytes], None], separator: bytes) -> bytes:
    partial = bytearray()
    skipping = False
    while chunk := await read_some(fd, 65536):
        start = 0
        while (end := chunk.find(separator, start)) >= 0:
            if not skipping and len(partial) + end - start <= MAX_LINE:
                on_line(bytes(partial) + chunk[start:end])
            partial.clear()
            skipping = False
            start = end + 1
        if not skipping:
            partial += chunk[start:]
            if len(partial) > MAX_LINE:
                partial.clear()
                skipping = True
    if partial and not skipping:
        on_line(bytes(partial))
    return b""


async def run_tool(
    argv: Sequence[str],
    *,
    time_limit: float,
    grace: float,
    pass_fds: Sequence[int] = (),
    cwd: str = "/",
    limit: int = OUTPUT_LIMIT,
) -> ToolResult:
    """Run ``argv`` to its end or its deadline; its exit code and bounded output (stdout and
    stderr together)."""
    done = await tools.run(
        argv, time_limit=time_limit, grace=grace, pass_fds=pass_fds, cwd=cwd, merge_stderr=True, limit=limit
    )
    return ToolResult(done.exit_code, done.stdout.decode("utf-8", errors="replace").strip(), done.timed_out)


async def run_lines(
    argv: Sequence[str],
    on_line: Callable[[bytes], None],
    *,
    time_limit: float,
    grace: float,
    cwd: str = "/",
    separator: bytes = b"\n",
) -> ToolResult:
    """Run ``argv``, handing each record of its stdout (split at ``separator``) to ``on_line``
    as it comes; its stderr is kept to the bound as :func:`run_tool` keeps output."""
    done = await tools.run(
        argv,
        time_limit=time_limit,
        grace=grace,
        cwd=cwd,
        read_stdout=lambda fd: _read_lines(fd, on_line, separator),
    )
    return ToolResult(done.exit_code, done.stderr.decode("utf-8", errors="replace").strip(), done.timed_out)
