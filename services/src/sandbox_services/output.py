"""Bounded process output: one ring of stdout/stderr chunks addressed by absolute byte offsets.

Offsets count every byte the process wrote (stdout and stderr together) since it started.
The ring holds at most ``capacity`` bytes; older bytes are dropped, except that a *blocking*
reader (a live stream that must not lose data) is never overtaken: instead the producer is
asked to pause until that reader catches up. A reader positioned before the oldest held byte
gets a :class:`Gap` naming the lost range, then the data that is still held.
:func:`decode_utf8` turns what a reader yields into text, one incremental decoder per stream.
"""

from __future__ import annotations

import asyncio
import codecs
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["stdout", "stderr"]

#: Small writes of the same stream are merged into the previous chunk up to this size.
MERGE_BELOW = 4096


@dataclass(frozen=True)
class Chunk:
    offset: int
    kind: Kind
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


@dataclass(frozen=True)
class Gap:
    start: int
    end: int


@dataclass(frozen=True)
class Text:
    """Decoded output of one stream; ``end`` is the absolute offset just past the bytes it came from."""

    kind: Kind
    text: str
    end: int


class OutputRing:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._chunks: deque[Chunk] = deque()
        self.start = 0  # offset of the oldest byte held
        self.end = 0  # offset one past the newest byte written
        self.closed = False
        self._waiters: list[asyncio.Future[None]] = []
        self._blocking: list[RingReader] = []
        self._paused = False
        self.on_pause: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None

    # producer side -----------------------------------------------------------------------

    def write(self, kind: Kind, data: bytes) -> None:
        if not data or self.closed:
            return
        last = self._chunks[-1] if self._chunks else None
        if last is not None and last.kind == kind and last.end == self.end and len(last.data) < MERGE_BELOW:
            self._chunks[-1] = Chunk(last.offset, kind, last.data + data)
        else:
            self._chunks.append(Chunk(self.end, kind, data))
        self.end += len(data)
        self._trim()
        self._wake()
        if self._blocking and self.end - self._min_blocking() >= self.capacity and not self._paused:
            self._paused = True
            if self.on_pause is not None:
                self.on_pause()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _min_blocking(self) -> int:
        return min(r.position for r in self._blocking)

    def _trim(self) -> None:
        floor = self.end - self.capacity
        if self._blocking:
            floor = min(floor, self._min_blocking())
        while self._chunks and self._chunks[0].end <= floor:
            self._chunks.popleft()
        if self._chunks and self._chunks[0].offset < floor:
            head = self._chunks.popleft()
            cut = floor - head.offset
            self._chunks.appendleft(Chunk(floor, head.kind, head.data[cut:]))
        self.start = self._chunks[0].offset if self._chunks else self.end

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _advanced(self) -> None:
        if self._paused and (not self._blocking or self.end - self._min_blocking() < self.capacity):
            self._paused = False
            self._trim()
            if self.on_resume is not None:
                self.on_resume()

    # consumer side -----------------------------------------------------------------------

    def held(self, kind: Kind | None = None) -> bytes:
        """Everything still held, optionally only one stream."""
        return b"".join(c.data for c in self._chunks if kind is None or c.kind == kind)

    def next_item(self, offset: int) -> Chunk | Gap | None:
        """What a reader at ``offset`` gets next: a Gap if bytes were dropped, else the
        (rest of the) chunk holding ``offset``, else None when nothing is there yet."""
        if offset < self.start:
            return Gap(offset, self.start)
        if offset >= self.end:
            return None
        chunks = self._chunks
        if offset - self.start <= self.end - offset:
            found = next(c for c in chunks if c.end > offset)
        else:
            found = next(c for c in reversed(chunks) if c.offset <= offset)
        if found.offset < offset:
            return Chunk(offset, found.kind, found.data[offset - found.offset :])
        return found

    async def wait_beyond(self, offset: int) -> None:
        """Return once there are bytes past ``offset`` or the ring is closed."""
        while self.end <= offset and not self.closed:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    def reader(self, offset: int = 0, *, blocking: bool = False) -> RingReader:
        reader = RingReader(self, max(0, min(offset, self.end)), blocking)
        if blocking:
            self._blocking.append(reader)
        return reader


class RingReader:
    """A cursor over a ring; iterate with ``async for`` to follow it to its end."""

    def __init__(self, ring: OutputRing, position: int, blocking: bool) -> None:
        self.ring = ring
        self.position = position
        self.blocking = blocking

    def close(self) -> None:
        if self.blocking and self in self.ring._blocking:
            self.ring._blocking.remove(self)
            self.blocking = False
            self.ring._advanced()

    def __aiter__(self) -> RingReader:
        return self

    async def __anext__(self) -> Chunk | Gap:
        ring = self.ring
        while True:
            item = ring.next_item(self.position)
            if item is not None:
                self.position = item.end
                if self.blocking:
                    ring._advanced()
                return item
            if ring.closed:
                self.close()
                raise StopAsyncIteration
            await ring.wait_beyond(self.position)


async def decode_utf8(reader: RingReader) -> AsyncGenerator[Text | Gap, None]:
    """What ``reader`` yields, with each stream's bytes decoded as UTF-8 (invalid bytes replaced).

    A character split across chunks is held until it is complete; at the end, whatever is
    still held is flushed (as replacement characters). Gaps pass through. Iterate it under
    ``contextlib.aclosing``; closing the reader stays the caller's job.
    """
    decoders: dict[Kind, codecs.IncrementalDecoder] = {
        "stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace"),
    }
    ends: dict[Kind, int] = {}
    async for item in reader:
        if isinstance(item, Gap):
            yield item
            continue
        ends[item.kind] = item.end
        text = decoders[item.kind].decode(item.data)
        if text:
            yield Text(item.kind, text, item.end)
    for kind, decoder in decoders.items():
        tail = decoder.decode(b"", final=True)
        if tail:
            yield Text(kind, tail, ends[kind])
