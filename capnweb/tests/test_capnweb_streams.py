"""Streams over the engine: pipes both ways, writables, acknowledgement on consumption (the
backpressure), the flow-control window, cancel, abort and the end of a session."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from capnweb_pair import Pair, Raw

from capnweb import Limits, ReadableStream, RpcError, RpcTarget, SessionClosed, WritableStream

CHUNK = 64 * 1024


class Source:
    """An endless source of chunks that records how far it got and whether it was closed."""

    def __init__(self, size: int = CHUNK, count: int | None = None, fail_at: int | None = None) -> None:
        self.size, self.count, self.fail_at = size, count, fail_at
        self.produced = 0
        self.closed = asyncio.Event()

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            while self.count is None or self.produced < self.count:
                if self.fail_at is not None and self.produced == self.fail_at:
                    raise RuntimeError("the source broke")
                self.produced += 1
                yield bytes([self.produced % 256]) * self.size
        finally:
            self.closed.set()


class Api(RpcTarget):
    def __init__(self) -> None:
        self.source = Source()

    def streamBytes(self, n: int) -> ReadableStream:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(n):
                yield bytes([i, i + 1, i + 2])

        return ReadableStream(gen())

    def endless(self) -> ReadableStream:
        return ReadableStream(self.source())

    def broken(self) -> ReadableStream:
        self.source = Source(size=10, fail_at=2)
        return ReadableStream(self.source())

    async def upload(self, stream: ReadableStream) -> dict[str, int]:
        total = chunks = 0
        async for chunk in stream:
            total += len(chunk)
            chunks += 1
        return {"total": total, "chunks": chunks}

    async def writeTo(self, writable: WritableStream) -> str:
        await writable.write("x1")
        await writable.write(b"\t\t")
        await writable.close()
        return "done"


@pytest.fixture
async def pair() -> Pair:
    return Pair(None, Api())


def server_api(pair: Pair) -> Api:
    api = pair.server._exports[0].future.result()
    assert isinstance(api, Api)
    return api


async def test_a_returned_stream_arrives_whole_with_the_reference_frames(pair: Pair) -> None:
    stream = await pair.api.streamBytes(3)
    assert [chunk async for chunk in stream] == [b"\x00\x01\x02", b"\x01\x02\x03", b"\x02\x03\x04"]
    await pair.settle()
    s2c = pair.frames("s2c")
    first_write = ["stream", ["pipeline", 1, ["write"], [["bytes", "AAEC"]]]]
    assert s2c[:3] == [["pipe"], ["resolve", 1, ["readable", 1]], first_write]
    assert ["stream", ["pipeline", 1, ["close"], []]] in s2c
    assert s2c[-1] == ["release", 1, 1]
    assert ["resolve", 2, ["undefined"]] in pair.frames("c2s")
    assert pair.client.stats() == {"imports": 1, "exports": 1, "pipes": 0}
    assert pair.server.stats() == {"imports": 1, "exports": 1, "pipes": 0}


async def test_a_stream_argument_and_a_writable_argument(pair: Pair) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"\xaa\x00"
        yield b"\xaa\x01"

    assert await pair.api.upload(ReadableStream(chunks())) == {"total": 4, "chunks": 2}
    got: list[Any] = []

    class Sink:
        async def write(self, chunk: Any) -> None:
            got.append(chunk)

        async def close(self) -> None:
            got.append("closed")

        async def abort(self, reason: Any) -> None:
            got.append(("aborted", reason))

    assert await pair.api.writeTo(WritableStream.local(Sink())) == "done"
    await pair.settle()
    assert got == ["x1", b"\t\t", "closed"]


async def test_a_reader_that_stops_reading_stops_the_source(pair: Pair) -> None:
    api = server_api(pair)
    stream = await pair.api.endless()
    await asyncio.sleep(0.3)
    stalled = api.source.produced
    assert stalled <= 256 * 1024 // CHUNK + 2  # the initial window, not more
    await asyncio.sleep(0.2)
    assert api.source.produced == stalled
    for _ in range(20):
        await anext(stream)
    await asyncio.sleep(0.1)
    assert api.source.produced > stalled
    await stream.aclose()
    await asyncio.wait_for(api.source.closed.wait(), 2)  # its next write was refused: it stopped


async def test_cancel_rejects_writes_with_the_reason_and_the_session_goes_on(pair: Pair) -> None:
    stream = await pair.api.streamBytes(100)
    assert await anext(stream) == b"\x00\x01\x02"
    await stream.aclose("enough")
    await pair.settle()
    rejects = [f for f in pair.frames("c2s") if f[0] == "reject"]
    assert rejects and all(f[2] == "enough" for f in rejects)
    assert await pair.api.streamBytes(1) is not None


async def test_a_source_that_fails_fails_the_reader(pair: Pair) -> None:
    stream = await pair.api.broken()
    with pytest.raises(RpcError, match="the source broke"):
        async for _ in stream:
            pass


async def test_the_end_of_the_session_fails_the_reader_and_closes_the_source(pair: Pair) -> None:
    api = server_api(pair)
    stream = await pair.api.endless()
    await anext(stream)
    pair.client.close("test")
    with pytest.raises(SessionClosed):
        for _ in range(100):
            await anext(stream)
    pair.server.close("test")
    await asyncio.wait_for(api.source.closed.wait(), 2)


async def test_a_sender_that_ignores_flow_control_aborts_its_session() -> None:
    pair = Pair(None, Api(), limits=Limits(max_stream_buffer=100_000))
    pair.server.receive('["pipe"]')
    pair.server.receive('["push", ["pipeline", 0, ["upload"], [["readable", 1]]]]')
    for _ in range(50):  # nobody consumes fast enough: ~3 MB unacknowledged
        pair.server.receive('["stream", ["pipeline", 1, ["write"], [["bytes", "' + "A" * 80_000 + '"]]]]')
        if pair.server.closed:
            break
    await pair.settle()
    assert pair.server.closed is not None
    assert "limit" in str(pair.server.closed)


async def test_a_remote_writable_keeps_its_window(pair: Pair) -> None:
    written: list[int] = []
    gate = asyncio.Event()

    class SlowSink:
        async def write(self, chunk: Any) -> None:
            await gate.wait()
            written.append(len(chunk))

        async def close(self) -> None:
            pass

        async def abort(self, reason: Any) -> None:
            pass

    class Writer(RpcTarget):
        def __init__(self) -> None:
            self.sent = 0

        async def fill(self, writable: WritableStream) -> int:
            for _ in range(100):
                await writable.write(b"x" * CHUNK)
                self.sent += 1
            await writable.close()
            return self.sent

    writer = Writer()
    pair2 = Pair(None, writer)
    result = pair2.api.fill(WritableStream.local(SlowSink())).as_future()
    await asyncio.sleep(0.2)
    assert writer.sent <= 256 * 1024 // CHUNK + 1
    gate.set()
    assert await asyncio.wait_for(result, 5) == 100
    assert len(written) == 100


async def test_a_heartbeat_lets_a_silent_source_learn_of_a_cancel() -> None:
    closed = asyncio.Event()
    started = asyncio.Event()

    async def silent() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            started.set()
            await asyncio.sleep(60)  # a command that prints nothing more
            yield b"never"
        finally:
            closed.set()

    class Quiet(RpcTarget):
        def quiet(self, heartbeat: float | None) -> ReadableStream:
            return ReadableStream(silent(), heartbeat=heartbeat)

    pair = Pair(None, Quiet())
    stream = await pair.api.quiet(0.05)
    assert await anext(stream) == b"first"
    await asyncio.wait_for(started.wait(), 1)
    assert await anext(stream) == b""  # a heartbeat: an empty chunk
    await stream.aclose()
    await asyncio.wait_for(closed.wait(), 2)  # the next heartbeat was refused: the source closed


def write(pipe: int, size: int) -> list[Any]:
    """A peer's write of ``size`` bytes to its import ``pipe``."""
    chunk = base64.b64encode(b"A" * size).decode()
    return ["stream", ["pipeline", pipe, ["write"], [["bytes", chunk]]]]


