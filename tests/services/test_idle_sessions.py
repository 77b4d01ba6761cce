"""``[services.sessions] idle_timeout_s``: idle sessions expire."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from sandbox_core.testing import ServerProcess


def test_idle_sessions_expire(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    """``idle_timeout_s``: a session with nothing running is deleted after that long; one whose
    process still runs is kept."""
    server = sandbox_server_factory(config={"services": {"sessions": {"idle_timeout_s": 0.3}}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for sid in ("idle", "busy"):
            assert client.post("/api/execute", json={"command": "export KEPT=1", "sessionId": sid}).status_code == 200
        client.post("/api/process/start", json={"command": "sleep 5", "sessionId": "busy"}).raise_for_status()
        deadline = time.monotonic() + 10
        while "idle" in client.get("/api/session/list").json()["data"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/api/session/list").json()["data"] == ["busy"]
        after = client.post("/api/execute", json={"command": "echo ${KEPT:-gone}", "sessionId": "idle"}).json()
        assert after["stdout"] == "gone"  # a fresh session under the same id
        kept = client.post("/api/execute", json={"command": "echo ${KEPT:-gone}", "sessionId": "busy"}).json()
        assert kept["stdout"] == "1"
