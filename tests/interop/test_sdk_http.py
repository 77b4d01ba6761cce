"""The official @cloudflare/sandbox client (http transport) against our server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox_core.testing import ServerProcess

Run = Callable[..., dict[str, Any]]


def scenario(node_runner: Run, server: ServerProcess, name: str) -> Any:
    out = node_runner("sdk_http.mjs", server.url, name)
    assert out["returncode"] == 0, out
    return out["result"]


def test_execute(node_runner: Run, sandbox_server: ServerProcess) -> None:
    result = scenario(node_runner, sandbox_server, "execute")
    assert result["success"] is True
    assert (result["exitCode"], result["stdout"], result["stderr"]) == (0, "hi", "")
    assert result["command"] == "echo hi"


def test_execute_stream(node_runner: Run, sandbox_server: ServerProcess) -> None:
    events = scenario(node_runner, sandbox_server, "execute_stream")
    assert next(e["type"] for e in events) == "start"
    assert events[-1]["type"] == "complete" and events[-1]["exitCode"] == 3
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "a\n"
    assert "".join(e["data"] for e in events if e["type"] == "stderr") == "b\n"


def test_session_state(node_runner: Run, sandbox_server: ServerProcess) -> None:
    result = scenario(node_runner, sandbox_server, "session_state")
    assert result["second"]["stdout"] == "bar\n/tmp"


def test_errors_are_typed(node_runner: Run, sandbox_server: ServerProcess) -> None:
    result = scenario(node_runner, sandbox_server, "errors")
    exit_error = result["exit"]["error"]
    assert exit_error["name"] == "SessionTerminatedError" and exit_error["code"] == "SESSION_TERMINATED"
    assert exit_error["httpStatus"] == 410
    assert result["after"]["ok"] and result["after"]["result"]["stdout"] == "back"
    assert result["create1"]["ok"]
    duplicate = result["create2"]["error"]
    assert duplicate["code"] == "SESSION_ALREADY_EXISTS" and duplicate["httpStatus"] == 409


def test_env_and_cwd(node_runner: Run, sandbox_server: ServerProcess) -> None:
    result = scenario(node_runner, sandbox_server, "env_cwd")
    assert result["scoped"]["stdout"] == "A=1\n/tmp"
    assert result["after"]["stdout"].startswith("A=unset\n")
    assert result["after"]["stdout"] != "A=unset\n/tmp"
