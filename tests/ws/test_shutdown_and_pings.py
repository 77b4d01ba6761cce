"""Shutdown closes every socket with 1001 and fails every pending call at once; the server pings
open sockets; a long silent stream or an idle socket is never cut off; a closed socket does not
hold the server's shutdown up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from helpers_ws import RawWs, wait_for
from wsproto.events import Ping

from sandbox_core import Sandbox
from sandbox_core.contract.models import CompleteEvent, StdoutEvent
from sandbox_core.errors import TransportError
from sandbox_core.testing import ServerProcess

CONFIG = {"services": {"sessions": {"kill_grace_ms": 500}}}


async def test_shutdown_closes_sockets_with_1001_and_fails_pending_calls(
    sandbox_server_factory: Callable[..., ServerProcess],
) -> None:
    server = sandbox_server_factory(config={**CONFIG, "server": {"shutdown_timeout": 30.0}})
    raw = await RawWs.connect(server.url)
    await raw.request("s", "POST", "/api/execute/stream", {"command": "echo up; sleep 600"})
    await raw.frame()
    async with Sandbox(server.url, transport="ws") as sb:
        stream = sb.exec_stream("echo up; sleep 600")
        await stream.__anext__()
        call = asyncio.ensure_future(sb.exec("sleep 600", session_id="ws-shutdown"))
        await asyncio.sleep(0.3)
        assert not call.done()
        stopping = threading.Thread(target=server.stop)
        t0 = time.monotonic()
        stopping.start()
        assert await raw.close_code() == 1001
        with pytest.raises(TransportError, match="1001"):
            await call
        with pytest.raises(TransportError, match="1001"):
            async for _ in stream:
                pass
        failed_after = time.monotonic() - t0
        await asyncio.to_thread(stopping.join, 30)
        stopped_after = time.monotonic() - t0
    await raw.aclose()
    # well within the 30 s the server would give open connections
    assert failed_after < 10 and stopped_after < 10, (failed_after, stopped_after)
    log = "\n".join(server.log)
    assert server.proc is not None and server.proc.returncode == 0
    assert "Traceback" not in log and "server.stopped" in log


async def test_pings_on_idle_sockets_and_no_cut_off(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory(
        config={**CONFIG, "server": {"keep_alive_timeout": 0.5}, "transports": {"ws": {"ping_interval_s": 0.2}}}
    )
    raw = await RawWs.connect(server.url)
    try:
        pings = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # idle three times the keep-alive timeout
            try:
                event = await raw.recv(max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                break
            pings += isinstance(event, Ping)
        assert pings >= 4, pings
        assert (await raw.call("p", "GET", "/api/ping"))["status"] == 200  # still open
    finally:
        await raw.aclose()
    async with Sandbox(server.url, transport="ws") as sb:  # a stream silent for longer than the keep-alive
        events = [e async for e in sb.exec_stream("sleep 2; echo done")]
        assert [e.data for e in events if isinstance(e, StdoutEvent)] == ["done\n"]
        assert isinstance(events[-1], CompleteEvent) and events[-1].exit_code == 0


async def test_a_closed_socket_does_not_hold_up_shutdown(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    """Hypercorn's ping loop slept a whole interval before it saw that its socket had closed, and
    shutdown waited for it: with the default 20 s interval, every stop took the whole graceful timeout."""
    server = sandbox_server_factory(config={**CONFIG, "server": {"shutdown_timeout": 30.0}})
    async with Sandbox(server.url, transport="ws") as sb:
        assert (await sb.exec("echo hi")).stdout == "hi"
    raw = await RawWs.connect(server.url)
    await raw.aclose()
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    assert await asyncio.to_thread(server.stop) == 0
    assert time.monotonic() - t0 < 10  # not the 29 s of graceful timeout


async def test_idle_disconnect_and_reconnect(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    from sandbox_transport_ws.settings import WsSettings

    server = sandbox_server_factory(config={**CONFIG, "server": {"log_level": "debug"}})

    def count(event: str) -> int:
        return sum(f'"{event}"' in line for line in server.log)

    async with Sandbox(server.url, transport="ws", settings=WsSettings(idle_disconnect_s=0.3)) as sb:
        assert (await sb.exec("echo one")).stdout == "one"
        assert (await sb.exec("echo two")).stdout == "two"  # at once: the same socket
        assert await wait_for(lambda: count("ws.closed") == 1)  # idle: closed
        assert count("ws.connected") == 1
        async for _ in sb.exec_stream("sleep 0.6; echo slow"):  # an open stream is not idle
            pass
        assert (await sb.exec("echo three")).stdout == "three"
        assert count("ws.connected") == 2 and count("ws.closed") == 1
