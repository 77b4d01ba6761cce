"""The one way the services run an external tool (sandbox_services.tools.run, used by git and
backup): bounded output, the tool environment, the kill deadline and the caller going away.

The tools run as children of this process; a test learns their pids from what they write and
checks those very processes (never a search of the machine's processes).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sandbox_core.testing.procs import Proc, still_alive
from sandbox_services import tools


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def written(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def wait_for_pids(path: Path, count: int) -> list[Proc]:
    """The ``count`` pids the tool wrote to ``path`` (one a line), as running processes."""
    for _ in range(500):
        lines = written(path)
        if len(lines) >= count:
            return [Proc.of(int(pid)) for pid in lines[:count]]
        await asyncio.sleep(0.01)
    raise AssertionError(f"the tool wrote no {count} pids to {path} within 5 s")


async def test_stdout_and_stderr_apart_or_together() -> None:
    script = "echo out; echo err >&2; exit 3"
    apart = await tools.run(["sh", "-c", script], time_limit=30, grace=1)
    assert (apart.exit_code, apart.stdout, apart.stderr, apart.timed_out) == (3, b"out\n", b"err\n", False)
    together = await tools.run(["sh", "-c", script], time_limit=30, grace=1, merge_stderr=True)
    assert (together.exit_code, together.stderr) == (3, b"")
    assert sorted(together.stdout.split()) == [b"err", b"out"]


async def test_output_is_kept_to_the_limit_and_the_rest_counted() -> None:
    done = await tools.run(["head", "-c", "300000", "/dev/zero"], time_limit=30, grace=1, limit=1000)
    assert done.exit_code == 0 and not done.timed_out
    assert done.stdout == b"\0" * 1000 + b"\n[... 299000 bytes of output dropped]"


async def test_a_reader_of_the_callers_takes_stdout() -> None:
    lines: list[bytes] = []

    async def read(fd: int) -> bytes:
        from sandbox_services.spawn import read_some

        while chunk := await read_some(fd):
            lines.extend(chunk.split())
        return b"read"

    done = await tools.run(["sh", "-c", "printf 'a\\nb\\n'; echo oops >&2"], time_limit=30, grace=1, read_stdout=read)
    assert (done.stdout, done.stderr, lines) == (b"read", b"oops\n", [b"a", b"b"])


async def test_the_tool_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SANDBOX_TOKEN", "secret-token")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    script = 'echo "$LC_ALL $LANGUAGE $GIT_TERMINAL_PROMPT token=${SANDBOX_TOKEN:-none}"; pwd'
    done = await tools.run(["sh", "-c", script], time_limit=30, grace=1, cwd=str(tmp_path))
    assert done.stdout.decode().split("\n")[:2] == ["C C 0 token=none", str(tmp_path)]


async def test_the_deadline_ends_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"trap '' TERM; sleep 60 & echo $! > {pids}; echo $$ >> {pids}; wait"  # deaf to SIGTERM
    task = asyncio.ensure_future(tools.run(["sh", "-c", script], time_limit=0.5, grace=0.2))
    group = await wait_for_pids(pids, 2)
    done = await asyncio.wait_for(task, 30)
    assert done.timed_out and done.exit_code == 128 + 9  # SIGKILL, after the grace
    assert await asyncio.to_thread(still_alive, group) == []


async def test_the_caller_going_away_ends_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    before = open_fds()
    script = f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; wait"
    task = asyncio.ensure_future(tools.run(["sh", "-c", script], time_limit=60, grace=30))
    group = await wait_for_pids(pids, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert await asyncio.to_thread(still_alive, group) == []
    assert open_fds() <= before  # both pipes closed


async def test_a_missing_tool_raises_and_leaks_no_descriptor() -> None:
    before = open_fds()
    with pytest.raises(FileNotFoundError):
        await tools.run(["/nonexistent/tool-for-sandbox-tests"], time_limit=30, grace=1)
    assert open_fds() <= before
