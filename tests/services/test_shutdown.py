"""SIGTERM stops the server cleanly and ends every session shell and child process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import Proc, cmdline, descendants, running, still_alive


def running_as(proc: Proc, argv: list[str], within: float = 10.0) -> bool:
    """Wait until ``proc`` runs ``argv`` (a subshell that execs a command gets there a moment later)."""
    deadline = time.monotonic() + within
    while proc.cmdline() != argv and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.cmdline() == argv


def test_sigterm_ends_shells_and_children(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        body = client.post("/api/execute", json={"command": "sleep 600 & echo $! $$", "sessionId": "s"}).json()
        child, shell = (Proc.of(int(pid)) for pid in body["stdout"].split())
        # the streamed command's shell, and a subshell that prints its pid and becomes the sleep
        command = 'outer=$BASHPID; (echo "$outer $BASHPID"; exec sleep 600)'
        with client.stream("POST", "/api/execute/stream", json={"command": command}) as stream:
            event: dict[str, str] = {}
            lines = stream.iter_lines()  # held: a stream its reader closes ends its command
            for line in lines:
                if line.startswith("data: "):
                    event = json.loads(line[len("data: ") :])
                    if event["type"] == "stdout":
                        break
            assert event.get("type") == "stdout", event
            stream_shell, streamed = (Proc.of(int(pid)) for pid in event["data"].split())
            assert running_as(child, ["sleep", "600"]) and running_as(streamed, ["sleep", "600"])
            ours = [child, shell, stream_shell, streamed]
            assert all(p.alive() for p in ours)
            assert {p.pid for p in ours} <= set(descendants(server.pid))  # the server's processes
            assert server.stop() == 0
    assert still_alive(ours, within=5.0) == []
    assert any('"server.stopped"' in line for line in server.log)


def test_sigterm_while_a_time_limit_kill_is_under_way(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    """The job's own kill task (its time limit passed; TERM is ignored, so it waits out the grace
    period) is cancelled and awaited at shutdown, and the shutdown's kill still reaches what that
    kill found: the job's subshell died of its TERM, so the rest is no longer below the job's pid.
    Nothing is left pending, running or unlogged."""
    server = sandbox_server_factory(config={"services": {"sessions": {"kill_grace_ms": 60_000}}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        command = "trap '' TERM; echo $BASHPID; sleep 600"
        started = client.post("/api/process/start", json={"command": command, "timeoutMs": 100}).json()
        logs: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while not logs.get("stdout") and time.monotonic() < deadline:
            logs = client.get(f"/api/process/{started['processId']}/logs").json()
            time.sleep(0.01)
        job = Proc.of(int(logs["stdout"]))
        sleeper = [Proc.of(pid) for pid in descendants(job.pid)]
        time.sleep(0.5)  # the time limit has passed: the kill is waiting out its grace period
        assert job.alive() and sleeper and all(p.alive() for p in sleeper)
        assert client.get(f"/api/process/{started['processId']}").json()["process"]["status"] == "running"
        assert server.stop() == 0
    left = still_alive([job, *sleeper], within=5.0)
    for proc in left:  # never leave them behind, even when the test fails
        os.kill(proc.pid, signal.SIGKILL)
    assert left == []
    log = "\n".join(server.log)
    assert '"server.stopped"' in log
    assert "Task was destroyed" not in log and "task_failed" not in log and "Traceback" not in log


def test_sigterm_ends_what_escaped_its_tree(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    """A double-forked process (in a session of its own, its parents gone) is adopted by the
    server, a child subreaper, and ended when the server stops."""
    server = sandbox_server_factory()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        command = "(setsid nohup bash -c 'exec sleep 600' >/dev/null 2>&1 &); sleep 0.2"
        assert client.post("/api/execute", json={"command": command, "sessionId": "s"}).json()["exitCode"] == 0
        escaped = [Proc.of(pid) for pid in descendants(server.pid) if cmdline(pid) == ["sleep", "600"]]
        assert len(escaped) == 1  # adopted by the server: still among its descendants
        assert server.stop() == 0
    assert still_alive(escaped, within=5.0) == []


#: The default shutdown timeout (README: the process is gone this long after SIGTERM).
SHUTDOWN_TIMEOUT = 5.0
#: What every command of the test below ignores, so each waits out its TERM-to-KILL grace.
DEAF = "trap '' TERM HUP INT; "


async def first_line(client: httpx.AsyncClient, path: str, body: dict[str, Any], wanted: str) -> AsyncIterator[None]:
    """Open an SSE stream, wait for a line containing ``wanted``, then hold the stream open."""
    async with client.stream("POST", path, json=body) as stream:
        lines = stream.aiter_lines()
        async for line in lines:
            if wanted in line:
                break
        yield
        async for _ in lines:  # held until the server goes away
            pass


def busy(server: ServerProcess, wanted: Counter[str]) -> bool:
    """Whether the server's descendants run at least the ``wanted`` numbers of each command."""
    found: Counter[str] = Counter()
    for pid in descendants(server.pid):
        argv = cmdline(pid) or []
        if argv[:1] == ["sleep"]:
            found[" ".join(argv)] += 1
        elif argv and argv[0].endswith("mksquashfs"):
            found["mksquashfs"] += 1
    return all(found[key] >= count for key, count in wanted.items())


