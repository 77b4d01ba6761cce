"""The official clients' interpreter calls against our server: @cloudflare/sandbox's
InterpreterClient over http and over its websocket transport, and capnweb over /rpc (where
``runCodeStream`` calls the client's callbacks back)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG

Run = Callable[..., dict[str, Any]]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def interp_interop_server() -> Iterator[ServerProcess]:
    server = ServerProcess(config=TEST_CONFIG).start()
    try:
        yield server
    finally:
        server.stop()


def drive(node_runner: Run, server: ServerProcess, mode: str) -> Any:
    out = node_runner("sdk_interpreter.mjs", server.url, mode, timeout=90)
    assert out["returncode"] == 0, out
    return out["result"]


def check_runs(result: dict[str, Any], env_value: str) -> None:
    run = result["run"]
    stdout = [c for c in run if c["kind"] == "stdout"]
    # three separate callbacks, each as it was printed (upstream sends one, at the end)
    assert [c["value"]["text"] for c in stdout] == ["0\n", "1\n", "2\n"]
    assert stdout[2]["at"] - stdout[0]["at"] >= 200
    assert [c["value"]["text"] for c in run if c["kind"] == "stderr"] == ["warn\n"]
    assert [c["value"]["text"] for c in run if c["kind"] == "result"] == ["42"]
    assert [c["value"]["text"] for c in result["env"] if c["kind"] == "stdout"] == [f"{env_value}\n"]
    failing = result["failing"]
    assert [c["kind"] for c in failing] == ["error"]
    assert failing[0]["value"]["name"] == "ZeroDivisionError"
    assert failing[0]["value"]["message"] == "division by zero"
    assert any("1 / 0" in line for line in failing[0]["value"]["traceback"])
    events = [e for e in result["events"] if e["type"] != "execution_start"]
    assert events[0]["type"] == "result" and events[0]["png"] == PNG
    assert base64.b64decode(events[0]["png"]).startswith(b"\x89PNG")
    assert events[-1]["type"] == "execution_complete"


@pytest.mark.parametrize("mode", ["http", "websocket"])
def test_sdk_interpreter(node_runner: Run, interp_interop_server: ServerProcess, mode: str) -> None:
    result = drive(node_runner, interp_interop_server, mode)
    context = result["context"]
    assert context["language"] == "python" and context["id"] in result["listed"]
    check_runs(result, "from-sdk")
    if shutil.which("node") is not None:
        js = result["js"]
        assert js["ok"], js
        assert [c["value"]["text"] for c in js["result"] if c["kind"] == "stdout"] == ["js says hi\n"]
        assert [c["value"].get("json") for c in js["result"] if c["kind"] == "result"] == [[2, 4]]
    missing = result["missing"]["error"]
    assert missing["name"] == "ContextNotFoundError" and missing["code"] == "CONTEXT_NOT_FOUND"
    run_missing = result["runMissing"]
    assert not run_missing["ok"] and "CONTEXT_NOT_FOUND" in (
        str(run_missing["error"].get("code")) + run_missing["error"]["message"]
    )


def test_capnweb_interpreter(node_runner: Run, interp_interop_server: ServerProcess) -> None:
    result = drive(node_runner, interp_interop_server, "rpc")
    context = result["context"]
    assert context["language"] == "python"
    assert context["createdAtIsDate"] and context["lastUsedIsDate"]
    assert {"id": context["id"], "createdAtIsDate": True} in result["listed"]
    check_runs(result, "from-rpc")
    assert result["deleted"] == "undefined"
    missing = result["missing"]["error"]
    assert missing["code"] == "CONTEXT_NOT_FOUND" and missing["details"] == {"contextId": context["id"]}
