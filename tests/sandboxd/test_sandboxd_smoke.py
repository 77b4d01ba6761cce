"""The sandboxd transport answers on both listeners, through the official SDK."""

from __future__ import annotations

from typing import Any

import httpx
from helpers_sandboxd import rest_url

from sandbox_core.testing import ServerProcess


def test_the_sdk_runs_a_command_with_its_exit_code_and_stderr(sdk: Any) -> None:
    result = sdk.commands.run("echo hi; echo oops >&2; exit 4")
    assert (result.stdout, result.stderr, result.exit_code) == ("hi\n", "oops\n", 4)


def test_health_answers_ok(sandboxd_server: ServerProcess) -> None:
    response = httpx.get(f"{rest_url(sandboxd_server)}/v1/health", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ok"