async def test_sigterm_with_every_surface_busy_is_gone_within_the_shutdown_timeout(
    sandbox_server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Running commands, background processes, streams, a terminal, a code context running
    code, a watch and a backup, all busy and each command deaf to SIGTERM (so every kill waits
    out its grace): after SIGTERM the server is gone within ``shutdown_timeout`` (default
    settings) plus a margin, and none of the processes it had is left running. The services
    stop at once, not one after the other."""
    archives = tmp_path / "archives"
    server = sandbox_server_factory(config={"services": {"backup": {"archive_root": str(archives)}}}, subreaper=True)
    workspace = Path(server.workspace)
    (workspace / "watched").mkdir()
    (workspace / "big").mkdir()
    with (workspace / "big" / "sparse").open("wb") as fh:
        fh.truncate(200 << 30)  # 200 GiB of holes: mksquashfs reads them for a while
    tasks: list[asyncio.Task[Any]] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

        async def hold(path: str, body: dict[str, Any], wanted: str) -> None:
            async for _ in first_line(client, path, body, wanted):
                ready.release()

        ready = asyncio.Semaphore(0)
        for i in range(3):
            command = {"command": DEAF + "sleep 601; :", "sessionId": f"fg{i}"}
            tasks.append(asyncio.create_task(client.post("/api/execute", json=command)))
            started = await client.post(
                "/api/process/start", json={"command": DEAF + "sleep 602; :", "sessionId": f"bg{i}"}
            )
            assert started.status_code == 200, started.text
            stream = {"command": DEAF + "echo ready; sleep 603; :", "sessionId": f"st{i}"}
            tasks.append(asyncio.create_task(hold("/api/execute/stream", stream, "ready")))
        tasks.append(asyncio.create_task(hold("/api/terminals/attach", {"sessionId": "term"}, "data")))
        context = (await client.post("/api/contexts", json={"language": "python"})).json()
        code = "print('ready', flush=True); import time; time.sleep(600)"
        body = {"context_id": context["contextId"], "code": code}
        tasks.append(asyncio.create_task(hold("/api/execute/code", body, "ready")))
        tasks.append(asyncio.create_task(hold("/api/watch", {"path": str(workspace / "watched")}, "watching")))
        backup = {"dir": str(workspace / "big"), "archivePath": str(archives / "a.sqsh")}
        tasks.append(asyncio.create_task(client.post("/api/backup/create", json=backup)))
        for _ in range(6):  # the streams, the terminal, the code and the watch
            await asyncio.wait_for(ready.acquire(), 60)
        typed = base64.b64encode(f"{DEAF}sleep 604; :\r".encode()).decode()
        wrote = await client.post("/api/terminals/write", json={"sessionId": "term", "data": typed})
        assert wrote.status_code == 200, wrote.text
        wanted = Counter({"sleep 601": 3, "sleep 602": 3, "sleep 603": 3, "sleep 604": 1, "mksquashfs": 1})

        async def everything_busy() -> None:
            while True:
                if busy(server, wanted):
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(everything_busy(), 60)
        ours = [Proc.of(pid) for pid in descendants(server.pid) if running(pid)]
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(server.proc.wait, SHUTDOWN_TIMEOUT + 2)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server was still running {SHUTDOWN_TIMEOUT + 2} s after SIGTERM")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert code == 0
    left = still_alive(ours, within=2.0)
    for proc in left:  # never leave them behind, even when the test fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    assert left == [], [(p.pid, cmdline(p.pid)) for p in left]
    assert any('"server.stopped"' in line for line in server.log)
