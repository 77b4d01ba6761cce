"""Interop tests run the official JavaScript clients under Node against our real server."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def node_runner() -> Callable[..., dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "@cloudflare" / "sandbox").is_dir():
        pytest.fail("Node and tests/interop/node_modules are required: run `npm ci --prefix tests/interop`")

    def run(script: str, *args: str, timeout: float = 60) -> dict[str, Any]:
        proc = subprocess.run(
            [node, "--import", "./register.mjs", script, *args],
            cwd=HERE,
            capture_output=True,
            timeout=timeout,
            text=True,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        assert lines, f"no JSON from {script} {args}: rc={proc.returncode}\nstdout={proc.stdout}\nstderr={proc.stderr}"
        out: dict[str, Any] = json.loads(lines[-1])
        out["returncode"] = proc.returncode
        return out

    return run
