"""Helpers of the terminal tests: servers with ``/ws/pty``, raw sockets to it, and an
in-process registry of the sessions and terminals services (fixtures: conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from wsproto.events import BytesMessage, TextMessage

from sandbox_core.plugins import Hooks, make_plugin_manager
from sandbox_core.registry import ServiceRegistry
from sandbox_core.testing import ServerProcess, subreaper
from sandbox_core.testing.plugin import TEST_CONFIG
from sandbox_services import procfs

SERVE_WITH_PTY = str(Path(__file__).with_name("serve_with_pty.py"))


class PtyServer(ServerProcess):
    """A real server (subprocess, free port, child subreaper) serving http and ``/ws/pty``
    through ``serve_with_pty.py``; everything else as :class:`ServerProcess`."""

    def __init__(self, **kwargs: Any) -> None:
        config = dict(kwargs.pop("config", None) or TEST_CONFIG)
        config.setdefault("server", {})
        config["server"] = {**config["server"], "transports": ["http", "ptytest"]}
        super().__init__(config=config, subreaper=True, **kwargs)
        # terminals run an interactive bash, which reads ~/.bashrc: an empty home of its own, so
        # that what the machine's rc files do (or wait for) is no part of the tests
        if "HOME" not in (kwargs.get("env") or {}):
            self.env["HOME"] = self._tmp.name

    def command(self, ready_fd: int) -> list[str]:
        return [sys.executable, SERVE_WITH_PTY, "serve", "--config", str(self.config_path), "--ready-fd", str(ready_fd)]


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def pty_url(server: ServerProcess, session_id: str | None = None, **params: object) -> str:
    query = {"sessionId": session_id} if session_id is not None else {}
    return f"{server.url}/ws/pty?" + urlencode({**query, **params})


class RawPty:
    """A ``/ws/pty`` socket read frame by frame (the wire as it is)."""

    def __init__(self, ws: AsyncWebSocketSession) -> None:
        self.ws = ws
        self.received = bytearray()  # every binary frame after `ready`
        self.errors: list[str] = []

    async def handshake(self) -> tuple[bytes | None, dict[str, Any]]:
        """(the binary frame before ``ready``, or None; the ``ready`` message)."""
        replay: bytes | None = None
        while True:
            event = await self.ws.receive(timeout=30)
            if isinstance(event, BytesMessage):
                assert replay is None, "more than one binary frame before ready"
                replay = bytes(event.data)
            elif isinstance(event, TextMessage):
                return replay, json.loads(event.data)

    async def next_text(self, within: float = 30) -> dict[str, Any]:
        """The next text message (binary frames meanwhile are kept in ``received``)."""
        deadline = time.monotonic() + within
        while True:
            event = await self.ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
            if isinstance(event, TextMessage):
                message: dict[str, Any] = json.loads(event.data)
                return message
            self.received += event.data

    async def until(self, needle: bytes, within: float = 30) -> bytes:
        """Read output until ``needle`` has arrived; everything received so far."""
        deadline = time.monotonic() + within
        while needle not in self.received:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} not received in {within} s; got {bytes(self.received[-2000:])!r}"
            event = await self.ws.receive(timeout=left)
            if isinstance(event, BytesMessage):
                self.received += event.data
            elif isinstance(event, TextMessage):
                self.errors.append(json.loads(event.data).get("message", ""))
        return bytes(self.received)

    async def closed(self, within: float = 30) -> tuple[int, str]:
        """Read until the server closes the socket: (code, reason)."""
        deadline = time.monotonic() + within
        try:
            while True:
                event = await self.ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
                if isinstance(event, BytesMessage):
                    self.received += event.data
        except WebSocketDisconnect as exc:
            return exc.code, exc.reason or ""


@contextlib.asynccontextmanager
async def raw_pty(
    server: ServerProcess, session_id: str, headers: dict[str, str] | None = None, **params: object
) -> AsyncIterator[RawPty]:
    async with (
        httpx.AsyncClient(timeout=30, headers=headers) as client,
        aconnect_ws(pty_url(server, session_id, **params), client, max_message_size_bytes=1 << 20) as ws,
    ):
        yield RawPty(ws)


@contextlib.asynccontextmanager
async def registry_of(workspace: Path, **settings: msgspec.Struct) -> AsyncIterator[ServiceRegistry]:
    """A started in-process registry of the sessions, processes, commands and terminals services.

    The sessions service makes its process a child subreaper and, when it stops, ends every
    child of the process that it did not spawn itself: in a test process, that would be the
    servers other tests started (the shared ``sandbox_server``). So the test process's children
    are counted as spawned while the registry runs, and the subreaper flag is put back after."""
    from sandbox_services import spawn
    from sandbox_services.sessions import SessionSettings

    settings.setdefault("sessions", SessionSettings(kill_grace_ms=500))
    specs = Hooks(make_plugin_manager()).services()
    names = ("sessions", "processes", "commands", "terminals")
    registry = ServiceRegistry({n: specs[n] for n in names}, settings=settings, workspace=str(workspace))
    others = set(procfs.children(os.getpid())) - spawn._SPAWNED
    was_subreaper = subreaper()
    spawn._SPAWNED.update(others)
    try:
        await registry.start()
        try:
            yield registry
        finally:
            await registry.aclose()
    finally:
        spawn._SPAWNED.difference_update(others)
        subreaper(was_subreaper)


async def wait_for(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
