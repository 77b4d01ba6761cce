"""Running squashfs-tools and git: argument lists (never a shell), a process group of their own,
a kill deadline, and output kept to a bound.

Each tool runs with stdin at /dev/null, stdout and stderr on one pipe, ``LC_ALL=C`` (its
messages are read). At the deadline its process group gets SIGTERM, then SIGKILL after the
grace period. When the caller goes away (its task is cancelled), the group gets SIGKILL at once.
The output is read to its end and the first ``limit`` bytes are kept, so a chatty tool costs
no memory however much it writes; :func:`run_lines` hands a tool's output to a callback line by
line instead, holding at most one line.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox_core.config import user_environment

from ..proctree import kill_group, signal_group
from ..spawn import Child, read_bounded, read_some, spawn

OUTPUT_LIMIT = 64 * 1024
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


def _env() -> dict[str, str]:
    env = user_environment()
    env.update({"LC_ALL": "C", "LANGUAGE": "C", "GIT_TERMINAL_PROMPT": "0"})
    return env


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


async def _run(
    argv: Sequence[str],
    reader: Callable[[int], Coroutine[Any, Any, bytes]],
    *,
    time_limit: float,
    grace: float,
    pass_fds: Sequence[int] = (),
    cwd: str = "/",
    stderr_to_stdout: bool = True,
) -> tuple[int | None, bytes, bytes, bool]:
    (out_r, out_w) = os.pipe()
    err_r, err_w = os.pipe() if not stderr_to_stdout else (-1, -1)
    try:
        proc: Child = spawn(
            argv,
            stdout=out_w,
            stderr=out_w if stderr_to_stdout else err_w,
            cwd=cwd,
            env=_env(),
            pass_fds=pass_fds,
            start_new_session=True,
        )
    except BaseException:
        os.close(out_r)
        if err_r >= 0:
            os.close(err_r)
        raise
    finally:
        os.close(out_w)
        if err_w >= 0:
            os.close(err_w)
    os.set_blocking(out_r, False)
    tasks: list[asyncio.Future[bytes]] = [asyncio.ensure_future(reader(out_r))]
    if err_r >= 0:
        os.set_blocking(err_r, False)
        tasks.append(asyncio.ensure_future(read_bounded(err_r, OUTPUT_LIMIT)))
    exit_task: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
    everything: list[asyncio.Future[Any]] = [*tasks, exit_task]
    timed_out = False
    try:
        try:
            _, pending = await asyncio.wait(everything, timeout=time_limit)
            if pending:
                timed_out = True
                await kill_group(proc.pid, grace=grace)
                await proc.wait()
                await asyncio.wait(tasks, timeout=max(grace, 1.0))  # a descendant may hold the pipe
        finally:
            if proc.returncode is None:  # cancelled: the caller went away
                signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
    finally:
        for task in everything:
            task.cancel()
        try:
            await asyncio.gather(*everything, return_exceptions=True)
        finally:
            os.close(out_r)
            if err_r >= 0:
                os.close(err_r)
    results = [t.result() if t.done() and not t.cancelled() and t.exception() is None else b"" for t in tasks]
    return proc.returncode, results[0], results[1] if len(results) > 1 else b"", timed_out


async def run_tool(
    argv: Sequence[str],
    *,
    time_limit: float,
    grace: float,
    pass_fds: Sequence[int] = (),
    cwd: str = "/",
    limit: int = OUTPUT_LIMIT,
) -> ToolResult:
    """Run ``argv`` to its end or its deadline; its exit code and bounded output."""
    code, out, _, timed_out = await _run(
        argv,
        lambda fd: read_bounded(fd, limit),
        time_limit=time_limit,
        grace=grace,
        pass_fds=pass_fds,
        cwd=cwd,
    )
    return ToolResult(code, out.decode("utf-8", errors="replace").strip(), timed_out)


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
    code, _, err, timed_out = await _run(
        argv,
        lambda fd: _read_lines(fd, on_line, separator),
        time_limit=time_limit,
        grace=grace,
        cwd=cwd,
        stderr_to_stdout=False,
    )
    return ToolResult(code, err.decode("utf-8", errors="replace").strip(), timed_out)
