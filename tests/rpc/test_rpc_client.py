"""The Python client over rpc: one shared session per client (one connection attempt for
concurrent callers), the token on the upgrade, timeouts, and a dropped connection that fails
pending calls and open streams at once, the next call connecting again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from helpers_rpc import sid, wait_for

from capnweb import SessionClosed, WebSocketClient
from sandbox_core import Sandbox
from sandbox_core.contract.models import StartEvent
from sandbox_core.errors import AccessDenied, ProcessNotFound, SandboxError, TransportError, ValidationFailed
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG
from sandbox_transport_rpc.client import RpcClientTransport, rpc_url
from sandbox_transport_rpc.settings import RpcSettings


class Proxy:
    """A TCP proxy to the server whose connections the test can cut (a dropped network)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.accepted = 0
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def aclose(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxy(rpc_server: ServerProcess) -> AsyncIterator[Proxy]:
    p = Proxy(rpc_server.port)
    await p.start()
    try:
        yield p
    finally:
        await p.aclose()


def test_url() -> None:
    assert rpc_url("http://h:1") == "ws://h:1/rpc"
    assert rpc_url("https://h/") == "wss://h/rpc"
    assert rpc_url("ws://h:1/rpc") == "ws://h:1/rpc"


async def test_errors_are_typed(sb: Sandbox) -> None:
    with pytest.raises(ProcessNotFound) as info:
        await sb.processes.get("nope")
    details = {"processId": "nope", "runtimeId": await sb.runtime_id()}
    assert (info.value.code, info.value.status, info.value.details) == ("PROCESS_NOT_FOUND", 404, details)
    with pytest.raises(ValidationFailed) as invalid:
        await sb.exec("true", timeout_ms=-1)
    assert invalid.value.details["field"] == "timeoutMs"
    with pytest.raises(SandboxError) as unknown:
        await sb.call("nope", "nothing")
    assert unknown.value.status == 404


async def test_stream_start_failure_raises(sb: Sandbox) -> None:
    with pytest.raises(SandboxError) as info:
        async for _ in sb.exec_stream("   "):
            pass
    assert (info.value.code, info.value.status) == ("INVALID_COMMAND", 400)


async def test_operations_without_a_contract_slot_go_through_the_generic_call(sb: Sandbox) -> None:
    started = await sb.call("commands", "execute", command="sleep 0", background=True)
    assert isinstance(started, dict) and started["processId"]
    assert await sb.call("greeter", "hello", name="cy") == {"greeting": "hello cy"}
    handle = await sb.create_session(sid(), command_timeout_ms=5000)
    assert (await handle.exec("echo ok")).stdout == "ok"
    await handle.delete()


async def test_concurrent_callers_share_one_connection(rpc_server: ServerProcess, proxy: Proxy) -> None:
    async with Sandbox(proxy.url, transport="rpc") as sb:
        results = await asyncio.gather(*(sb.ping() for _ in range(50)))
        assert results == ["healthy"] * 50
        assert proxy.accepted == 1
        await sb.exec("true")
        assert proxy.accepted == 1


async def test_a_dropped_connection_fails_pending_calls_and_the_next_call_reconnects(
    rpc_server: ServerProcess, proxy: Proxy
) -> None:
    async with Sandbox(proxy.url, transport="rpc", timeout=60) as sb:
        assert await sb.ping() == "healthy"
        pending = asyncio.ensure_future(sb.exec("sleep 30", session_id=sid()))
        stream = sb.exec_stream("echo s; sleep 30", session_id=sid())
        assert isinstance(await stream.__anext__(), StartEvent)
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        cut_at = loop.time()
        proxy.cut()
        with pytest.raises(TransportError):
            await asyncio.wait_for(pending, 10)
        with pytest.raises(TransportError):
            async for _ in stream:
                pass
        assert loop.time() - cut_at < 5  # at once, not after a timeout
        assert await sb.ping() == "healthy"  # a new connection
        assert proxy.accepted >= 2


async def test_token(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    token = "rpc-t0ken-value"
    server = sandbox_server_factory(config={**TEST_CONFIG, "server": {"token": token}}, env={"SANDBOX_TOKEN": ""})
    async with Sandbox(server.url, transport="rpc", token="wrong") as sb:
        with pytest.raises(AccessDenied) as info:
            await sb.ping()
        assert info.value.status == 401
    async with Sandbox(server.url, transport="rpc") as sb:
        with pytest.raises(AccessDenied):
            await sb.ping()
    async with Sandbox(server.url, transport="rpc", token=token) as sb:
        assert await sb.ping() == "healthy"
    client = WebSocketClient(rpc_url(server.url))  # a raw capnweb peer without the token
    with pytest.raises(SessionClosed):
        await client.connect()
    await client.aclose()
    assert all(token not in line for line in server.log)


async def test_a_call_past_the_timeout_fails_and_ends_its_command(rpc_server: ServerProcess) -> None:
    s = sid()
    async with Sandbox(rpc_server.url, transport="rpc", timeout=1) as sb:
        with pytest.raises(TransportError) as info:
            await sb.exec("sleep 30", session_id=s)
        assert "timeout" in info.value.message
        # the command was cancelled with the call: the session is free at once
        assert (await asyncio.wait_for(sb.exec("echo free", session_id=s), 10)).stdout == "free"


async def test_a_cancelled_call_ends_its_command(sb: Sandbox) -> None:
    s = sid()
    task = asyncio.ensure_future(sb.exec("sleep 30", session_id=s))
    await asyncio.sleep(0.3)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (await asyncio.wait_for(sb.exec("echo free", session_id=s), 10)).stdout == "free"


async def test_closing_the_client_fails_its_calls(rpc_server: ServerProcess) -> None:
    transport = RpcClientTransport(_ctx(rpc_server.url))
    assert (await transport.call("utils", "ping", {}))["status"] == "healthy"
    pending = asyncio.ensure_future(transport.call("commands", "execute", {"command": "sleep 30"}))
    await asyncio.sleep(0.2)
    await transport.aclose()
    with pytest.raises(TransportError):
        await asyncio.wait_for(pending, 10)
    with pytest.raises(TransportError):
        await transport.call("utils", "ping", {})


async def test_server_shutdown_fails_pending_calls(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory()
    async with Sandbox(server.url, transport="rpc", timeout=60) as sb:
        pending = asyncio.ensure_future(sb.exec("sleep 30", session_id=sid()))
        await asyncio.sleep(0.3)
        stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
        with pytest.raises(TransportError):
            await asyncio.wait_for(pending, 15)
        await stopping


def test_settings_refuse_unknown_and_bad_values() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"max_message_bytes": 0}, RpcSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"nope": 1}, RpcSettings)


def _ctx(url: str) -> Any:
    from sandbox_core.transport import ClientContext

    return ClientContext(url, RpcSettings(), 30.0)


async def _status(sb: Sandbox, process_id: str) -> bool:
    return (await sb.processes.get(process_id)).status == "killed"


async def test_closing_a_stream_early_ends_its_command(sb: Sandbox) -> None:
    stream = sb.exec_stream("yes", session_id=sid())
    start = await stream.__anext__()
    assert isinstance(start, StartEvent) and start.process_id is not None
    await stream.__anext__()
    await stream.aclose()
    process_id = start.process_id
    assert await wait_for(lambda: _status(sb, process_id))
