"""What the server takes in from its clients, bounded in size and in time.

* :class:`ByteBudget`: the bytes of incoming data the whole server holds at once, one pool for
  every transport: http request bodies, WebSocket messages being assembled (and waiting for
  their app), rpc batches. A request that would go over waits for room, first come first
  served, for at most the budget's ``wait`` seconds, then fails with 503 ``RESOURCE_BUSY`` (a
  WebSocket is closed with 1013: see :mod:`.hypercorn_fixes`). ``[server] max_body_bytes_total``
  and ``body_wait_timeout`` set it.
* :func:`read_body`: one request's body, read within its size limit (413 from its
  ``Content-Length`` before any of it is read), the budget, and ``[server] body_timeout`` (a
  body whose bytes stop coming for that long is 408).
* :func:`stream_body`: one request's body chunk by chunk, for a consumer that stores it as it
  arrives (no size limit): only the chunk in hand counted in the budget, the same timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any

from .errors import ErrorCode, SandboxError

#: The defaults of ``[server] max_body_bytes_total``, ``body_wait_timeout`` and ``body_timeout``.
DEFAULT_TOTAL = 256 * 1024 * 1024
DEFAULT_WAIT_S = 30.0
DEFAULT_BODY_TIMEOUT_S = 30.0
TOTAL_SETTING = "server.max_body_bytes_total"


class ByteBudget:
    """Incoming bytes held at once across every request of the server: a request that would go
    over waits for room (first come, first served) for at most ``wait`` seconds. ``setting``
    names the setting that sets ``total``, for the error a client gets."""

    def __init__(
        self, total: int = DEFAULT_TOTAL, wait: float = DEFAULT_WAIT_S, *, setting: str = TOTAL_SETTING
    ) -> None:
        self.total = total
        self.wait = wait
        self.setting = setting
        self.held = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def busy(self) -> SandboxError:
        """The error of a request that waited for room in vain."""
        return SandboxError(
            ErrorCode.RESOURCE_BUSY,
            f"The server holds {self.held} bytes of incoming request bodies and messages "
            f"(its limit is {self.total}); retry later",
            {"limit": self.total, "setting": self.setting},
            status=503,
        )

    def take_now(self, size: int) -> bool:
        """Hold ``size`` more bytes if there is room now and nobody waits for room; whether it did."""
        if not self._waiters and self.held + size <= self.total:
            self.held += size
            return True
        return False

    async def take(self, size: int, wait: float | None = None) -> None:
        """Hold ``size`` more bytes, waiting for room up to ``wait`` seconds (default: the
        budget's); :meth:`busy`'s error when there is none by then."""
        if self.take_now(size):
            return
        if size > self.total:  # it could never fit: no use waiting
            raise self.busy()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, ready)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.wait if wait is None else wait)
        except TimeoutError:
            self._withdraw(entry)
            raise self.busy() from None
        except BaseException:
            self._withdraw(entry)
            raise

    def _withdraw(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        """A waiter gave up: it leaves the queue, or gives back what it was granted meanwhile."""
        size, ready = entry
        if ready.done() and not ready.cancelled():
            self.give(size)
            return
        ready.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(entry)
        self._grant()  # those behind it may fit now

    def give(self, size: int) -> None:
        """Give back ``size`` bytes taken before."""
        self.held -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.held + self._waiters[0][0] <= self.total:
            size, ready = self._waiters.popleft()
            if not ready.done():
                self.held += size
                ready.set_result(None)


class Hold:
    """The bytes one request holds of a budget, given back all at once by :meth:`release`."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0

    async def take(self, size: int) -> None:
        await self.budget.take(size)
        self.held += size

    def take_now(self, size: int) -> bool:
        """Hold ``size`` more bytes if the budget has room now (and nobody waits); whether it did."""
        if self.budget.take_now(size):
            self.held += size
            return True
        return False

    def release(self) -> int:
        """Give everything back; the number of bytes given back."""
        held, self.held = self.held, 0
        if held:
            self.budget.give(held)
        return held


def body_too_large(limit: int, size: int, setting: str) -> SandboxError:
    """413: a body of ``size`` bytes over ``limit`` (set by ``setting``)."""
    return SandboxError(
        ErrorCode.VALIDATION_FAILED,
        f"Request body of {size} bytes exceeds the limit of {limit} bytes",
        {"limit": limit, "size": size, "setting": setting},
        status=413,
    )


def body_stalled(timeout: float) -> SandboxError:
    """408: no bytes of a body that had begun for ``timeout`` seconds."""
    return SandboxError(
        ErrorCode.VALIDATION_FAILED,
        f"No bytes of the request body arrived for {timeout:g} s",
        {"timeout": timeout, "setting": "server.body_timeout"},
        status=408,
    )


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The ``Content-Length`` of ASGI headers, None when there is none (or it is not a number)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            value = value.strip()
            return int(value) if value.isdigit() else None
    return None


async def read_body(
    receive: Callable[[], Awaitable[dict[str, Any]]],
    headers: Iterable[tuple[bytes, bytes]],
    *,
    limit: int,
    setting: str,
    hold: Hold,
    timeout: float | None = DEFAULT_BODY_TIMEOUT_S,  # noqa: ASYNC109  (a gap between chunks, not a deadline)
) -> bytes | bytearray:
    """The whole body of an ASGI http request, within its limits:

    * over ``limit`` bytes: 413 (``setting`` names the limit), before any of it is read when its
      ``Content-Length`` says so;
    * counted in ``hold`` (its budget) as it arrives, the whole ``Content-Length`` at once,
      waiting for room when the budget is full (then 503); the caller releases the hold when
      the request is done;
    * no bytes for ``timeout`` seconds: 408; the client gone before its end: 400.

    A body with a ``Content-Length`` is read into one buffer of that length (no second copy).
    Returning means the body was read to its end (an error: it was not, and the connection
    must not be reused)."""
    length = content_length(headers)
    if length is not None and length > limit:
        raise body_too_large(limit, length, setting)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout) as deadline:

            def more_time() -> None:
                if timeout is not None:
                    deadline.reschedule(loop.time() + timeout)

            async def take(size: int) -> None:
                if hold.take_now(size):
                    return
                deadline.reschedule(None)  # waiting for room is the server's time, not the client's
                await hold.take(size)
                more_time()

            if length is not None:
                await take(length)
                buf = bytearray(length)
                view = memoryview(buf)
                size = 0
                try:
                    while True:
                        message = await receive()
                        chunk, more = _chunk(message)
                        if more:  # the deadline counts from the last bytes (the last ones need none)
                            more_time()
                        end = size + len(chunk)
                        if end > length:  # h11 does not let this happen; never write past the buffer
                            raise body_too_large(limit, end, setting)
                        view[size:end] = chunk
                        size = end
                        if not more:
                            break
                finally:
                    view.release()
                return buf if size == length else buf[:size]
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                more_time()
                chunk, more = _chunk(message)
                size += len(chunk)
                if size > limit:
                    raise body_too_large(limit, size, setting)
                if chunk:
                    await take(len(chunk))
                    chunks.append(chunk)
                if not more:
                    return b"".join(chunks)
    except TimeoutError:
        assert timeout is not None
        raise body_stalled(timeout) from None


