"""The official @cloudflare/sandbox client over its websocket transport against our server.

The server serves only the ws transport, so every call of the SDK must come over the socket
(the SDK falls back to plain HTTP only while a connection is being set up)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox_core.testing import ServerProcess

Run = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def ws_only_server() -> Iterator[ServerProcess]:
    server = ServerProcess(
        transports=["ws"], config={"server": {"log_level": "debug"}, "services": {"sessions": {"kill_grace_ms": 500}}}
    ).start()
    try:
        yield server
    finally:
        server.stop()


def scenario(node_runner: Run, server: ServerProcess, name: str) -> Any:
    out = node_runner("sdk_ws.mjs", server.url, name)
    assert out["returncode"] == 0, out
    return out["result"]


def test_execute(node_runner: Run, ws_only_server: ServerProcess) -> None:
    result = scenario(node_runner, ws_only_server, "execute")
    assert result["success"] is True
    assert (result["exitCode"], result["stdout"], result["stderr"]) == (0, "hi", "")
    assert result["command"] == "echo hi"


def test_execute_stream(node_runner: Run, ws_only_server: ServerProcess) -> None:
    events = scenario(node_runner, ws_only_server, "execute_stream")
    assert events[0]["type"] == "start"
    assert events[-1]["type"] == "complete" and events[-1]["exitCode"] == 3
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "a\n"
    assert "".join(e["data"] for e in events if e["type"] == "stderr") == "b\n"


def test_errors_are_typed(node_runner: Run, ws_only_server: ServerProcess) -> None:
    result = scenario(node_runner, ws_only_server, "errors")
    exit_error = result["exit"]["error"]
    assert exit_error["name"] == "SessionTerminatedError" and exit_error["code"] == "SESSION_TERMINATED"
    assert exit_error["httpStatus"] == 410
    assert result["after"]["ok"] and result["after"]["result"]["stdout"] == "back"
    missing = result["missing"]["error"]
    assert missing["name"] == "FileNotFoundError" and missing["code"] == "FILE_NOT_FOUND"
    stream = result["stream"]["error"]
    assert stream["message"].startswith("Stream error: 404 - ") and "PROCESS_NOT_FOUND" in stream["message"]


def test_many_calls_share_one_socket(node_runner: Run, ws_only_server: ServerProcess) -> None:
    before = sum('"ws.connected"' in line for line in ws_only_server.log)
    result = scenario(node_runner, ws_only_server, "many")
    assert result["stdout"] == [str(i) for i in range(21)]
    assert "".join(e["data"] for e in result["events"] if e["type"] == "stdout") == "1\n2\n3\n"
    assert sum('"ws.connected"' in line for line in ws_only_server.log) - before == 1
