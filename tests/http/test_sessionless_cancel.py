"""A sessionless ``execute`` whose client goes away ends its process tree (as a session's command does)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from sandbox_core.testing import ServerProcess


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone: it has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def wait_for_file(path: Path) -> str:
    for _ in range(300):
        text = read_text(path)
        if text.endswith("\n"):
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} was never written")


async def wait_gone(pids: list[int]) -> list[int]:
    for _ in range(300):  # up to ~15 s: the grace period is 2 s
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        await asyncio.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


async def test_sessionless_execute_ends_its_tree_when_the_client_leaves(sandbox_server: ServerProcess) -> None:
    pidfile = Path(sandbox_server.workspace) / f"pids-{os.urandom(4).hex()}"
    command = f"sleep 30 & echo $$ $! > {pidfile}; wait"
    async with httpx.AsyncClient(base_url=sandbox_server.url, timeout=60) as client:
        call = asyncio.ensure_future(
            client.post("/api/execute", json={"command": command, "sessionId": "__DISABLE_SESSION__"})
        )
        pids = [int(word) for word in (await wait_for_file(pidfile)).split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        call.cancel()  # the connection is closed: the server sees the client leave
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await wait_gone(pids) == [], "the sessionless command outlived its departed client"
        assert (await client.post("/api/execute", json={"command": "echo ok"})).json()["stdout"] == "ok"
