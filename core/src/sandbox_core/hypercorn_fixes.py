"""Fixes to hypercorn (0.17-0.18) that the server applies before it serves; each is tested
(tests/core/test_connections.py) against the installed hypercorn, so an upgrade that changes the code
patched here fails the tests instead of silently losing a fix.

* **A connection the client closes while idle is released at once.** Hypercorn keeps the
  connection's keep-alive timer in the connection's task group, and the group waits for its
  tasks before the socket is closed: a client that connects and closes without a request (or
  closes between requests) left the socket in CLOSE-WAIT for the whole keep-alive timeout. Once
  the reader sees EOF, the timer is stopped.
* **An answer sent before the request body is read reaches the client.** When the server
  answers early (a body over the size limit, a refused request) and closes, unread request bytes
  in the socket made the kernel reset the connection, destroying the answer in flight: clients
  that send the whole body before reading (httpx, curl) saw a connection error instead of the
  413. Before closing such a connection the server now stops sending (``shutdown(SHUT_WR)``) and
  reads and discards what the client still sends, for at most :data:`LINGER_S` seconds and
  :data:`LINGER_BYTES` bytes ("lingering close", as nginx does).
* **A request head must arrive within** ``header_timeout``. Hypercorn's only timer while a
  connection has no complete request is the keep-alive one; a client trickling its headers is
  now cut off after ``header_timeout`` seconds from its first byte, whatever the keep-alive.
* **HTTP/2 only when asked for.** Hypercorn answers h2c (``Upgrade: h2c`` and the prior-knowledge
  preface) on every plain-text listener. The contract is HTTP/1.1 and WebSocket, so by default
  an ``Upgrade: h2c`` header is ignored (the request is answered over HTTP/1.1) and the HTTP/2
  preface gets ``505`` and the connection is closed.
* **A closed WebSocket's ping loop ends at once.** With ``websocket_ping_interval`` set, each
  WebSocket gets a task that pings, then sleeps the whole interval before it looks whether the
  socket closed: every closed socket kept its connection's task alive for up to an interval,
  and a server shutting down waited that long (its whole graceful timeout) for them. The loop
  now waits on an event that the socket's close sets.
* **HTTP/2 sends wait for the peer's flow-control window.** Hypercorn's per-stream send buffer
  let its producer go on whenever the sender popped less than the low-water mark, which it also
  does when the window is 0 (it pops nothing): a client that stops sending WINDOW_UPDATE made
  the buffer, and the server's memory, grow without bound. The producer now waits until the
  buffer itself is below the low-water mark.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

_applied: dict[str, bool] = {}
_settings: dict[str, float | None] = {}

#: Lingering close: how long, and how many bytes, the server reads and discards before closing a
#: connection whose request body it did not read.
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024 * 1024

#: The answer to an HTTP/2 preface when HTTP/2 is off.
H2_REFUSED = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\n"
    b"content-type: text/plain\r\ncontent-length: 40\r\nconnection: close\r\n\r\n"
    b"HTTP/2 is not enabled on this server.\r\n\r\n"
)


def apply(*, http2: bool, header_timeout: float | None = None) -> None:
    """Apply every fix (idempotent); ``http2`` chooses whether h2c is served at all;
    ``header_timeout`` (seconds, None: none) bounds how long a request head may take."""
    from hypercorn.asyncio import tcp_server
    from hypercorn.events import Closed, RawData
    from hypercorn.protocol import ProtocolWrapper, h2, h11, ws_stream
    from wsproto.events import Ping

    _applied["http2"] = http2
    _settings["header_timeout"] = header_timeout
    if _applied.get("done"):
        return
    _applied["done"] = True

    read_data = tcp_server.TCPServer._read_data

    async def _read_data(self: Any) -> None:
        self._reader_task = asyncio.current_task()
        await read_data(self)
        await self.idle_task.stop()  # EOF: the keep-alive timer must not hold the socket open

    tcp_server.TCPServer._read_data = _read_data  # type: ignore[method-assign]

    close = tcp_server.TCPServer._close

    async def _close(self: Any) -> None:
        protocol = getattr(self, "protocol", None)
        if (
            protocol is not None
            and not self.reader.at_eof()
            and asyncio.current_task() is not getattr(self, "_reader_task", None)  # the reader drains
            and not getattr(protocol, "lingering", None)
            and not self.context.terminated.is_set()  # shutting down: no waiting for clients
        ):
            protocol.lingering = _Linger()
            with contextlib.suppress(NotImplementedError, OSError, RuntimeError):
                self.writer.write_eof()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.lingering.done.wait(), LINGER_S)
        await close(self)

    tcp_server.TCPServer._close = _close  # type: ignore[method-assign]

    check_protocol = h11.H11Protocol._check_protocol

    async def _check_protocol(self: Any, event: Any) -> None:
        if _applied["http2"]:
            await check_protocol(self, event)
        elif event.method == b"PRI" and event.target == b"*" and event.http_version == b"2.0":
            raise _H2Refused()
        # otherwise an `Upgrade: h2c` is ignored: the request is answered over HTTP/1.1

    h11.H11Protocol._check_protocol = _check_protocol  # type: ignore[method-assign]

    h11_handle = h11.H11Protocol.handle

    async def h11_protocol_handle(self: Any, event: Any) -> None:
        timeout = _settings.get("header_timeout")
        timer: asyncio.TimerHandle | None = getattr(self, "_head_timer", None)
        if timeout and timer is None and self.stream is None and isinstance(event, RawData) and event.data:
            # the first bytes of a request head: it must be complete within the timeout
            def expire() -> None:
                self._head_timer = None
                self.task_group.spawn(self.send, Closed())

            self._head_timer = timer = asyncio.get_running_loop().call_later(timeout, expire)
        await h11_handle(self, event)
        if timer is not None and (self.stream is not None or isinstance(event, Closed)):
            timer.cancel()  # the head is complete (or the connection gone)
            self._head_timer = None

    h11.H11Protocol.handle = h11_protocol_handle  # type: ignore[method-assign]

    handle = ProtocolWrapper.handle

    async def wrapper_handle(self: Any, event: Any) -> None:
        linger: _Linger | None = getattr(self, "lingering", None)
        if linger is not None:  # closing: what the client still sends is discarded
            if isinstance(event, RawData):
                if not linger.discard(len(event.data)):  # its end, or more than we read for it
                    linger.done.set()
                return
            linger.done.set()
        try:
            await handle(self, event)
        except _H2Refused:
            await self.send(RawData(data=H2_REFUSED))
            await self.send(Closed())

    ProtocolWrapper.handle = wrapper_handle  # type: ignore[method-assign]

    async def pop(self: Any, max_length: int) -> bytes:
        length = min(len(self.buffer), max_length)
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        if len(self.buffer) < h2.BUFFER_LOW_WATER:  # what is left, not what was taken
            await self._paused.set()
        if len(self.buffer) == 0:
            await self._is_empty.set()
        return data

    h2.StreamBuffer.pop = pop  # type: ignore[method-assign]

    ws_handle = ws_stream.WSStream.handle

    async def handle_ws(self: Any, event: Any) -> None:
        await ws_handle(self, event)
        if self.closed and getattr(self, "pings_stop", None) is not None:
            self.pings_stop.set()

    ws_stream.WSStream.handle = handle_ws  # type: ignore[method-assign]

    async def _send_pings(self: Any) -> None:
        self.pings_stop = stop = asyncio.Event()
        while not self.closed:
            await self._send_wsproto_event(Ping())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.websocket_ping_interval)

    ws_stream.WSStream._send_pings = _send_pings  # type: ignore[method-assign]


class _Linger:
    """A connection being closed after an early answer: bytes discarded so far."""

    def __init__(self) -> None:
        self.discarded = 0
        self.done = asyncio.Event()

    def discard(self, size: int) -> bool:
        """Count ``size`` more bytes; False once the limit is passed (then close at once)."""
        self.discarded += size
        return size > 0 and self.discarded <= LINGER_BYTES


class _H2Refused(Exception):
    """An HTTP/2 preface on a server with HTTP/2 off."""
