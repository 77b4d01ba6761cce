"""The Python client over ws: the token on the upgrade, one connection attempt shared by
concurrent first calls (and retried by the next call after a failure), typed errors as over
http, and the socket's URL."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
from helpers_ws import RawWs

from sandbox_core import Sandbox
from sandbox_core.errors import AccessDenied, FileNotFound, SessionTerminated, TransportError, ValidationFailed
from sandbox_core.testing import ServerProcess
from sandbox_transport_ws.client import ws_url

CONFIG = {"services": {"sessions": {"kill_grace_ms": 500}}}


def test_socket_url() -> None:
    assert ws_url("http://127.0.0.1:3000") == "http://127.0.0.1:3000/ws"
    assert ws_url("http://127.0.0.1:3000/") == "http://127.0.0.1:3000/ws"
    assert ws_url("ws://h:1/ws") == "http://h:1/ws"
    assert ws_url("wss://h/api/ws") == "https://h/api/ws"
    assert ws_url("https://proxy.example/sandbox-7") == "https://proxy.example/sandbox-7/ws"


async def test_token_goes_on_the_upgrade(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    token = "ws-t0ken-value"
    server = sandbox_server_factory(config={**CONFIG, "server": {"token": token}}, env={"SANDBOX_TOKEN": ""})
    async with Sandbox(server.url, transport="ws", token="wrong") as sb:
        with pytest.raises(AccessDenied) as refused:
            await sb.exec("echo hi")
        assert refused.value.status in (401, 403) and "upgrade" in refused.value.message
    async with Sandbox(server.url, transport="ws", token=token) as sb:
        await sb.exec("export WHERE=default-session")
        assert (await sb.exec("echo hi")).stdout == "hi"
    # with a token, a frame's Authorization header is no session id either (as over http)
    raw = await RawWs.connect(server.url, headers=[("Authorization", f"Bearer {token}")])
    try:
        await raw.request("a", "POST", "/api/execute", {"command": "echo $WHERE"}, {"Authorization": "Bearer other"})
        assert (await raw.answer("a"))[1]["body"]["stdout"] == "default-session"
    finally:
        await raw.aclose()
    assert all(token not in line for line in server.log)


async def test_concurrent_first_calls_share_one_failed_attempt_and_the_next_call_retries() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Sandbox(f"http://127.0.0.1:{port}", transport="ws") as sb:
        transport = sb._transport
        calls = [asyncio.ensure_future(sb.ping()) for _ in range(20)]
        await asyncio.sleep(0)
        attempt = transport._connecting  # type: ignore[attr-defined]
        assert attempt is not None
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, TransportError) for r in results), results
        assert transport._connecting is None  # type: ignore[attr-defined]
        with pytest.raises(TransportError):
            await sb.ping()  # a new attempt, failing again


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_errors_are_typed_as_over_http(ws_server: ServerProcess, transport: str) -> None:
    async with Sandbox(ws_server.url, transport=transport) as sb:
        with pytest.raises(FileNotFound) as missing:
            await sb.files.read("/nonexistent/ws-client")
        assert (missing.value.status, missing.value.details["path"]) == (404, "/nonexistent/ws-client")
        with pytest.raises(ValidationFailed) as invalid:
            await sb.call("commands", "execute", command=5)
        assert invalid.value.details["field"] == "command"
        with pytest.raises(SessionTerminated):
            await sb.exec("exit 3", session_id=f"ws-client-exit-{transport}")
        with pytest.raises(ValidationFailed):
            async for _ in sb.stream("commands", "execute_stream", command="true", timeoutMs=-1):
                pass


async def test_a_frame_from_the_server_nested_too_deeply_is_skipped() -> None:
    """The client reads a frame it cannot decode (nested past msgspec's limit, RecursionError)
    as one that is not the contract's: it goes on to the next frame. It used to end the
    connection's reader, failing every pending call."""
    from httpx_ws import WebSocketDisconnect
    from wsproto.events import TextMessage

    from sandbox_core.transport import ClientContext
    from sandbox_transport_ws.client import WsClientTransport, _Connection, _Pending

    deep = "[" * 100_000 + "]" * 100_000
    messages: list[TextMessage] = [
        TextMessage('{"type": "response", "id": "a", "status": 200, "body": ' + deep + "}"),
        TextMessage('{"type": "response", "id": "a", "status": 200, "body": {"ok": true}}'),
    ]

    class FakeSession:
        async def receive(self) -> TextMessage:
            if messages:
                return messages.pop(0)
            raise WebSocketDisconnect(1000, "done")

    conn = _Connection(WsClientTransport(ClientContext(url="http://127.0.0.1:1", settings=None, timeout=5)))
    answer = asyncio.get_running_loop().create_future()
    conn.pending["a"] = _Pending(answer)
    error = await conn._read(FakeSession())  # type: ignore[arg-type]
    assert answer.done() and answer.result().body == {"ok": True}
    assert isinstance(error, TransportError)
