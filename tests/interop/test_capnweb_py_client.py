"""Our engine's client (``websocket_session`` / ``http_batch_session``) against the real capnweb
server (Node, capnweb 0.12.0, capnweb_server.mjs), and malformed input both ways.

Results are checked as exact values; where the wire is deterministic in one direction, the frames
our client sent (as the Node server logged them) are compared with the conformance vector.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from capnweb_peer import NodeServer, PyServer, format_frames, parse_frames, start_node_server, vector
from capnweb_peer import node_capnweb_server as node_capnweb_server  # the fixture
from capnweb_peer import py_capnweb_server as py_capnweb_server  # the fixture
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws

from capnweb import (
    INVALID_DATE,
    UNDEFINED,
    ReadableStream,
    RpcError,
    RpcPromise,
    RpcTarget,
    SessionClosed,
    WritableStream,
    http_batch_session,
    websocket_session,
)

TIMEOUT = 20  # seconds for any one awaited thing in these tests


class LocalMain(RpcTarget):
    """Our client's main object: the Node server's pingClient calls it."""

    def ping(self, x: str) -> str:
        return "pong:" + x


class LocalCounter(RpcTarget):
    def __init__(self, start: int) -> None:
        self._value = start

    def increment(self, n: int = 1) -> int:
        self._value += n
        return self._value

    @property
    def value(self) -> int:
        return self._value


class Sink:
    def __init__(self) -> None:
        self.got: list[Any] = []
        self.closed = False
        self.aborted: Any = None

    async def write(self, chunk: Any) -> None:
        self.got.append(chunk)

    async def close(self) -> None:
        self.closed = True

    async def abort(self, reason: Any) -> None:
        self.aborted = reason


@pytest.fixture
def node(request: pytest.FixtureRequest) -> NodeServer:
    """The real capnweb server (the module's ``node_capnweb_server``)."""
    got: NodeServer = request.getfixturevalue("node_capnweb_server")
    return got


@pytest.fixture
def server(request: pytest.FixtureRequest) -> PyServer:
    """Our engine serving TestApi (the module's ``py_capnweb_server``)."""
    got: PyServer = request.getfixturevalue("py_capnweb_server")
    return got


async def within(awaitable: Any, limit_s: float = TIMEOUT) -> Any:
    return await asyncio.wait_for(awaitable, limit_s)


async def conn_of(node: NodeServer, before: int) -> int:
    """The Node connection our session opened (the first after ``before``)."""
    await node.wait_for(lambda frames: any(r["conn"] > before for r in frames))
    return min(int(r["conn"]) for r in node.frames() if r["conn"] > before)


async def closed(node: NodeServer, conn: int) -> list[dict[str, Any]]:
    """Wait until the Node server saw connection ``conn`` close; its frames."""
    await node.wait_for(lambda frames: any(r["conn"] == conn and r["dir"] == "close" for r in frames))
    return node.conn_frames(conn)


def assert_c2s_prefix(frames: list[dict[str, Any]], scenario: str) -> None:
    """What our client sent starts with exactly what capnweb's client sends in the scenario."""
    _, vec = vector(scenario)
    want = parse_frames(vec, direction="c2s")
    got = parse_frames(frames, direction="c2s")
    assert got[: len(want)] == want, f"ours:\n{format_frames(frames)}\nvector:\n{format_frames(vec)}"


# --------------------------------------------------------------------------------------------------
# calls and pipelining


async def test_simple_call(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        assert await within(api.add(1, 2)) == 3
        assert await within(api.add("a", "b")) == "ab"
    conn = await conn_of(node, before)
    frames = await closed(node, conn)
    assert_c2s_prefix(frames, "simple")


async def test_pipelined_property_is_one_round_trip(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        assert await within(api.getUser(1).name) == "user1"
        assert await within(api.getUser(4).tags) == ["tag4", "user"]
        assert await within(api.getUser(4)) == {"id": 4, "name": "user4", "tags": ["tag4", "user"]}
    conn = await conn_of(node, before)
    frames = await closed(node, conn)
    _, vec = vector("pipeline_prop")
    got = parse_frames(frames, direction="c2s")
    assert got[:3] == parse_frames(vec, direction="c2s")[:3], format_frames(frames)
    # the first answer is the property's, not getUser's: nothing else came back before it
    assert parse_frames(frames, direction="s2c")[0] == ["resolve", 2, "user1"], format_frames(frames)


async def test_promise_as_argument(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        assert await within(api.greet(api.getUser(7).name)) == "hello, user7"
    conn = await conn_of(node, before)
    frames = await closed(node, conn)
    _, vec = vector("pipeline_arg")
    assert parse_frames(frames, direction="c2s")[:3] == parse_frames(vec, direction="c2s")[:3], format_frames(frames)


async def test_pipelined_call_on_returned_target(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        assert await within(api.makeCounter(10).increment(1)) == 11
    conn = await conn_of(node, before)
    frames = await closed(node, conn)
    _, vec = vector("pipeline_target")
    assert parse_frames(frames, direction="c2s")[:3] == parse_frames(vec, direction="c2s")[:3], format_frames(frames)


async def test_concurrent_calls_complete_in_completion_order(node: NodeServer) -> None:
    async with websocket_session(node.ws_url) as api:
        order: list[str] = []

        async def track(p: Any) -> Any:
            v = await p
            order.append(v)
            return v

        results = await within(
            asyncio.gather(track(api.sleep(400, "slow")), track(api.sleep(10, "fast")), track(api.sleep(200, "mid")))
        )
        assert order == ["fast", "mid", "slow"]
        assert results == ["slow", "fast", "mid"]


# --------------------------------------------------------------------------------------------------
# callbacks and targets, both ways


async def test_callback_sync_and_async(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        assert await within(api.callMe(lambda x: x * 10, 4)) == {"got": 40}

        async def acb(x: int) -> str:
            await asyncio.sleep(0.01)
            return f"async {x}"

        assert await within(api.callMe(acb, 5)) == {"got": "async 5"}
    conn = await conn_of(node, before)
    frames = await closed(node, conn)
    assert_c2s_prefix(frames, "callback")
    # the server called our export -1 with an empty path, then released it when callMe returned
    s2c = parse_frames(frames, direction="s2c")
    assert ["push", ["pipeline", -1, [], [4]]] in s2c
    assert ["release", -1, 1] in s2c


async def test_server_calls_our_main(node: NodeServer) -> None:
    async with websocket_session(node.ws_url, main=LocalMain()) as api:
        assert await within(api.pingClient("hi")) == "pong:hi"


async def test_target_returned_called_read_disposed(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        counter = await within(api.makeCounter(5))
        with counter:
            assert await within(counter.increment(2)) == 7
            assert await within(counter.value) == 7
            assert await within(api.disposals()) == 0
        assert await within(api.disposals()) == 1
    conn = await conn_of(node, before)
    frames = await closed(node, conn)
    c2s = parse_frames(frames, direction="c2s")
    assert ["push", ["pipeline", -1, ["increment"], [2]]] in c2s
    assert ["push", ["pipeline", -1, ["value"]]] in c2s
    assert c2s.count(["release", -1, 1]) == 1, format_frames(frames)


async def test_dup_keeps_target_alive(node: NodeServer) -> None:
    async with websocket_session(node.ws_url) as api:
        counter = await within(api.makeCounter(1))
        second = counter.dup()
        counter.dispose()
        assert await within(second.increment(1)) == 2
        assert await within(api.disposals()) == 0
        second.dispose()
        assert await within(api.disposals()) == 1


async def test_our_target_as_argument(node: NodeServer) -> None:
    async with websocket_session(node.ws_url) as api:
        local = LocalCounter(3)
        assert await within(api.callTarget(local, 5)) == 8
        assert local.value == 8


# --------------------------------------------------------------------------------------------------
# errors and values


async def test_error_with_props(node: NodeServer) -> None:
    async with websocket_session(node.ws_url) as api:
        with pytest.raises(RpcError) as info:
            await within(api.fail())
        assert (info.value.name, info.value.message, info.value.props) == ("RangeError", "boom", {"code": 42})
        # the session is fine afterwards, and an error reaches pipelined calls too
        assert await within(api.add(1, 1)) == 2
        with pytest.raises(RpcError) as info:
            await within(api.makeCounter(api.fail()).increment(1))
        assert (info.value.name, info.value.message, info.value.props) == ("RangeError", "boom", {"code": 42})


async def test_unknown_method(node: NodeServer) -> None:
    async with websocket_session(node.ws_url) as api:
        with pytest.raises(RpcError) as info:
            await within(api.noSuchMethod(1))
        assert (info.value.name, info.value.message) == ("TypeError", "'noSuchMethod' is not a function.")


SPECIAL_PY = {
    "big": 123,
    "huge": 2**70,
    "neg": -(2**64),
    "d": datetime(1970, 1, 1, tzinfo=UTC),
    "d2": datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
    "b": b"\x01\x02\x03",
    "empty": b"",
    "u": UNDEFINED,
    "inf": math.inf,
    "ninf": -math.inf,
    "nan": math.nan,
    "arr": [1, [2, 3], []],
    "nul": None,
    "err": RpcError("TypeError", "te"),
    "s": "str \u00e9 \U0001f600",
    "f": 1.5,
    "t": True,
    "obj": {"nested": {"x": [1]}},
}


async def test_special_values_round_trip(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        got = await within(api.echo(SPECIAL_PY))
        assert set(got) == set(SPECIAL_PY)
        for key in ("big", "huge", "neg", "d", "d2", "b", "empty", "inf", "ninf", "arr", "nul", "s", "f", "t", "obj"):
            assert got[key] == SPECIAL_PY[key], key
            assert isinstance(got[key], type(SPECIAL_PY[key])), key
        assert got["u"] is UNDEFINED
        assert math.isnan(got["nan"])
        assert isinstance(got["err"], RpcError)
        assert (got["err"].name, got["err"].message) == ("TypeError", "te")
        assert await within(api.echo(INVALID_DATE)) is INVALID_DATE
        assert await within(api.echo((1, "two"))) == [1, "two"]
    conn = await conn_of(node, before)
    frames = await closed(node, conn)
    # the wire form of what we sent: as capnweb sends it (except "big", a number for us)
    _, vec = vector("special")
    theirs = parse_frames(vec, direction="c2s")[0][1][3][0]
    ours = parse_frames(frames, direction="c2s")[0]
    assert ours[0] == "push" and ours[1][:3] == ["pipeline", 0, ["echo"]], ours
    sent = ours[1][3][0]
    assert sent["big"] == 123
    for key in theirs:
        if key in ("big", "err"):
            continue
        assert sent[key] == theirs[key], (key, sent[key], theirs[key])
    assert sent["err"][:3] == ["error", "TypeError", "te"] and sent["err"][3:] in ([], [None], [None, {}]), sent["err"]


# --------------------------------------------------------------------------------------------------
# map


async def test_map(node: NodeServer) -> None:
    if not hasattr(RpcPromise, "map"):
        pytest.skip("the engine records no .map()")
    async with websocket_session(node.ws_url) as api:
        assert await within(api.listUsers().map(lambda u: u.name)) == ["ann", "bob"]
        assert await within(api.listUsers().map(lambda u: api.greet(u.name))) == ["hello, ann", "hello, bob"]


# --------------------------------------------------------------------------------------------------
# streams


def _is_write(msg: Any) -> bool:
    return bool(msg[0] == "stream" and msg[1][0] == "pipeline" and msg[1][2] == ["write"])


async def test_readable_returned(node: NodeServer) -> None:
    async with websocket_session(node.ws_url) as api:
        rs = await within(api.streamBytes(3))
        assert isinstance(rs, ReadableStream)
        chunks = await within(_collect(rs))
        assert chunks == [b"\x00\x01\x02", b"\x01\x02\x03", b"\x02\x03\x04"]
        assert await within(api.add(1, 1)) == 2


async def _collect(rs: Any) -> list[Any]:
    return [chunk async for chunk in rs]


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_readable_argument(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        rs = ReadableStream(_chunks(b"\xaa\x00", b"\xaa\x01", b"\x01\x02\x03"))
        assert await within(api.upload(rs)) == {"total": 7, "chunks": 3}
        conn = await conn_of(node, before)
        # once the close is acked, the sender releases the pipe (the session is still open)
        await node.wait_for(lambda frames: ["release", 1, 1] in parse_frames(frames, conn, "c2s"))
    frames = await closed(node, conn)
    c2s = parse_frames(frames, direction="c2s")
    assert c2s[0] == ["pipe"], format_frames(frames)
    assert c2s[1] == ["push", ["pipeline", 0, ["upload"], [["readable", 1]]]], format_frames(frames)
    writes = [m for m in c2s if _is_write(m)]
    assert [w[1][3] for w in writes] == [[["bytes", "qgA"]], [["bytes", "qgE"]], [["bytes", "AQID"]]]
    assert ["stream", ["pipeline", 1, ["close"], []]] in c2s


async def test_writable_argument(node: NodeServer) -> None:
    async with websocket_session(node.ws_url) as api:
        sink = Sink()
        assert await within(api.writeTo(WritableStream.local(sink))) == "done"
        assert sink.got == ["x1", b"\x09\x09"]
        assert sink.closed
        assert sink.aborted is None


async def test_reader_cancel_then_calls_continue(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        rs = await within(api.streamBytes(100))
        iterator = rs.__aiter__()
        assert await within(iterator.__anext__()) == b"\x00\x01\x02"
        await within(rs.aclose())
        assert await within(api.add(2, 2)) == 4
        conn = await conn_of(node, before)

        # every write the server sent is answered (acked or rejected), and some were rejected
        def answered(frames: list[dict[str, Any]]) -> bool:
            mine = [r for r in frames if r["conn"] == conn]
            streams = [m for m in parse_frames(mine, direction="s2c") if m[0] == "stream"]
            ids = set(range(2, 2 + len(streams)))  # the pipe is the server's import 1
            replies = {m[1] for m in parse_frames(mine, direction="c2s") if m[0] in ("resolve", "reject")}
            return bool(streams) and ids <= replies

        await node.wait_for(answered)
        assert await within(api.add(3, 3)) == 6
    frames = await closed(node, conn)
    assert any(m[0] == "reject" for m in parse_frames(frames, direction="c2s")), format_frames(frames)


async def test_our_receiver_backpressures_the_sender(node: NodeServer) -> None:
    """We read nothing for 300 ms: the real capnweb sender must have stopped at its window (it
    only sends on our acks), so we must not ack chunks nobody has read."""
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        rs = await within(api.bigStream(10, 65536))
        conn = await conn_of(node, before)
        await asyncio.sleep(0.3)
        frames = node.conn_frames(conn)
        early = [m for m in parse_frames(frames, direction="s2c") if _is_write(m)]
        assert 1 <= len(early) <= 5, f"{len(early)} writes sent while we read nothing\n{format_frames(frames)}"
        n = 0
        async for chunk in rs:
            assert chunk == bytes([n & 255]) * 65536, n
            n += 1
            await asyncio.sleep(0.01)
        assert n == 10


async def test_our_sender_respects_the_window(node: NodeServer) -> None:
    """The Node server reads nothing for 300 ms: our sender must stop at its window."""
    before = node.last_conn()
    produced = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal produced
        for i in range(10):
            produced += 1
            yield bytes([i]) * 65536

    async with websocket_session(node.ws_url) as api:
        assert await within(api.slowUpload(ReadableStream(source()), 300, 10)) == {"total": 655360, "chunks": 10}
    conn = await conn_of(node, before)
    frames = await closed(node, conn)
    sent_before_ack = 0
    for rec in frames:
        if rec["dir"] == "s2c" and json.loads(rec["frame"])[0] == "resolve":
            break
        if rec["dir"] == "c2s" and _is_write(json.loads(rec["frame"])):
            sent_before_ack += 1
    assert 1 <= sent_before_ack <= 5, f"{sent_before_ack} writes before the first ack\n{format_frames(frames)}"


# --------------------------------------------------------------------------------------------------
# disposal and the connection's end


async def test_dispose_main_shuts_the_session(node: NodeServer) -> None:
    before = node.last_conn()
    async with websocket_session(node.ws_url) as api:
        assert await within(api.add(1, 2)) == 3
        api.dispose()
        conn = await conn_of(node, before)
        frames = await closed(node, conn)
    close = next(r for r in frames if r["dir"] == "close")
    assert close["code"] == 3000, format_frames(frames)  # as capnweb does (no abort message first)
    assert not [m for m in parse_frames(frames, direction="c2s") if m[0] == "abort"], format_frames(frames)


async def test_dropped_connection_fails_pending_calls(tmp_path: Path) -> None:
    """A server of our own that dies mid-call: the pending call raises SessionClosed at once."""
    with start_node_server(tmp_path) as server:
        async with websocket_session(server.ws_url) as api:
            assert await within(api.add(1, 1)) == 2
            pending = asyncio.ensure_future(api.sleep(30_000, "never"))
            await asyncio.sleep(0.1)
            server.proc.kill()
            with pytest.raises(SessionClosed):
                await within(pending, 10)


# --------------------------------------------------------------------------------------------------
# HTTP batch


async def test_http_batch(node: NodeServer) -> None:
    before = node.last_conn()
    async with http_batch_session(node.http_url) as api:
        a, b, tags = await within(asyncio.gather(api.add(2, 3), api.getUser(2).name, api.getUser(3).tags))
    assert (a, b, tags) == (5, "user2", ["tag3", "user"])
    await node.wait_for(lambda frames: any(r["conn"] > before and r["dir"] == "s2c" for r in frames))
    conns = {r["conn"] for r in node.frames() if r["conn"] > before}
    assert len(conns) == 1, "one POST"


async def test_http_batch_pipelining_and_errors(node: NodeServer) -> None:
    async with http_batch_session(node.http_url) as api:
        counter = api.makeCounter(10)
        results = await within(
            asyncio.gather(counter.increment(1), api.fail(), api.greet(api.getUser(7).name), return_exceptions=True)
        )
    assert results[0] == 11
    assert isinstance(results[1], RpcError)
    assert (results[1].name, results[1].message, results[1].props) == ("RangeError", "boom", {"code": 42})
    assert results[2] == "hello, user7"


# --------------------------------------------------------------------------------------------------
# malformed messages


async def test_node_aborts_on_a_bogus_message(node: NodeServer) -> None:
    """The reference's reaction, for comparison with ours below: abort, then close."""
    ws: AsyncWebSocketSession
    async with httpx.AsyncClient() as client, aconnect_ws(node.ws_url, client) as ws:
        await ws.send_text('["bogus"]')
        first = json.loads(await within(ws.receive_text(), 5))
        assert first[0] == "abort"
        assert first[1][0] == "error"
        with pytest.raises(WebSocketDisconnect):
            await within(ws.receive_text(), 5)


@pytest.mark.parametrize("garbage", ['["bogus"]', "not json", '{"a": 1}', '["push"]', '["release", 99, 1]'])
async def test_our_server_aborts_on_garbage_others_unaffected(server: PyServer, garbage: str) -> None:
    async with websocket_session(server.ws_url) as good:
        assert await within(good.add(1, 2)) == 3
        ws: AsyncWebSocketSession
        async with httpx.AsyncClient() as client, aconnect_ws(server.ws_url, client) as ws:
            await ws.send_text(garbage)
            first = json.loads(await within(ws.receive_text(), 5))
            assert first[0] == "abort", first
            with pytest.raises(WebSocketDisconnect):
                await within(ws.receive_text(), 5)
        assert await within(good.add(2, 3)) == 5
    async with websocket_session(server.ws_url) as fresh:
        assert await within(fresh.getUser(2).name) == "user2"
