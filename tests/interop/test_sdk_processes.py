"""The official @cloudflare/sandbox client's process operations (http transport) against our server."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from sandbox_core.testing import ServerProcess

Run = Callable[..., dict[str, Any]]


def scenario(node_runner: Run, server: ServerProcess, name: str, *args: str) -> Any:
    out = node_runner("sdk_http.mjs", server.url, name, *args)
    assert out["returncode"] == 0, out
    return out["result"]


def processes_with_argument(argument: str) -> list[int]:
    """Pids of the processes on this machine whose command line has ``argument``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argument.encode() in argv:
            found.append(int(entry))
    return found


def test_processes_basic(node_runner: Run, sandbox_server: ServerProcess) -> None:
    result = scenario(node_runner, sandbox_server, "processes_basic")
    start = result["start"]
    process_id = start["processId"]
    assert start["success"] is True and process_id.startswith("interop-p1-") and isinstance(start["pid"], int)
    assert start["command"] == "printf 'one\\n'; echo two >&2; printf three; exit 0"

    events = result["events"]
    assert events[0]["type"] == "process_info" and events[0]["processId"] == process_id
    assert events[-1] == {
        "type": "exit",
        "processId": process_id,
        "exitCode": 0,
        "data": "Process completed with exit code 0",
        "timestamp": events[-1]["timestamp"],
    }
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


def test_processes_kill(node_runner: Run, sandbox_server: ServerProcess) -> None:
    seconds = f"600.{random.randrange(10**8):08d}"  # a sleep this test can find by its argument
    result = scenario(node_runner, sandbox_server, "processes_kill", seconds)
    process_id = result["start"]["processId"]
    assert result["running"]["process"]["status"] == "running"
    assert "exitCode" not in result["running"]["process"] and "endTime" not in result["running"]["process"]
    assert result["kill"] == {"success": True, "processId": process_id, "timestamp": result["kill"]["timestamp"]}
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
    deadline = time.monotonic() + 5
    while processes_with_argument(seconds) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with_argument(seconds) == []  # the sleeps themselves are gone, not only their records


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
        assert error["context"] == {"processId": "interop-no-such-process"}
    empty = result["emptyCommand"]["error"]
    assert (empty["name"], empty["code"], empty["httpStatus"]) == ("CommandError", "INVALID_COMMAND", 400)
    bad_id = result["badId"]["error"]
    assert (bad_id["name"], bad_id["code"], bad_id["context"]["field"]) == (
        "ValidationFailedError",
        "VALIDATION_FAILED",
        "processId",
    )
