"""Kills under load leave nothing behind: every process a deleted session started ends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import httpx

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import Proc, cmdline, descendants, still_alive


def test_session_deletes_leave_no_process(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    """Sessions deleted right after starting jobs that keep forking (a loop of sleeps, a nested
    background job, a double fork): none of their processes survives, nor the server's stop."""
    server = sandbox_server_factory()
    command = (
        "(while :; do sleep 600 & sleep 0.01; done) & "
        "(sleep 600 & wait) & "
        "(setsid nohup sleep 600 >/dev/null 2>&1 &); true"
    )
    seen: list[Proc] = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(40):
            sid = f"race-{i}"
            assert client.post("/api/execute", json={"command": command, "sessionId": sid}).json()["exitCode"] == 0
            for pid in descendants(server.pid):
                if cmdline(pid) == ["sleep", "600"]:
                    with contextlib.suppress(AssertionError):  # it may have ended since
                        seen.append(Proc.of(pid))
            client.post("/api/session/delete", json={"sessionId": sid}).raise_for_status()
        assert len(seen) >= 40  # the scan saw the jobs (else the check below would pass vacuously)
        left = still_alive(seen, within=10.0)
        assert left == [], f"{len(left)} of {len(seen)} processes outlived their session"
        assert server.stop() == 0
