"""Streams over a session: ReadableStream (pipes) and WritableStream, both with backpressure.

A stream travels as a pipe: the sender asks the receiver for one (``["pipe"]``), names its
readable end in the message that carries the stream, and writes chunks to its writable end with
``stream`` messages. The receiver acknowledges each write only once the consumer has taken the
chunk, and the sender keeps its unacknowledged bytes under a :class:`~.flow.FlowController`
window: a consumer that stops reading stops the source. A consumer that cancels makes every
later write fail, which is how the sender learns to stop its source.

What an incoming stream holds (chunks written and not yet consumed) is bounded three ways: one
stream's own limit (a sender past it ignores flow control: the session aborts), and the budgets
of its session and of every session sharing one (a server's): the write that would break one of
those fails its stream, which the sender sees as a rejected write, and the session goes on.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from .flow import FlowController
from .targets import RpcTarget
from .values import UNDEFINED, Budget, ProtocolError, RpcError, SessionClosed

if TYPE_CHECKING:
    from .session import Import, RpcSession

CANCELLED = "The reader cancelled the stream"


def chunk_size(chunk: Any) -> int:
    """About the memory a chunk takes: a byte string's length, a string's size (up to 4 bytes a
    character), and for any other value at least 64 bytes for it and each value it contains (a
    chunk may be any value; its depth is bounded by the decoder)."""
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return len(chunk)
    if isinstance(chunk, str):
        return sys.getsizeof(chunk)
    if isinstance(chunk, dict):
        return 64 + sum(chunk_size(key) + chunk_size(value) for key, value in chunk.items())
    if isinstance(chunk, (list, tuple)):
        return 64 + sum(chunk_size(value) for value in chunk)
    return 64


class Holding:
    """The bytes one incoming stream holds: at most ``limit`` of its own, and within ``budget``
    (its session's, itself within the server's)."""

    __slots__ = ("_budget", "_limit", "_on_overflow", "held")

    def __init__(self, limit: int, budget: Budget, on_overflow: Any) -> None:
        self._limit = limit
        self._budget = budget
        self._on_overflow = on_overflow  # called with a ProtocolError: the session aborts
        self.held = 0

    def take(self, size: int) -> BaseException | None:
        """Count a chunk of ``size`` bytes; else the error its stream fails with (counting nothing)."""
        if self.held + size > self._limit:
            error = ProtocolError("the peer wrote past the stream's limit without waiting for acks")
            self._on_overflow(error)
            return error
        refused = self._budget.take(size)
        if refused is not None:
            return RpcError(
                "RangeError",
                f"The stream failed: {refused.label} would hold more than {refused.limit} bytes "
                "written and not yet read",
            )
        self.held += size
        return None

    def give(self, size: int) -> None:
        self.held -= size
        self._budget.give(size)

    def give_all(self) -> None:
        self.give(self.held)


class ReadableStream:
    """A stream of chunks (usually ``bytes``).

    To send one, wrap any async iterable: ``ReadableStream(source)``; the session reads it as the
    peer's flow control allows and calls the source's ``aclose()`` when the peer cancels or the
    session ends. A stream from the peer is an async iterator: each chunk is acknowledged when
    taken, and :meth:`aclose` cancels it.
    """

    def __init__(
        self,
        source: AsyncIterable[Any] | None = None,
        *,
        heartbeat: float | None = None,
        heartbeat_chunk: Any = b"",
        pipe: Pipe | None = None,
    ) -> None:
        self._source = source
        #: a stream from the peer: its chunks come from this pipe (the session's; see :meth:`from_pipe`)
        self._pipe = pipe
        self._claimed = False
        #: While the source is silent this long, send ``heartbeat_chunk`` (an empty chunk by
        #: default). A reader's cancel sends nothing on the wire (as in the reference): the sender
        #: learns of it when a write is refused, so a silent source would otherwise run on until
        #: it next produces something.
        self.heartbeat = heartbeat
        self.heartbeat_chunk = heartbeat_chunk

    @classmethod
    def from_pipe(cls, pipe: Pipe) -> ReadableStream:
        """Package-internal (the session's): the stream the peer sends through ``pipe``."""
        return cls(pipe=pipe)

    def take_source(self) -> AsyncIterator[Any]:
        """Package-internal (the session's, when it sends the stream): the chunks to send (a
        stream is sent once)."""
        if self._claimed:
            raise RpcError("TypeError", "This ReadableStream was already sent or read")
        self._claimed = True
        if self._pipe is not None:
            return self._iterate_pipe()
        assert self._source is not None
        return aiter(self._source)

    async def _iterate_pipe(self) -> AsyncIterator[Any]:
        assert self._pipe is not None
        try:
            while True:
                yield await self._pipe.take()
        except StopAsyncIteration:
            return
        finally:
            self._pipe.cancel(CANCELLED)

    def __aiter__(self) -> ReadableStream:
        if self._pipe is None:
            raise TypeError("iterate the source of a local ReadableStream, not the stream")
        return self

    async def __anext__(self) -> Any:
        assert self._pipe is not None
        return await self._pipe.take()

    async def read_all(self) -> bytes:
        """Every chunk joined (bytes chunks only)."""
        out = bytearray()
        async for chunk in self:
            out += chunk
        return bytes(out)

    async def aclose(self, reason: Any = CANCELLED) -> None:
        """Cancel the stream: the sender's later writes fail and it stops its source."""
        if self._pipe is not None:
            self._pipe.cancel(reason)
        elif self._source is not None and not self._claimed:
            self._claimed = True
            close = getattr(self._source, "aclose", None)
            if close is not None:
                await close()


class Pipe(RpcTarget):
    """The receiving end of a pipe: the writable the peer writes to (``write``, ``close`` and
    ``abort`` are what its stream messages call) and the chunks waiting for the consumer."""

    __slots__ = ("_chunks", "_closed", "_error", "_holding", "_waiter", "close_ack")

    def __init__(self, holding: Holding) -> None:
        self._chunks: collections.deque[tuple[Any, int, asyncio.Future[Any]]] = collections.deque()
        self._closed = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._holding = holding
        self.close_ack: asyncio.Future[Any] | None = None

    def __del__(self) -> None:
        self._holding.give_all()  # chunks nobody will read (a dropped reader): their budget comes back

    @property
    def closed(self) -> bool:
        """The peer closed it (its chunks may still wait for the reader)."""
        return self._closed

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # the peer's side (called by its stream messages) ----------------------------------------

    def write(self, chunk: Any) -> asyncio.Future[Any]:
        ack = asyncio.get_running_loop().create_future()
        if self._error is not None:
            ack.set_exception(self._error)
        elif self._closed:
            ack.set_exception(RpcError("TypeError", "write after close"))
        else:
            size = chunk_size(chunk)
            error = self._holding.take(size)
            if error is not None:
                self.fail(error)
                ack.set_exception(error)
            else:
                self._chunks.append((chunk, size, ack))
                self._wake()
        return ack

    def close(self) -> asyncio.Future[Any]:
        ack = asyncio.get_running_loop().create_future()
        if self._error is not None:
            ack.set_exception(self._error)
        else:
            self._closed = True
            self.close_ack = ack
            if not self._chunks:
                ack.set_result(UNDEFINED)
            self._wake()
        return ack

    def abort(self, reason: Any = None) -> Any:
        error = reason if isinstance(reason, BaseException) else RpcError("Error", str(reason))
        self.fail(error)
        return UNDEFINED

    # the consumer's side ----------------------------------------------------------------------

    async def take(self) -> Any:
        while True:
            if self._chunks:
                chunk, size, ack = self._chunks.popleft()
                self._holding.give(size)
                if not ack.done():
                    ack.set_result(UNDEFINED)
                if self._closed and not self._chunks and self.close_ack is not None and not self.close_ack.done():
                    self.close_ack.set_result(UNDEFINED)
                return chunk
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def cancel(self, reason: Any) -> None:
        """The consumer is done: every waiting and later write fails with ``reason``."""
        if self._error is None and not (self._closed and not self._chunks):
            error = reason if isinstance(reason, BaseException) else Rejection(reason)
            self.fail(error)

    def fail(self, error: BaseException) -> None:
        if self._error is not None:
            return
        self._error = error
        while self._chunks:
            _, _, ack = self._chunks.popleft()
            if not ack.done():
                ack.set_exception(error)
        self._holding.give_all()
        if self.close_ack is not None and not self.close_ack.done():
            self.close_ack.set_exception(error)
        self._wake()


class Rejection(Exception):
    """Package-internal (streams and the session): a rejection whose reason is any value (the
    reference sends a cancel reason as it is)."""

    def __init__(self, value: Any) -> None:
        super().__init__(str(value))
        self.value = value


class Sink(Protocol):
    async def write(self, chunk: Any) -> None: ...
    async def close(self) -> None: ...
    async def abort(self, reason: Any) -> None: ...


class StreamSender:
    """Writes to a writable on the peer (a pipe's writable end, or a WritableStream it passed),
    keeping the bytes in flight under the flow-control window."""

    def __init__(self, session: RpcSession, target: Import) -> None:
        self._session = session
        self._target = target
        self._flow = FlowController()
        self._error: BaseException | None = None
        self._room: asyncio.Future[None] | None = None
        self.done = False
        #: done when a write is refused (the reader cancelled, or the session ended)
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _on_ack(self, mark: Any, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._flow.on_error(mark)
            if self._error is None:
                self._error = fut.exception() if not fut.cancelled() else SessionClosed("stream cancelled")
                if not self.failed.done():
                    self.failed.set_result(None)
        else:
            self._flow.on_ack(mark)
        if self._room is not None and not self._room.done() and (not self._flow.full or self._error):
            self._room.set_result(None)

    async def write(self, chunk: Any) -> None:
        while self._error is None and self._flow.full:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        if self._error is not None:
            raise self._error
        fut, size = self._session.send_stream(self._target, "write", [chunk])
        mark = self._flow.on_send(size)
        fut.add_done_callback(lambda f: self._on_ack(mark, f))

    async def close(self) -> None:
        if self._error is not None:
            raise self._error
        fut, _ = self._session.send_stream(self._target, "close", [])
        self.done = True
        await fut

    def abort(self, reason: Any) -> None:
        if self._error is None and not self.done:
            self.done = True
            fut, _ = self._session.send_stream(self._target, "abort", [reason])
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())


class WritableStream:
    """A stream to write chunks to.

    From the peer: ``await w.write(chunk)`` (waits while the flow-control window is full),
    ``await w.close()``, ``await w.abort(reason)``. To give the peer one, wrap a local sink (an
    object with async ``write(chunk)``, ``close()`` and ``abort(reason)``) with :meth:`local`.
    """

    def __init__(self, sink: Sink | None = None, *, peer: tuple[RpcSession, Import] | None = None) -> None:
        """A stream to ``sink`` (:meth:`local`), or (package-internal: :meth:`from_peer`) to the
        writable the peer exported as ``peer``'s import."""
        self._sink = sink
        self._session: RpcSession | None = None
        self._target: Import | None = None
        self._sender: StreamSender | None = None
        if peer is not None:
            self._session, self._target = peer
            self._sender = StreamSender(*peer)

    @classmethod
    def local(cls, sink: Sink) -> WritableStream:
        return cls(sink)

    @classmethod
    def from_peer(cls, session: RpcSession, target: Import) -> WritableStream:
        """Package-internal (the session's): the writable the peer exported as ``target``."""
        return cls(peer=(session, target))

    @property
    def sink(self) -> Sink | None:
        """The local sink (None for a stream to the peer): what the session exports for it."""
        return self._sink

    def _finish(self) -> None:
        if self._session is not None and self._target is not None:
            session, target, self._session = self._session, self._target, None
            session.drop_local_ref(target)

    async def write(self, chunk: Any) -> None:
        if self._sink is not None:
            await self._sink.write(chunk)
            return
        if self._sender is None or self._session is None:
            raise RpcError("TypeError", "This WritableStream is closed")
        await self._sender.write(chunk)

    async def close(self) -> None:
        if self._sink is not None:
            await self._sink.close()
            return
        if self._sender is None or self._session is None:
            return
        try:
            await self._sender.close()
        finally:
            self._finish()

    async def abort(self, reason: Any = None) -> None:
        if self._sink is not None:
            await self._sink.abort(reason)
            return
        if self._sender is not None and self._session is not None:
            self._sender.abort(reason)
            self._finish()


class LocalWritable(RpcTarget):
    """A local sink exported to the peer: its stream messages run one at a time, in order; once
    closed or aborted it takes nothing more. The chunks of writes waiting for their turn are held
    as a pipe's are (``holding``): a write past its budget aborts the sink and fails."""

    __slots__ = ("_holding", "_lock", "_sink", "finished")

    def __init__(self, sink: Sink, holding: Holding) -> None:
        self._sink = sink
        self._holding = holding
        self._lock = asyncio.Lock()
        self.finished = False

    async def write(self, chunk: Any) -> Any:
        size = chunk_size(chunk)
        error = self._holding.take(size)
        if error is not None:
            await self.abort(error)
            raise error
        try:
            async with self._lock:
                if self.finished:
                    raise RpcError("TypeError", "write after the stream ended")
                await self._sink.write(chunk)
        finally:
            self._holding.give(size)
        return UNDEFINED

    async def close(self) -> Any:
        async with self._lock:
            if not self.finished:
                self.finished = True
                await self._sink.close()
        return UNDEFINED

    async def abort(self, reason: Any = None) -> Any:
        if not self.finished:
            self.finished = True
            await self._sink.abort(reason)
        return UNDEFINED