def rejected(raw: Raw) -> dict[int, str]:
    """The ids the session rejected, with each error's name and message."""
    return {f[1]: f"{f[2][1]}: {f[2][2]}" for f in raw.frames("reject")}


async def test_the_streams_of_a_session_share_a_budget_past_which_a_write_fails_its_stream() -> None:
    raw = Raw(Api(), Limits(max_stream_buffer=100_000, max_session_stream_buffer=150_000))
    for _ in range(3):
        raw.receive(["pipe"])  # exports 1, 2, 3: never claimed
    for pipe in (1, 2, 3):
        raw.receive(write(pipe, 60_000))  # exports 4, 5, 6: the third would hold 180,000
    await raw.settle()
    assert rejected(raw) == {
        6: "RangeError: The stream failed: this session's streams would hold more than 150000 bytes "
        "written and not yet read"
    }
    assert raw.session.closed is None and raw.session.stream_buffers.used == 120_000
    raw.receive(write(3, 10))  # export 7: that stream has failed
    await raw.settle()
    assert set(rejected(raw)) == {6, 7} and raw.session.stream_buffers.used == 120_000
    raw.receive(["push", ["pipeline", 0, ["upload"], [["readable", 1]]]])  # export 8 reads pipe 1
    raw.receive(["stream", ["pipeline", 1, ["close"], []]])
    raw.receive(["pull", 8])
    await raw.settle()
    assert ["resolve", 8, {"total": 60_000, "chunks": 1}] in raw.sent
    assert raw.session.stream_buffers.used == 60_000  # what was read is no longer held
    raw.receive(["release", 2, 1])  # pipe 2 given up unclosed: it fails, its chunk is dropped
    await raw.settle()
    assert raw.session.stream_buffers.used == 0


