"""SIGTERM stops the server cleanly and ends every session shell and child process."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx

from sandbox_core.testing import ServerProcess


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_ends_shells_and_children(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        body = client.post("/api/execute", json={"command": "sleep 600 & echo $! $$", "sessionId": "s"}).json()
        child, shell = (int(x) for x in body["stdout"].split())
        with client.stream("POST", "/api/execute/stream", json={"command": "echo up; sleep 600"}) as stream:
            for line in stream.iter_lines():
                if '"stdout"' in line:
                    break
            pgrep = subprocess.run(["pgrep", "-f", "^sleep 600$"], capture_output=True, text=True, timeout=10)
            streamed = [int(p) for p in pgrep.stdout.split()]
            assert alive(child) and alive(shell) and len(streamed) >= 2
            assert server.stop() == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in [child, shell, *streamed]):
        time.sleep(0.05)
    assert not any(alive(p) for p in [child, shell, *streamed])
    assert any('"server.stopped"' in line for line in server.log)
