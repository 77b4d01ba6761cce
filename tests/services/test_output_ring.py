"""The bounded output ring: offsets, gaps, blocking readers, pause/resume and UTF-8 decoding."""

from __future__ import annotations

import asyncio
import contextlib

from sandbox_services.output import Chunk, Gap, OutputRing, Text, decode_utf8


async def drain(reader: object) -> list[object]:
    return [item async for item in reader]  # type: ignore[attr-defined]


async def test_offsets_and_replay() -> None:
    ring = OutputRing(100)
    ring.write("stdout", b"abc")
    ring.write("stderr", b"de")
    ring.close()
    items = await drain(ring.reader(0))
    assert items == [Chunk(0, "stdout", b"abc"), Chunk(3, "stderr", b"de")]
    assert ring.held("stdout") == b"abc" and ring.held("stderr") == b"de"
    assert await drain(ring.reader(4)) == [Chunk(4, "stderr", b"e")]


async def test_ring_is_bounded_and_reports_gaps() -> None:
    ring = OutputRing(10)
    for i in range(100):
        ring.write("stdout" if i % 2 else "stderr", bytes([65 + i % 26]) * 7)
        assert ring.end - ring.start <= 10
        assert sum(len(c.data) for c in ring._chunks) <= 10
    ring.close()
    items = await drain(ring.reader(0))
    assert isinstance(items[0], Gap) and items[0] == Gap(0, ring.start)
    assert b"".join(i.data for i in items[1:]) == ring.held()  # type: ignore[union-attr]


async def test_blocking_reader_is_never_overtaken_and_pauses_the_producer() -> None:
    ring = OutputRing(8)
    events: list[str] = []
    ring.on_pause = lambda: events.append("pause")
    ring.on_resume = lambda: events.append("resume")
    reader = ring.reader(0, blocking=True)
    for _ in range(4):
        ring.write("stdout", b"xxxx")
    assert events == ["pause"] and ring.start == 0  # nothing dropped while the reader lags
    got = bytearray()
    while len(got) < 16:
        item = await reader.__anext__()
        got += item.data  # type: ignore[union-attr]
    assert events == ["pause", "resume"]
    ring.close()
    assert await drain(reader) == []
    assert bytes(got) == b"x" * 16


async def test_live_reader_wakes_on_write() -> None:
    ring = OutputRing(64)
    reader = ring.reader(0)
    task = asyncio.ensure_future(reader.__anext__())
    await asyncio.sleep(0)
    assert not task.done()
    ring.write("stdout", b"hello")
    assert await task == Chunk(0, "stdout", b"hello")


async def test_small_writes_merge() -> None:
    ring = OutputRing(1 << 20)
    for _ in range(1000):
        ring.write("stdout", b"ab")
    assert len(ring._chunks) == 1 and ring.held() == b"ab" * 1000


async def decoded(ring: OutputRing, offset: int = 0) -> list[Text | Gap]:
    async with contextlib.aclosing(decode_utf8(ring.reader(offset))) as items:
        return [item async for item in items]


async def test_decoding_holds_a_split_character_per_stream() -> None:
    ring = OutputRing(1 << 20)
    euro = "€".encode()
    ring.write("stdout", euro[:1])
    ring.write("stderr", b"e")
    ring.write("stdout", euro[1:] + b"!")
    ring.close()
    assert await decoded(ring) == [Text("stderr", "e", 2), Text("stdout", "€!", 5)]


async def test_decoding_passes_gaps_and_flushes_an_unfinished_character() -> None:
    ring = OutputRing(4)
    ring.write("stdout", b"abcdef")
    ring.write("stderr", "é".encode()[:1])
    ring.close()
    assert await decoded(ring) == [Gap(0, 3), Text("stdout", "def", 6), Text("stderr", "\ufffd", 7)]
