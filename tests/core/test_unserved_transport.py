"""A client of a transport the server does not serve gets a 404 with the contract's error body
naming the transports that are served, and says so (ws and rpc clients, `sandbox attach`), instead
of an empty 403 read as a token problem."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from sandbox_core import Sandbox
from sandbox_core.errors import TransportError
from sandbox_core.testing import ServerProcess

UPGRADE = {"connection": "upgrade", "upgrade": "websocket", "sec-websocket-version": "13"}


async def upgrade(url: str) -> httpx.Response:
    key = base64.b64encode(os.urandom(16)).decode()
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url, headers={**UPGRADE, "sec-websocket-key": key})


@pytest.mark.parametrize("path", ["/ws", "/api/ws", "/ws/pty?sessionId=s", "/rpc", "/nowhere"])
async def test_an_upgrade_nobody_serves_is_a_404_naming_the_served_transports(
    sandbox_server_factory: Callable[..., ServerProcess], path: str
) -> None:
    server = sandbox_server_factory(transports=["http"])
    response = await upgrade(server.url + path)
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "UNKNOWN_ERROR" and body["httpStatus"] == 404
    assert body["context"]["transports"] == ["http"]
    assert body["message"] == f"No WebSocket endpoint at {path.split('?')[0]}: this server serves the transports http"


@pytest.mark.parametrize(("served", "client"), [(["rpc"], "ws"), (["http"], "rpc"), (["http", "rpc"], "ws")])
async def test_the_client_says_which_transports_the_server_serves(
    sandbox_server_factory: Callable[..., ServerProcess], served: list[str], client: str
) -> None:
    server = sandbox_server_factory(transports=served)
    with pytest.raises(TransportError) as info:
        async with Sandbox(server.url, transport=client) as sb:
            await sb.call("utils", "ping")
    error = info.value
    assert error.message.endswith(f" does not serve the {client} transport; it serves: {', '.join(served)}")
    assert f"127.0.0.1:{server.port}/" in error.message  # the endpoint it tried
    assert error.details["transports"] == served and error.details["status"] == 404


def test_attach_says_the_server_serves_no_terminals(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory(transports=["http", "rpc"])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox_core.cli", "attach", "s1", "--url", server.url],
        env=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "does not serve the ws transport; it serves: http, rpc" in proc.stderr, proc.stderr
