"""How a connection ends: closing a socket ends the streams of that connection and of no other;
an oversized frame closes with 1009 (either side); a closed socket fails every pending call of
the Python client, and its next call reconnects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers_ws import RawWs, events_of, wait_for

from sandbox_core import Sandbox
from sandbox_core.contract.models import CompleteEvent, StartEvent, StdoutEvent
from sandbox_core.errors import TransportError
from sandbox_core.testing import ServerProcess
from sandbox_transport_ws.settings import WsSettings

CONFIG = {"services": {"sessions": {"kill_grace_ms": 500}}}


async def status(sb: Sandbox, process_id: str) -> str:
    record: Any = await sb.call("processes", "get", id=process_id)
    return str(record["process"]["status"])


async def started(ws: RawWs, rid: str, command: str) -> str:
    """Start an exec stream on ``ws``; its process id once its first stdout arrived."""
    await ws.request(rid, "POST", "/api/execute/stream", {"command": command})
    start, stdout = events_of([await ws.frame(), await ws.frame()])
    assert (start["type"], stdout["type"]) == ("start", "stdout")
    return str(start["processId"])


@pytest.mark.parametrize("how", ["close frame", "dropped connection"])
async def test_closing_a_socket_ends_its_streams_and_no_others(ws_server: ServerProcess, how: str) -> None:
    a, b = await RawWs.connect(ws_server.url), await RawWs.connect(ws_server.url)
    try:
        a1 = await started(a, "s1", "echo a1; sleep 600")
        a2 = await started(a, "s2", "echo a2; sleep 600")
        b1 = await started(b, "s1", "echo b1; sleep 2; echo b1-done")  # the same request id, another socket
        if how == "close frame":
            await a.aclose()
        else:
            a.abort()
        async with Sandbox(ws_server.url, transport="ws") as sb:
            assert await wait_for(lambda: _both_killed(sb, a1, a2))
            assert await status(sb, b1) == "running"
            streamed, final = await b.answer("s1")
            assert [e.get("data") for e in events_of(streamed) if e["type"] == "stdout"] == ["b1-done\n"]
            assert final["status"] == 200
            assert await status(sb, b1) == "completed"
    finally:
        await a.aclose()
        await b.aclose()


async def _both_killed(sb: Sandbox, *ids: str) -> bool:
    return all([await status(sb, i) == "killed" for i in ids])


async def test_an_oversized_frame_closes_the_socket_with_1009(
    sandbox_server_factory: Callable[..., ServerProcess],
) -> None:
    server = sandbox_server_factory(config={**CONFIG, "transports": {"ws": {"max_frame_bytes": 4096}}})
    ws, other = await RawWs.connect(server.url), await RawWs.connect(server.url)
    try:
        streaming = await started(ws, "s", "echo up; sleep 600")
        kept = await started(other, "s", "echo up; sleep 1; echo kept")
        ok = await ws.call("small", "POST", "/api/execute", {"command": "echo " + "x" * 3000})
        assert ok["status"] == 200
        await ws.send(
            {
                "type": "request",
                "id": "big",
                "method": "POST",
                "path": "/api/execute",
                "body": {"command": "echo " + "x" * 5000},
            }
        )
        assert await ws.close_code() == 1009
        async with Sandbox(server.url, transport="ws") as sb:
            assert await wait_for(lambda: _both_killed(sb, streaming))
            assert await status(sb, kept) == "running"
            streamed, final = await other.answer("s")
            assert final["status"] == 200 and events_of(streamed)[0]["data"] == "kept\n"
            # the Python client: its pending calls fail, and the next call reconnects
            stream = sb.exec_stream("echo up; sleep 600")
            assert isinstance(await stream.__anext__(), StartEvent)
            with pytest.raises(TransportError, match="1009"):
                await sb.files.write("/tmp/ws-too-big.txt", "y" * 5000)
            with pytest.raises(TransportError, match="1009"):
                async for _ in stream:
                    pass
            assert (await sb.exec("echo again")).stdout == "again"
    finally:
        await ws.aclose()
        await other.aclose()


async def test_the_client_refuses_a_message_over_its_limit_and_reconnects(ws_server: ServerProcess) -> None:
    async with Sandbox(ws_server.url, transport="ws", settings=WsSettings(max_frame_bytes=10_000)) as sb:
        await sb.files.write("/tmp/ws-client-limit.txt", "z" * 20_000)  # sending is not limited
        stream = sb.exec_stream("echo up; sleep 600")
        first = await stream.__anext__()
        with pytest.raises(TransportError, match="max_frame_bytes"):
            await sb.files.read("/tmp/ws-client-limit.txt")
        with pytest.raises(TransportError):
            async for _ in stream:
                pass
        assert await wait_for(lambda: _both_killed(sb, first.process_id))  # type: ignore[attr-defined]
        assert (await sb.exec("echo again")).stdout == "again"


async def test_many_streams_of_one_client_end_with_its_socket(ws_server: ServerProcess) -> None:
    sb = Sandbox(ws_server.url, transport="ws")
    await sb.__aenter__()
    streams = [sb.exec_stream(f"echo s{i}; sleep 600") for i in range(5)]
    ids = []
    for stream in streams:
        start = await stream.__anext__()
        ids.append(start.process_id)  # type: ignore[attr-defined]
        assert isinstance(await stream.__anext__(), StdoutEvent)
    await sb.aclose()  # the socket closes with the streams still open
    for stream in streams:
        with pytest.raises(TransportError):
            await stream.__anext__()
    async with Sandbox(ws_server.url, transport="ws") as check:
        assert await wait_for(lambda: _both_killed(check, *ids))
        events = [e async for e in check.exec_stream("echo fine")]
        assert isinstance(events[-1], CompleteEvent)
