"""A request whose caller goes away ends what it runs: a ``cancel`` frame ends a stream (its
command is killed, and its process record says so) and a unary call (a foreground exec's
command ends and its session is free); the Python client sends ``cancel`` when a stream is
closed early, when a call's task is cancelled and when a timeout passes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from helpers_ws import RawWs, events_of, wait_for

from sandbox_core import Sandbox
from sandbox_core.contract.models import StartEvent, StdoutEvent
from sandbox_core.errors import TransportError
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import Proc, running


async def record_status(sb: Sandbox, process_id: str) -> str:
    record: Any = await sb.call("processes", "get", id=process_id)
    return str(record["process"]["status"])


async def pid_in(sb: Sandbox, path: str) -> Proc:
    """The pid a command wrote to ``path`` (``sh -c 'echo $$ > path; exec sleep ...'``)."""

    async def read() -> str:
        return (await sb.exec(f"cat {path} 2>/dev/null", session_id="__DISABLE_SESSION__")).stdout.strip()

    text = await wait_for(read, timeout_s=10)
    assert text, f"no pid in {path}"
    return Proc.of(int(text))


async def ended(proc: Proc) -> bool:
    """``proc`` ends within 10 s (polled on the event loop: the client's cancel frame goes out)."""
    return bool(await wait_for(lambda: not proc.alive(), timeout_s=10))


async def test_cancel_frame_ends_the_stream_and_its_command(raw: RawWs, ws_server: ServerProcess) -> None:
    await raw.request("s", "POST", "/api/execute/stream", {"command": "echo started; sleep 600"})
    frames = [await raw.frame(), await raw.frame()]
    start, stdout = events_of(frames)
    assert (start["type"], stdout["data"]) == ("start", "started\n")
    await raw.send({"type": "cancel", "id": "s"})
    async with Sandbox(ws_server.url, transport="ws") as sb:
        assert await wait_for(lambda: _status_is(sb, start["processId"], "killed"))
    # nothing more for that id, and the connection carries on
    assert (await raw.call("p", "GET", "/api/ping"))["status"] == 200
    assert all(frame.get("id") != "s" or frame["type"] == "stream" for frame in raw.other)


async def _status_is(sb: Sandbox, process_id: str, status: str) -> bool:
    return await record_status(sb, process_id) == status


async def test_closing_a_stream_early_ends_its_command(sb: Sandbox) -> None:
    stream = sb.exec_stream("echo started; sleep 600")
    start = await stream.__anext__()
    assert isinstance(start, StartEvent) and start.process_id
    assert isinstance(await stream.__anext__(), StdoutEvent)
    await stream.aclose()
    assert await wait_for(lambda: _status_is(sb, start.process_id or "", "killed"))


async def test_cancel_frame_ends_a_foreground_exec(raw: RawWs, ws_server: ServerProcess) -> None:
    sid, path = f"wsc-{uuid.uuid4().hex[:8]}", f"/tmp/wsc-pid-{uuid.uuid4().hex}"
    await raw.request(
        "x", "POST", "/api/execute", {"command": f"sh -c 'echo $$ > {path}; exec sleep 600'", "sessionId": sid}
    )
    async with Sandbox(ws_server.url, transport="ws") as sb:
        sleeper = await pid_in(sb, path)
        await raw.send({"type": "cancel", "id": "x"})
        assert await ended(sleeper)
        assert (await sb.exec("echo free", session_id=sid)).stdout == "free"  # the session is usable at once
    assert (await raw.call("p", "GET", "/api/ping"))["status"] == 200


async def test_a_cancelled_call_ends_its_command(sb: Sandbox) -> None:
    sid, path = f"wsc-{uuid.uuid4().hex[:8]}", f"/tmp/wsc-pid-{uuid.uuid4().hex}"
    task = asyncio.ensure_future(sb.exec(f"sh -c 'echo $$ > {path}; exec sleep 600'", session_id=sid))
    sleeper = await pid_in(sb, path)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ended(sleeper)
    assert (await sb.exec("echo free", session_id=sid)).stdout == "free"


async def test_a_timed_out_call_ends_its_command(ws_server: ServerProcess) -> None:
    sid, path = f"wsc-{uuid.uuid4().hex[:8]}", f"/tmp/wsc-pid-{uuid.uuid4().hex}"
    async with Sandbox(ws_server.url, transport="ws", timeout=1.0) as sb:
        with pytest.raises(TransportError, match=r"Request timeout after 1\.0 s: POST /api/execute"):
            await sb.exec(f"sh -c 'echo $$ > {path}; exec sleep 600'", session_id=sid)
        # it was started before the time ran out, and has been ended since (or is being ended)
        pid = int((await sb.exec(f"cat {path}", session_id="__DISABLE_SESSION__")).stdout)
        assert await wait_for(lambda: not running(pid), timeout_s=10)
        assert (await sb.exec("echo free", session_id=sid)).stdout == "free"


async def test_a_silent_stream_fails_after_its_idle_timeout_and_ends(ws_server: ServerProcess) -> None:
    from sandbox_transport_ws.settings import WsSettings

    async with Sandbox(ws_server.url, transport="ws", settings=WsSettings(stream_idle_timeout_s=0.5)) as sb:
        events: list[object] = []
        with pytest.raises(TransportError, match=r"Stream idle timeout after 0\.5 s"):
            async for event in sb.exec_stream("echo started; sleep 600"):
                events.append(event)
        start = events[0]
        assert isinstance(start, StartEvent) and isinstance(events[1], StdoutEvent)
        assert await wait_for(lambda: _status_is(sb, start.process_id or "", "killed"))
        # a stream whose events keep coming is never cut off by it
        ticks = [e async for e in sb.exec_stream("for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done")]
        assert "".join(e.data for e in ticks if isinstance(e, StdoutEvent)) == "1\n2\n3\n4\n5\n6\n"
