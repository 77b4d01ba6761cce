"""SIGTERM stops the server cleanly and ends every session shell and child process."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import httpx

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import Proc, cmdline, descendants, still_alive


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
