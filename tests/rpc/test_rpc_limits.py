"""What one rpc peer can make the server hold, over a real WebSocket: the objects and promises it
exports to the server, the results its messages make it wait for, and the chunks written to
streams nobody reads (per session, and for the whole server)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers_rpc import RawPeer
from websockets.exceptions import ConnectionClosed

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG
from sandbox_core.testing.procs import reset_peak, status_kib

MiB = 1024 * 1024
CHUNK = ["bytes", base64.b64encode(b"\x07" * MiB).decode()]


@pytest.fixture(scope="module")
def rpc_server() -> Iterator[ServerProcess]:
    """A server of this module's own (its memory is measured), with the default rpc settings."""
    server = ServerProcess(config=TEST_CONFIG).start()
    try:
        yield server
    finally:
        server.stop()


async def write_pipe(peer: RawPeer, mib: int) -> tuple[int, list[int]]:
    """A pipe nobody claims, and ``mib`` writes of 1 MiB to it: (its id, the writes' ids)."""
    pipe = await peer.send(["pipe"])
    return pipe, [await peer.send(["stream", ["pipeline", pipe, ["write"], [CHUNK]]]) for _ in range(mib)]


async def test_unread_pipes_hold_no_more_than_the_session_budget(rpc_server: ServerProcess) -> None:
    """Ten pipes, 22 MiB written to each and never read: the session holds at most its budget
    (64 MiB); each write past it fails its pipe, the session goes on."""
    async with RawPeer.connect(rpc_server.ws_url + "/rpc") as peer:
        assert (await peer.ping())[2] == "healthy"
        pid = rpc_server.pid
        if not reset_peak(pid):
            pytest.skip("/proc/PID/clear_refs is not writable here: no way to measure the peak")
        idle = status_kib(pid, "VmRSS")
        writes: list[int] = []
        for _ in range(10):
            writes += (await write_pipe(peer, 22))[1]
        assert (await peer.ping())[2] == "healthy"  # the session goes on
        growth = (status_kib(pid, "VmHWM") - idle) * 1024
    refused = {i: m for i, m in peer.rejected().items() if i in writes}
    assert refused, "no write was refused"
    assert set(refused.values()) == {
        "The stream failed: this session's streams would hold more than 67108864 bytes written and not yet read"
    }
    assert growth <= 128 * MiB, f"server peak {growth / MiB:.0f} MiB over idle for 220 MiB written and never read"


async def test_the_server_budget_is_shared_by_its_sessions(
    sandbox_server_factory: Callable[..., ServerProcess],
) -> None:
    rpc = {"max_session_stream_buffer_bytes": 4 * MiB, "max_server_stream_buffer_bytes": 6 * MiB}
    server = sandbox_server_factory(config={**TEST_CONFIG, "transports": {"rpc": rpc}})
    url = server.ws_url + "/rpc"
    async with RawPeer.connect(url) as a, RawPeer.connect(url) as b:
        await write_pipe(a, 4)  # a's session budget, all of it
        assert (await a.ping())[2] == "healthy" and a.rejected() == {}
        _, b_writes = await write_pipe(b, 3)  # 7 MiB held by the server: the third fails b's pipe
        assert (await b.ping())[2] == "healthy"
        assert b.rejected() == dict.fromkeys(  # and with it the writes it held
            b_writes,
            "The stream failed: all the server's streams (max_server_stream_buffer_bytes) "
            "would hold more than 6291456 bytes written and not yet read",
        )
        await a.ws.close()  # a's pipe goes with its session: the server's budget comes back
        for _ in range(100):
            _, again = await write_pipe(b, 3)
            await b.ping()
            if not set(again) & set(b.rejected()):
                break
        else:
            raise AssertionError("the budget a's session held never came back")


@pytest.mark.parametrize(
    ("items", "limit"),
    [
        ([["export", -k] for k in range(1, 100_002)], "hold 100000 of its objects"),  # stubs: max_imports
        ([["pipeline", 0, ["utils"]]] * 10_001, "wait for 10000 results"),  # pipelined gets: max_pending
    ],
    ids=["imports", "pending"],
)
async def test_a_peer_past_a_table_limit_is_aborted(rpc_server: ServerProcess, items: list[Any], limit: str) -> None:
    async with RawPeer.connect(rpc_server.ws_url + "/rpc") as peer:
        await peer.send(["push", ["pipeline", 0, ["utils", "ping"], [[items]]]])
        answer = await peer.ping()
        assert answer[0] == "abort" and limit in answer[1][2]
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                await peer.ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3000 and limit in closed.value.rcvd.reason
    async with RawPeer.connect(rpc_server.ws_url + "/rpc") as other:  # the server goes on
        assert (await other.ping())[2] == "healthy"
