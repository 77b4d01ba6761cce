"""Where the server may write cgroups (v2), a session's and a process's cgroup catch every
process they started, even one that double-forks and clears its environment."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable

import httpx
import pytest

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import Proc, cmdline, descendants, still_alive
from sandbox_services.cgroups import open_tree


def _writable() -> bool:
    tree = open_tree()
    if tree is not None:
        os.rmdir(tree.base)  # only a look: leave nothing behind
    return tree is not None


pytestmark = pytest.mark.skipif(not _writable(), reason="no writable cgroup v2 hierarchy here")

HIDDEN = "(setsid nohup env -i /bin/sleep 600 >/dev/null 2>&1 &)"  # no SANDBOX_* mark left


def hidden_sleeps(server: ServerProcess) -> list[Proc]:
    found = []
    deadline = time.monotonic() + 10
    while not found and time.monotonic() < deadline:
        found = [Proc.of(pid) for pid in descendants(server.pid) if cmdline(pid) == ["/bin/sleep", "600"]]
        time.sleep(0.02)
    return found


def test_deleting_a_session_ends_even_what_hid_from_its_marks(
    sandbox_server_factory: Callable[..., ServerProcess],
) -> None:
    server = sandbox_server_factory()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.post("/api/execute", json={"command": HIDDEN, "sessionId": "s"}).raise_for_status()
        hidden = hidden_sleeps(server)
        assert len(hidden) == 1
        client.post("/api/session/delete", json={"sessionId": "s"}).raise_for_status()
        assert still_alive(hidden, within=5.0) == []


def test_killing_a_process_ends_even_what_hid_from_its_marks(
    sandbox_server_factory: Callable[..., ServerProcess],
) -> None:
    server = sandbox_server_factory()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        command = f"{HIDDEN}; sleep 600"
        started = client.post("/api/process/start", json={"command": command, "processId": "p"}).json()
        assert started["success"], started
        hidden = hidden_sleeps(server)
        assert len(hidden) == 1
        client.delete("/api/process/p").raise_for_status()
        assert still_alive(hidden, within=5.0) == []


def test_a_command_cannot_leave_a_session_cgroup_by_environment(
    sandbox_server_factory: Callable[..., ServerProcess],
) -> None:
    """And the server's stop ends it too."""
    server = sandbox_server_factory()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        command = f"bash -c {shlex.quote(HIDDEN)}"
        client.post("/api/execute", json={"command": command, "sessionId": "s"}).raise_for_status()
        hidden = hidden_sleeps(server)
        assert len(hidden) == 1
        assert server.stop() == 0
    assert still_alive(hidden, within=5.0) == []