async def test_sessions_sharing_a_budget_fail_the_stream_that_would_break_it() -> None:
    from capnweb import Budget

    shared = Budget(100_000, label="the test's streams")
    a, b = (Raw(Api(), Limits(shared_stream_buffer=shared)) for _ in range(2))
    a.receive(["pipe"])
    a.receive(write(1, 80_000))
    b.receive(["pipe"])
    b.receive(write(1, 30_000))  # b's export 2
    await b.settle()
    assert list(rejected(b)) == [2] and "the test's streams would hold more than 100000 bytes" in rejected(b)[2]
    assert rejected(a) == {} and shared.used == 80_000
    a.session.close("gone")  # a's pipe fails: its bytes come back
    await a.settle()
    assert shared.used == 0
    b.receive(["pipe"])  # b's export 3
    b.receive(write(3, 30_000))
    await b.settle()
    assert list(rejected(b)) == [2] and shared.used == 30_000


async def test_a_pipe_released_without_being_closed_fails_its_reader() -> None:
    raw = Raw(Api(), Limits())
    raw.receive(["pipe"])
    raw.receive(["push", ["pipeline", 0, ["upload"], [["readable", 1]]]])  # export 2
    raw.receive(["pull", 2])
    raw.receive(write(1, 10))
    await raw.settle()
    raw.receive(["release", 1, 1])  # the writer is gone: the reader must not wait forever
    await raw.settle()
    assert rejected(raw) == {2: "Error: The stream was released without being closed"}


@pytest.mark.parametrize(
    "chunk",
    [[["x" * 10] * 5_000], "\u20ac" * 60_000],  # 5,000 strings in an array; 60,000 two-byte characters
    ids=["array", "wide-string"],
)
async def test_a_chunk_counts_by_the_memory_it_takes(chunk: Any) -> None:
    raw = Raw(Api(), Limits(max_stream_buffer=100_000))
    raw.receive(["pipe"])
    raw.receive(["stream", ["pipeline", 1, ["write"], [chunk]]])
    await raw.settle()
    assert raw.session.closed is not None and "limit" in str(raw.session.closed)


async def test_writes_waiting_for_a_local_sink_count_in_the_budget() -> None:
    class Blocked:
        def __init__(self) -> None:
            self.aborted: list[Any] = []

        async def write(self, chunk: Any) -> None:
            await asyncio.Event().wait()  # a sink that never takes anything

        async def close(self) -> None:
            pass

        async def abort(self, reason: Any) -> None:
            self.aborted.append(reason)

    sink = Blocked()

    class Holder(RpcTarget):
        def sink(self) -> WritableStream:
            return WritableStream.local(sink)

    raw = Raw(Holder(), Limits(max_session_stream_buffer=150_000))
    raw.receive(["push", ["pipeline", 0, ["sink"], []]])
    raw.receive(["pull", 1])
    await raw.settle()
    assert ["resolve", 1, ["writable", -1]] in raw.sent
    for _ in range(3):  # exports 2, 3, 4: one in the sink, the others waiting their turn
        raw.receive(write(-1, 60_000))
    await raw.settle()
    assert list(rejected(raw)) == [4] and "this session's streams would hold more than 150000" in rejected(raw)[4]
    assert len(sink.aborted) == 1 and "150000" in str(sink.aborted[0])
    assert raw.session.closed is None and raw.session.stream_buffers.used == 120_000
    raw.session.close("gone")  # the waiting writes are cancelled: nothing is held any more
    await raw.settle()
    assert raw.session.stream_buffers.used == 0
