"""Running an external tool (git, squashfs-tools) to its end or its deadline.

The tool runs as an argument list (never through a shell), with stdin at /dev/null, in a process
group of its own, with the user environment (:func:`sandbox_core.config.user_environment`) plus
``LC_ALL=C`` and ``LANGUAGE=C`` (its messages are read) and ``GIT_TERMINAL_PROMPT=0`` (git never
waits for a password). At the deadline its process group gets SIGTERM, then SIGKILL after the
grace period; when the caller goes away (its task is cancelled), the group gets SIGKILL at once.
Its output is read to its end and the first ``limit`` bytes of each stream are kept
(:func:`sandbox_services.spawn.read_bounded`), so a chatty tool costs no memory however much it
writes; a reader of the caller's may take stdout instead (a tool whose output is a listing).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox_core.config import user_environment

from .proctree import kill_group, signal_group
from .spawn import Child, read_bounded, spawn

#: The bytes of a tool's output (each stream) that are kept.
OUTPUT_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ToolRun:
    """How a tool's run ended: its exit code (128 + N when a signal N ended it), what its stdout
    reader returned (the kept output), its kept stderr (empty when it went to stdout), and
    whether its deadline passed (then its process group was ended)."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool


def tool_environment() -> dict[str, str]:
    env = user_environment()
    env.update({"LC_ALL": "C", "LANGUAGE": "C", "GIT_TERMINAL_PROMPT": "0"})
    return env


def _result(task: asyncio.Future[bytes]) -> bytes:
    return task.result() if task.done() and not task.cancelled() and task.exception() is None else b""


async def run(
    argv: Sequence[str],
    *,
    time_limit: float,
    grace: float,
    cwd: str = "/",
    pass_fds: Sequence[int] = (),
    merge_stderr: bool = False,
    read_stdout: Callable[[int], Awaitable[bytes]] | None = None,
    limit: int = OUTPUT_LIMIT,
) -> ToolRun:
    """Run ``argv`` from ``cwd`` until it exits and its output ends, or ``time_limit`` seconds
    pass (a kill deadline, not a cancellation: the process group gets SIGTERM, SIGKILL after
    ``grace`` seconds, and the run returns with ``timed_out`` set). ``merge_stderr`` sends
    stderr to the stdout pipe; ``read_stdout(fd)`` reads the non-blocking stdout pipe to its end
    (default: the first ``limit`` bytes kept). A tool that cannot be started raises the
    ``OSError`` of its start (``FileNotFoundError`` for a missing program)."""
    out_r, out_w = os.pipe()
    err_r, err_w = (-1, -1) if merge_stderr else os.pipe()
    try:
        proc: Child = spawn(
            argv,
            stdout=out_w,
            stderr=out_w if merge_stderr else err_w,
            cwd=cwd,
            env=tool_environment(),
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
    reader = read_stdout if read_stdout is not None else (lambda fd: read_bounded(fd, limit))
    outputs: list[asyncio.Future[bytes]] = [asyncio.ensure_future(reader(out_r))]
    if err_r >= 0:
        os.set_blocking(err_r, False)
        outputs.append(asyncio.ensure_future(read_bounded(err_r, limit)))
    exited: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
    everything: list[asyncio.Future[Any]] = [*outputs, exited]
    timed_out = False
    try:
        try:
            _, pending = await asyncio.wait(everything, timeout=time_limit)
            if pending:
                timed_out = True
                await kill_group(proc.pid, grace=grace)
                await proc.wait()
                # a descendant that left the group could still hold a pipe: a bounded wait
                await asyncio.wait(outputs, timeout=max(grace, 1.0))
        finally:
            if proc.returncode is None:  # cancelled: the caller went away, and the tool goes too
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
    return ToolRun(proc.returncode, _result(outputs[0]), _result(outputs[1]) if err_r >= 0 else b"", timed_out)
