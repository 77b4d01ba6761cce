"""The official @cloudflare/sandbox client's process operations (http transport) against our server."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import cmdline, descendants, running

Run = Callable[..., dict[str, Any]]


def scenario(node_runner: Run, server: ServerProcess, name: str, *args: str) -> Any:
    out = node_runner("sdk_http.mjs", server.url, name, *args)
    assert out["returncode"] == 0, out
    return out["result"]


def running_under(server: ServerProcess, argv: list[str]) -> list[int]:
    """Pids of the server's running descendants whose argument list is ``argv``. The server is a
    subreaper, so a process it started stays its descendant even when its parent is gone."""
    return [pid for pid in descendants(server.pid) if running(pid) and cmdline(pid) == argv]


def test_processes_basic(node_runner: Run, sandbox_server: ServerProcess) -> None:
    result = scenario(node_runner, sandbox_server, "processes_basic")
    start = result["start"]
    process_id = start["processId"]
    assert start["success"] is True and process_id.startswith("interop-p1-") and isinstance(start["pid"], int)
    assert start["command"] == "printf 'one\\n'; echo two >&2; printf three; exit 0"

    events = result["events"]
    assert events[0]["type"] == "process_info" and events[0]["processId"] == process_id
    exit_event = {k: v for k, v in events[-1].items() if k != "timestamp"}
    assert exit_event == {
        "type": "exit",
        "processId": process_id,
        "exitCode": 0,
        "data": "Process completed with exit code 0",
    }
    assert events[-1]["timestamp"].endswith("Z")
    assert {e["type"] for e in events[1:-1]} == {"stdout", "stderr"}
    assert all(e["processId"] == process_id for e in events)
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "one\nthree"
    assert "".join(e["data"] for e in events if e["type"] == "stderr") == "two\n"

    got = result["got"]["process"]
    assert result["got"]["success"] is True
    assert (got["id"], got["pid"], got["status"], got["exitCode"]) == (process_id, start["pid"], "completed", 0)
    assert got["command"] == start["command"]
    assert result["datesParse"] == [True, True]  # JavaScript's Date reads startTime and endTime

    logs = result["logs"]
    assert (logs["success"], logs["processId"], logs["stdout"], logs["stderr"]) == (
        True,
        process_id,
        "one\nthree",
        "two\n",
    )
    assert result["listSuccess"] is True
    assert result["listed"]["status"] == "completed" and result["listed"]["exitCode"] == 0

    failing = result["failing"]["process"]
    assert (failing["status"], failing["exitCode"]) == ("failed", 3)
    assert [e["type"] for e in result["failingEvents"]] == ["process_info", "stderr", "exit"]
    assert result["failingEvents"][-1]["exitCode"] == 3


def test_processes_kill(node_runner: Run, sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory(subreaper=True)
    seconds = f"600.{random.randrange(10**8):08d}"  # a sleep this test can tell by its argument
    result = scenario(node_runner, server, "processes_kill", seconds)
    process_id = result["start"]["processId"]
    assert result["running"]["process"]["status"] == "running"
    assert "exitCode" not in result["running"]["process"] and "endTime" not in result["running"]["process"]
    kill = result["kill"]
    assert set(kill) == {"success", "processId", "timestamp"} and kill["timestamp"].endswith("Z")
    assert (kill["success"], kill["processId"]) == (True, process_id)
    killed = result["killed"]["process"]
    assert (killed["status"], killed["exitCode"]) == ("killed", 143)
    types = [e["type"] for e in result["streamAfter"]]
    # the sleep wrote nothing; its shell may have reported "Terminated" on stderr before it ended too
    assert types[0] == "process_info" and types[-1] == "exit" and set(types[1:-1]) <= {"stderr"}, types
    assert result["streamAfter"][-1]["exitCode"] == 143

    again = result["killAgain"]
    assert again["ok"] is False
    assert (again["error"]["name"], again["error"]["code"], again["error"]["httpStatus"]) == (
        "CommandNotFoundError",
        "COMMAND_NOT_FOUND",
        404,
    )

    assert result["killAll"]["success"] is True and result["killAll"]["cleanedCount"] >= 2
    assert [p["process"]["status"] for p in result["othersAfter"]] == ["killed", "killed"]
    # the processes themselves are gone, not only their records: each one the API named, and
    # every sleep anywhere under the server
    shells = [result["start"]["pid"], *(p["process"]["pid"] for p in result["othersAfter"])]
    deadline = time.monotonic() + 5
    while running_under(server, ["sleep", seconds]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_under(server, ["sleep", seconds]) == []
    assert [pid for pid in shells if pid in descendants(server.pid) and running(pid)] == []


def test_processes_errors(node_runner: Run, sandbox_server: ServerProcess) -> None:
    result = scenario(node_runner, sandbox_server, "processes_errors")
    for step in ("get", "kill", "logs", "stream"):
        outcome = result[step]
        assert outcome["ok"] is False, (step, outcome)
        error = outcome["error"]
        assert (error["name"], error["code"], error["httpStatus"]) == (
            "ProcessNotFoundError",
            "PROCESS_NOT_FOUND",
            404,
        ), (step, error)
        assert error["context"]["processId"] == "interop-no-such-process"
        assert set(error["context"]) == {"processId", "runtimeId"}  # runtimeId: ours
    empty = result["emptyCommand"]["error"]
    assert (empty["name"], empty["code"], empty["httpStatus"]) == ("CommandError", "INVALID_COMMAND", 400)
    bad_id = result["badId"]["error"]
    assert (bad_id["name"], bad_id["code"], bad_id["context"]["field"]) == (
        "ValidationFailedError",
        "VALIDATION_FAILED",
        "processId",
    )