async def stream_body(
    receive: Callable[[], Awaitable[dict[str, Any]]],
    *,
    hold: Hold,
    timeout: float | None = DEFAULT_BODY_TIMEOUT_S,  # noqa: ASYNC109  (a gap between chunks, not a deadline)
) -> AsyncGenerator[bytes, None]:
    """The body of an ASGI http request, chunk by chunk as it arrives, for a consumer that
    stores each one before it asks for the next (a file written as it comes): no size limit.

    * each chunk is counted in ``hold`` (its budget) from its arrival until the consumer asks
      for the next one (or closes the iterator), waiting for room when the budget is full
      (then 503); ``hold`` holds nothing else meanwhile;
    * no bytes for ``timeout`` seconds: 408; the client gone before its end: 400.

    Ending means the body was read to its end."""
    try:
        while True:
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                assert timeout is not None
                raise body_stalled(timeout) from None
            chunk, more = _chunk(message)
            if chunk:
                if not hold.take_now(len(chunk)):
                    await hold.take(len(chunk))  # waiting for room is the server's time, not the client's
                yield chunk
                hold.release()
            if not more:
                return
    finally:
        hold.release()


def _chunk(message: dict[str, Any]) -> tuple[bytes, bool]:
    """A body message's bytes and whether more follow; the client's departure is an error."""
    if message["type"] == "http.disconnect":
        raise SandboxError(ErrorCode.VALIDATION_FAILED, "The client disconnected before sending the whole body")
    return message.get("body", b""), bool(message.get("more_body", False))
