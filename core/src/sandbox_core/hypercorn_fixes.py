"""Fixes to hypercorn (0.17-0.18) that the server applies before it serves (:func:`apply`).

Each fix is a function of its own, applied once per process, whose docstring says what it fixes
and names the test that shows the bug. A fix's settings come from the hypercorn config of the
server that serves the connection (:func:`make_config`: :class:`ConnectionPolicy`,
:class:`WebsocketIntake`), never from this module, so two servers in one process keep their own.
:data:`PATCHED_CODE` lists, fix by fix, the third-party code each one replaces, wraps or relies
on, by hash: tests/core/test_hypercorn_fixes.py compares it with the installed packages, so an
upgrade that changes any of it fails there, naming the fix to review, instead of silently losing
the fix. docs/hypercorn-issues.md describes each behaviour as an upstream report.

* **A connection the client closes while idle is released at once**
  (:func:`release_idle_connections`). Hypercorn keeps the connection's keep-alive timer in the
  connection's task group, and the group waits for its tasks before the socket is closed: a
  client that connects and closes without a request (or closes between requests) left the
  socket in CLOSE-WAIT for the whole keep-alive timeout. Once the reader sees EOF, the timer is
  stopped.
* **An answer sent before the request body is read reaches the client**
  (:func:`linger_after_early_answer`). When the server answers early (a body over the size
  limit, a refused request) and closes, unread request bytes in the socket made the kernel reset
  the connection, destroying the answer in flight: clients that send the whole body before
  reading (httpx, curl) saw a connection error instead of the 413. Before closing such a
  connection the server now stops sending (``shutdown(SHUT_WR)``) and reads and discards what
  the client still sends, for at most :data:`LINGER_S` seconds and :data:`LINGER_BYTES` bytes
  ("lingering close", as nginx does).
* **A request head must arrive within** ``header_timeout`` (:func:`time_request_heads`).
  Hypercorn's only timer while a connection has no complete request is the keep-alive one; a
  client trickling its headers is now cut off after ``header_timeout`` seconds from its first
  byte, whatever the keep-alive.
* **HTTP/2 only when asked for** (:func:`refuse_h2c`). Hypercorn answers h2c (``Upgrade: h2c``
  and the prior-knowledge preface) on every plain-text listener. The contract is HTTP/1.1 and
  WebSocket, so unless the server's ``http2`` is on, an ``Upgrade: h2c`` header is ignored (the
  request is answered over HTTP/1.1) and the HTTP/2 preface gets ``505`` and the connection is
  closed.
* **Incoming WebSocket messages are bounded** (:func:`bound_websocket_messages`). Hypercorn
  assembles each message in memory before the app sees it, up to one limit for the whole server,
  forever, and (past that limit) kept appending what a client sent after its 1009. Now a message
  is assembled within its path's own limit (``ServerMount.websocket_max_message_bytes``; over it,
  1009), counted against the server's budget of incoming bytes until the app has taken it
  (:class:`sandbox_core.intake.ByteBudget`; no room within the budget's wait, 1013), and one
  whose bytes stop coming for ``body_timeout`` seconds is given up (1008). Each of those closes
  the connection at once (the app gets ``websocket.disconnect`` with that code) and gives back
  what the message held.
* **A closed WebSocket's ping loop ends at once** (:func:`end_ping_loops_at_close`). With
  ``websocket_ping_interval`` set, each WebSocket gets a task that pings, then sleeps the whole
  interval before it looks whether the socket closed: every closed socket kept its connection's
  task alive for up to an interval, and a server shutting down waited that long (its whole
  graceful timeout) for them. The loop now waits on an event that the socket's close sets.
* **HTTP/2 sends wait for the peer's flow-control window** (:func:`wait_for_h2_window`).
  Hypercorn's per-stream send buffer let its producer go on whenever the sender popped less than
  the low-water mark, which it also does when the window is 0 (it pops nothing): a client that
  stops sending WINDOW_UPDATE made the buffer, and the server's memory, grow without bound. The
  producer now waits until the buffer itself is below the low-water mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import memory, patching
from .errors import SandboxError
from .intake import ByteBudget

log = structlog.get_logger("sandbox.server")

#: Lingering close: how long, and how many bytes, the server reads and discards before closing a
#: connection whose request body it did not read (the defaults of :class:`ConnectionPolicy`).
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024 * 1024

#: The answer to an HTTP/2 preface when HTTP/2 is off.
H2_REFUSED = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\n"
    b"content-type: text/plain\r\ncontent-length: 40\r\nconnection: close\r\n\r\n"
    b"HTTP/2 is not enabled on this server.\r\n\r\n"
)


# --- the settings: one server's own, carried by its hypercorn config ----------------------------


@dataclass(frozen=True)
class ConnectionPolicy:
    """One server's settings for the connection fixes; hypercorn's config carries it as
    ``connection_policy`` (:func:`make_config`), so two servers in one process keep their own.
    The defaults are hypercorn's own behaviour (h2c served, no time limit for a request head):
    a hypercorn config without a policy (another hypercorn server in the process) gets them."""

    #: serve h2c (:func:`refuse_h2c`)
    http2: bool = True
    #: seconds from a request head's first byte within which it must be complete (None: no limit;
    #: :func:`time_request_heads`)
    header_timeout: float | None = None
    #: lingering close: at most this long, and this many bytes (:func:`linger_after_early_answer`)
    linger_s: float = LINGER_S
    linger_bytes: int = LINGER_BYTES


@dataclass(frozen=True)
class WebsocketIntake:
    """One server's limits on incoming WebSocket messages (:func:`bound_websocket_messages`);
    hypercorn's config carries it as ``websocket_intake`` (:func:`make_config`), so two servers
    in one process keep their own."""

    #: the server's budget of incoming bytes (None: none)
    budget: ByteBudget | None = None
    #: a message whose bytes stop coming for this long closes the socket (None: never)
    stall_timeout: float | None = None
    #: path -> the largest message (bytes; a text message's UTF-8 length)
    limits: Mapping[str, int] = field(default_factory=dict)


_HYPERCORN = ConnectionPolicy()


@functools.cache
def _config_class() -> type[Any]:
    from hypercorn.config import Config as HypercornConfig

    class Config(HypercornConfig):
        """Hypercorn's config with the server's own settings for the fixes."""

        connection_policy: ConnectionPolicy | None = None
        websocket_intake: WebsocketIntake | None = None

    return Config


def make_config(intake: WebsocketIntake, policy: ConnectionPolicy) -> Any:
    """A hypercorn config for one server, carrying its own ``intake`` and ``policy``."""
    config = _config_class()()
    config.websocket_intake = intake
    config.connection_policy = policy
    return config


def _policy(config: Any) -> ConnectionPolicy:
    """The connection policy of the server whose hypercorn config is ``config``."""
    policy: ConnectionPolicy | None = getattr(config, "connection_policy", None)
    return policy if policy is not None else _HYPERCORN


# --- applying the fixes ---------------------------------------------------------------------------

_lock = threading.Lock()
_applied: set[str] = set()  # the fixes this process has applied (patches are per process)


def _once(fix: Callable[[], None]) -> Callable[[], None]:
    """``fix``, applied at most once per process, whoever calls it and however often."""

    @functools.wraps(fix)
    def apply_once() -> None:
        with _lock:
            if fix.__name__ not in _applied:
                fix()
                _applied.add(fix.__name__)

    return apply_once


def apply() -> None:
    """Apply every fix (:data:`FIXES`, in that order), each once per process. What a fix does on
    a connection follows the settings of the server serving it (:func:`make_config`)."""
    for fix in FIXES:
        fix()


# --- release_idle_connections ---------------------------------------------------------------------


@_once
def release_idle_connections() -> None:
    """A connection the client closes while idle is released at once, not after the keep-alive
    timeout (see the module's docstring; docs/hypercorn-issues.md, 1). Wraps
    ``TCPServer._read_data``: once it has seen EOF, the keep-alive timer (``idle_task``), which
    kept the connection's task group, and so its socket, open, is stopped.
    Shown by tests/core/test_connections.py::test_connections_closed_by_the_client_are_released_at_once."""
    from hypercorn.asyncio import tcp_server

    read_data = tcp_server.TCPServer._read_data

    async def _read_data(self: Any) -> None:
        await read_data(self)
        await self.idle_task.stop()  # EOF: the keep-alive timer must not hold the socket open

    tcp_server.TCPServer._read_data = _read_data  # type: ignore[method-assign]


# --- linger_after_early_answer --------------------------------------------------------------------


class _Linger:
    """A connection being closed after an early answer: bytes discarded so far."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.discarded = 0
        self.done = asyncio.Event()

    def discard(self, size: int) -> bool:
        """Count ``size`` more bytes; False once the limit is passed (then close at once)."""
        self.discarded += size
        return size > 0 and self.discarded <= self.limit


@_once
def linger_after_early_answer() -> None:
    """An answer sent before the request body was read reaches the client instead of being
    destroyed by a connection reset (see the module's docstring; docs/hypercorn-issues.md, 2).
    Wraps ``TCPServer._close``: a connection the client may still be sending on is first shut
    for writing, and what the client still sends is read and discarded (``ProtocolWrapper.handle``,
    wrapped) for at most the server's ``linger_s`` seconds and ``linger_bytes`` bytes
    (:class:`ConnectionPolicy`), then closed; never while the server shuts down, nor when the
    reader itself closes (``TCPServer._read_data``, wrapped to record the reader's task).
    Shown by tests/http/test_edge_http.py::test_an_early_answer_reaches_a_client_still_sending_its_body."""
    from hypercorn.asyncio import tcp_server
    from hypercorn.events import RawData
    from hypercorn.protocol import ProtocolWrapper

    read_data = tcp_server.TCPServer._read_data
    close = tcp_server.TCPServer._close
    handle = ProtocolWrapper.handle

    async def _read_data(self: Any) -> None:
        self._reader_task = asyncio.current_task()
        await read_data(self)

    async def _close(self: Any) -> None:
        protocol = getattr(self, "protocol", None)
        if (
            protocol is not None
            and not self.reader.at_eof()
            and asyncio.current_task() is not getattr(self, "_reader_task", None)  # the reader drains
            and not getattr(protocol, "lingering", None)
            and not self.context.terminated.is_set()  # shutting down: no waiting for clients
        ):
            policy = _policy(self.config)
            protocol.lingering = _Linger(policy.linger_bytes)
            with contextlib.suppress(NotImplementedError, OSError, RuntimeError):
                self.writer.write_eof()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.lingering.done.wait(), policy.linger_s)
        await close(self)

    async def wrapper_handle(self: Any, event: Any) -> None:
        linger: _Linger | None = getattr(self, "lingering", None)
        if linger is not None:  # closing: what the client still sends is discarded
            if isinstance(event, RawData):
                if not linger.discard(len(event.data)):  # its end, or more than we read for it
                    linger.done.set()
                return
            linger.done.set()
        await handle(self, event)

    tcp_server.TCPServer._read_data = _read_data  # type: ignore[method-assign]
    tcp_server.TCPServer._close = _close  # type: ignore[method-assign]
    ProtocolWrapper.handle = wrapper_handle  # type: ignore[method-assign]


# --- time_request_heads ---------------------------------------------------------------------------


@_once
def time_request_heads() -> None:
    """A request head must be complete within the server's ``header_timeout``
    (:class:`ConnectionPolicy`) from its first byte, whatever the keep-alive (see the module's
    docstring; docs/hypercorn-issues.md, 3). Wraps ``H11Protocol.handle``: the first bytes of a
    request head start a timer that closes the connection; the request's stream, the
    connection's end, or its turn to HTTP/2 (hypercorn raises out of ``handle`` for that) stops
    it. Shown by
    tests/core/test_connections.py::test_a_slow_request_head_is_cut_off_before_the_keep_alive_timeout
    (and tests/core/test_connections.py::test_an_http2_connection_is_not_cut_off_by_the_header_timeout:
    the timer must not outlive the head)."""
    from hypercorn.events import Closed, RawData
    from hypercorn.protocol import h11

    h11_handle = h11.H11Protocol.handle

    async def h11_protocol_handle(self: Any, event: Any) -> None:
        timer: asyncio.TimerHandle | None = getattr(self, "_head_timer", None)
        if timer is None and self.stream is None and isinstance(event, RawData) and event.data:
            timeout = _policy(self.config).header_timeout
            if timeout:  # the first bytes of a request head: it must be complete within the timeout

                def expire() -> None:
                    self._head_timer = None
                    self.task_group.spawn(self.send, Closed())

                self._head_timer = timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            await h11_handle(self, event)
        except BaseException:
            # the connection turned to HTTP/2 (the head was complete), or it is ending
            if timer is not None:
                timer.cancel()
                self._head_timer = None
            raise
        if timer is not None and (self.stream is not None or isinstance(event, Closed)):
            timer.cancel()  # the head is complete (or the connection gone)
            self._head_timer = None

    h11.H11Protocol.handle = h11_protocol_handle  # type: ignore[method-assign]


# --- refuse_h2c -----------------------------------------------------------------------------------


class _H2Refused(Exception):
    """An HTTP/2 preface on a server with HTTP/2 off."""


@_once
def refuse_h2c() -> None:
    """HTTP/2 (h2c) only on a server whose ``http2`` is on (:class:`ConnectionPolicy`); see the
    module's docstring; docs/hypercorn-issues.md, 4. Replaces ``H11Protocol._check_protocol``
    (hypercorn's, called as it was, when ``http2`` is on): otherwise an ``Upgrade: h2c`` is
    ignored and the prior-knowledge preface raises, which the wrapped ``ProtocolWrapper.handle``
    answers with :data:`H2_REFUSED` and a close. Shown by
    tests/core/test_connections.py::test_http2_is_off_by_default."""
    from hypercorn.events import Closed, RawData
    from hypercorn.protocol import ProtocolWrapper, h11

    check_protocol = h11.H11Protocol._check_protocol
    handle = ProtocolWrapper.handle

    async def _check_protocol(self: Any, event: Any) -> None:
        if _policy(self.config).http2:
            await check_protocol(self, event)
        elif event.method == b"PRI" and event.target == b"*" and event.http_version == b"2.0":
            raise _H2Refused()
        # otherwise an `Upgrade: h2c` is ignored: the request is answered over HTTP/1.1

    async def wrapper_handle(self: Any, event: Any) -> None:
        try:
            await handle(self, event)
        except _H2Refused:
            await self.send(RawData(data=H2_REFUSED))
            await self.send(Closed())

    h11.H11Protocol._check_protocol = _check_protocol  # type: ignore[method-assign]
    ProtocolWrapper.handle = wrapper_handle  # type: ignore[method-assign]


# --- end_ping_loops_at_close ----------------------------------------------------------------------


@_once
def end_ping_loops_at_close() -> None:
    """A closed WebSocket's ping loop ends at once, not up to a ping interval later (see the
    module's docstring; docs/hypercorn-issues.md, 5). Replaces ``WSStream._send_pings`` (it
    waits on an event, the interval at most, instead of sleeping the interval) and wraps
    ``WSStream.handle`` (which sets ``closed``) to set that event. Applied after
    :func:`bound_websocket_messages`, whose own ``WSStream.handle`` marks a socket closed without
    calling hypercorn's. Shown by
    tests/ws/test_shutdown_and_pings.py::test_a_closed_socket_does_not_hold_up_shutdown."""
    from hypercorn.protocol import ws_stream
    from wsproto.events import Ping

    ws_handle = ws_stream.WSStream.handle

    async def handle_ws(self: Any, event: Any) -> None:
        await ws_handle(self, event)
        if self.closed and getattr(self, "pings_stop", None) is not None:
            self.pings_stop.set()

    async def _send_pings(self: Any) -> None:
        self.pings_stop = stop = asyncio.Event()
        while not self.closed:
            await self._send_wsproto_event(Ping())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.websocket_ping_interval)

    ws_stream.WSStream.handle = handle_ws  # type: ignore[method-assign]
    ws_stream.WSStream._send_pings = _send_pings  # type: ignore[method-assign]


# --- wait_for_h2_window ---------------------------------------------------------------------------


@_once
def wait_for_h2_window() -> None:
    """An HTTP/2 stream's producer waits while the peer's flow-control window is closed, so a
    client that stops sending WINDOW_UPDATE cannot make the server's memory grow without bound
    (see the module's docstring; docs/hypercorn-issues.md, 6). Replaces ``StreamBuffer.pop``
    (hypercorn/protocol/h2.py): the producer is released when what is left in the buffer is below
    the low-water mark, not when what was popped is. Shown by
    tests/core/test_connections.py::test_stalled_http2_stream_keeps_memory_bounded."""
    from hypercorn.protocol import h2

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


# --- the shape of the code the fixes patch --------------------------------------------------------

#: For each fix, the third-party code it replaces, wraps or relies on, by a hash of that code
#: (:func:`sandbox_core.patching.code_hash`: comments, layout and docstrings do not count).
#: tests/core/test_hypercorn_fixes.py compares them with the installed packages
#: (:func:`changed_code`): an upgrade that changes any of it fails there, naming the fix to review
#: (then update the hash).
PATCHED_CODE: dict[str, dict[str, str]] = {
    "release_idle_connections": {
        # wrapped: hands Closed() to the protocol at EOF and returns
        "hypercorn.asyncio.tcp_server:TCPServer._read_data": "0bc794cf1918657a",
        # the idle timer runs in the connection's task group, which _close waits for
        "hypercorn.asyncio.tcp_server:TCPServer.run": "a9441f522f23afb9",
        "hypercorn.asyncio.tcp_server:TCPServer.__init__": "d37bce970af86516",
        "hypercorn.asyncio.tcp_server:TCPServer._idle_timeout": "f53af10e6576c359",
        "hypercorn.asyncio.worker_context:AsyncioSingleTask": "e83ffc6acdca54e6",
    },
    "linger_after_early_answer": {
        # wrapped: closes the socket (write_eof, close); called by the reader's task or another
        "hypercorn.asyncio.tcp_server:TCPServer._close": "715ec2eca57a5270",
        "hypercorn.asyncio.tcp_server:TCPServer._read_data": "0bc794cf1918657a",
        "hypercorn.asyncio.tcp_server:TCPServer.protocol_send": "002fc976be80cf4d",
        "hypercorn.asyncio.tcp_server:TCPServer.run": "a9441f522f23afb9",
        "hypercorn.asyncio.tcp_server:TCPServer.__init__": "d37bce970af86516",
        # wrapped: every event of the connection comes through it
        "hypercorn.protocol:ProtocolWrapper.handle": "e6076f99d30b40c9",
        # terminated: the server is shutting down
        "hypercorn.asyncio.worker_context:WorkerContext.__init__": "b7912f7abc3ed26c",
    },
    "time_request_heads": {
        # wrapped: RawData feeds the parser; a complete head creates self.stream
        "hypercorn.protocol.h11:H11Protocol.handle": "51df1de21fe7b933",
        "hypercorn.protocol.h11:H11Protocol._handle_events": "e68f360a590f5328",
        "hypercorn.protocol.h11:H11Protocol.__init__": "52903fef0841d4f1",
        # turning to HTTP/2 raises out of H11Protocol.handle, caught here
        "hypercorn.protocol:ProtocolWrapper.handle": "e6076f99d30b40c9",
        # send(Closed()) closes the connection
        "hypercorn.asyncio.tcp_server:TCPServer.protocol_send": "002fc976be80cf4d",
    },
    "refuse_h2c": {
        # replaced (called as it was when http2 is on)
        "hypercorn.protocol.h11:H11Protocol._check_protocol": "102c89c9f13782e5",
        # it is called on every request before its stream is created
        "hypercorn.protocol.h11:H11Protocol._handle_events": "e68f360a590f5328",
        # wrapped: the refusal is raised through it
        "hypercorn.protocol:ProtocolWrapper.handle": "e6076f99d30b40c9",
        "hypercorn.asyncio.tcp_server:TCPServer.protocol_send": "002fc976be80cf4d",
    },
    "bound_websocket_messages": {
        # replaced: the message assembly (a change upstream would be lost)
        "hypercorn.protocol.ws_stream:WSStream._handle_events": "6a43195dccede74a",
        # wrapped: Request spawns the app and sets app_put; Data feeds the connection;
        # StreamClosed tells the app; None from the app means it has ended
        "hypercorn.protocol.ws_stream:WSStream.handle": "232d3be5f06cc947",
        "hypercorn.protocol.ws_stream:WSStream.app_send": "61e31f3489083b6e",
        "hypercorn.protocol.ws_stream:WSStream.__init__": "344721d245b10329",
        # the app's receive() is app_queue.get; app_put is app_queue.put; send(None) at its end
        "hypercorn.asyncio.task_group:TaskGroup.spawn_app": "fcad556382884a4c",
        "hypercorn.asyncio.task_group:_handle": "c530c76f4dc1c3d4",
        # StreamClosed from a WebSocket stream closes the HTTP/1.1 connection
        "hypercorn.protocol.h11:H11Protocol._maybe_recycle": "322d7f2cd2e1a13e",
        # what tells an unfinished message (or frame) apart: _proto, _frame_decoder (header,
        # buffer), _message_decoder (opcode)
        "wsproto.connection:Connection.__init__": "414822be879c4d48",
        "wsproto.frame_protocol:FrameProtocol.__init__": "8e82de6bc57b47a0",
        "wsproto.frame_protocol:FrameDecoder.__init__": "cbd7e53e691a1d70",
        "wsproto.frame_protocol:FrameDecoder.process_buffer": "88275c64a5e55ffc",
        "wsproto.frame_protocol:MessageDecoder.process_frame": "a9a819410ba385e7",
    },
    "end_ping_loops_at_close": {
        # replaced: the ping loop
        "hypercorn.protocol.ws_stream:WSStream._send_pings": "6453ffd2a36295b1",
        # spawned at the accept, in the connection's task group
        "hypercorn.protocol.ws_stream:WSStream._accept": "190682be0674e88a",
        # wrapped: StreamClosed sets closed
        "hypercorn.protocol.ws_stream:WSStream.handle": "232d3be5f06cc947",
        "hypercorn.protocol.ws_stream:WSStream._send_wsproto_event": "1f65dd34f709609c",
    },
    "wait_for_h2_window": {
        # replaced: pop; push waits on _paused, which pop (and close) set
        "hypercorn.protocol.h2:StreamBuffer": "b7326121a28067f2",
        "hypercorn.protocol.h2:BUFFER_LOW_WATER": "fa7fb97b623cf749",
        # pops at most the peer's window (0 when it is closed)
        "hypercorn.protocol.h2:H2Protocol._send_data": "09bf6b1d84afd447",
    },
}


def changed_code() -> list[str]:
    """What differs from :data:`PATCHED_CODE` in the installed packages, one line per piece of
    code, naming the fix that depends on it (empty: every fix applies to what it was written for)."""
    return patching.changed_code(PATCHED_CODE, __name__)


# --- bound_websocket_messages --------------------------------------------------------------------

#: WebSocket close codes (RFC 6455) of a refused message.
MESSAGE_TOO_BIG = 1009  # over its path's limit: the message itself is the problem
TRY_AGAIN_LATER = 1013  # no room in the server's budget: the server is busy, the message may be fine
POLICY_VIOLATION = 1008  # its bytes stopped coming for body_timeout seconds
#: The limit of a path no mount names (hypercorn's ``websocket_max_message_size`` by default).
DEFAULT_MESSAGE_BYTES = 64 * 1024 * 1024
#: The key of a ``websocket.receive`` message, while in the app's queue, that says how many
#: budget bytes it holds (taken out before the app sees the message).
_HELD = "sandbox.held"


def _size(data: str | bytes) -> int:
    """A message part's size in bytes (a text part's UTF-8 length, without encoding ASCII)."""
    if isinstance(data, str) and not data.isascii():
        return len(data.encode("utf-8", "surrogatepass"))
    return len(data)


class _Assembly:
    """The incoming side of one WebSocket: the message being assembled, the budget it and the
    messages waiting in the app's queue hold, and the stall timer."""

    __slots__ = ("budget", "busy", "chunks", "held", "last", "length", "limit", "queued", "refused", "stall", "timer")

    def __init__(self, limit: int, budget: ByteBudget | None, stall: float | None) -> None:
        self.limit = min(limit, budget.total) if budget is not None else limit
        self.budget = budget
        self.stall = stall
        self.chunks: list[str | bytes] = []
        self.length = 0  # bytes of the message being assembled
        self.held = 0  # budget bytes it holds
        self.queued = 0  # budget bytes of messages in the app's queue
        self.busy = False  # the reader is handling bytes (or waiting for room, or for the app)
        self.last = 0.0  # when bytes last came
        self.timer: asyncio.TimerHandle | None = None
        self.refused: int | None = None  # the close code, once a message was refused

    async def add(self, data: str | bytes) -> tuple[int, str] | None:
        """One more part of the message; the close code and reason when it is refused."""
        size = _size(data)
        if self.length + size > self.limit:
            return MESSAGE_TOO_BIG, f"Message larger than {self.limit} bytes"
        if self.budget is not None and size:
            try:
                await self.budget.take(size)
            except SandboxError:
                return TRY_AGAIN_LATER, "Server busy: too many incoming bytes held; retry later"
            self.held += size
        self.chunks.append(data)
        self.length += size
        return None

    def finish(self) -> dict[str, Any]:
        """The complete message as the app receives it; what it holds moves to the queue."""
        chunks = self.chunks
        if len(chunks) == 1:
            data = chunks[0]
        elif chunks and isinstance(chunks[0], str):
            data = "".join(chunks)  # type: ignore[arg-type]
        else:
            data = b"".join(chunks)  # type: ignore[arg-type]
        self.chunks = []
        self.length = 0
        text = isinstance(data, str)
        message: dict[str, Any] = {
            "type": "websocket.receive",
            "bytes": None if text else data,
            "text": data if text else None,
        }
        if self.held:
            message[_HELD] = self.held
            self.queued += self.held
            self.held = 0
        return message

    def taken(self, message: Any) -> None:
        """The app took ``message`` from its queue: what it held goes back to the budget."""
        held = message.pop(_HELD, 0) if isinstance(message, dict) else 0
        if held and self.budget is not None:
            self.queued -= held
            self.budget.give(held)

    def drop(self) -> None:
        """The socket is closing: the message being assembled goes, with what it holds."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        dropped = self.length
        self.chunks = []
        self.length = 0
        if self.held and self.budget is not None:
            self.budget.give(self.held)
        self.held = 0
        memory.trim_after(dropped)

    def release_queued(self) -> None:
        """The app has ended: the messages it never took give back what they hold."""
        if self.queued and self.budget is not None:
            self.budget.give(self.queued)
        self.queued = 0


def _mid_message(stream: Any, assembly: _Assembly) -> bool:
    """Whether part of a message (or of a frame) has come and the rest has not."""
    if assembly.length or assembly.chunks:
        return True
    proto = stream.connection._proto
    decoder = proto._frame_decoder
    return decoder.header is not None or len(decoder.buffer) > 0 or proto._message_decoder.opcode is not None


@_once
def bound_websocket_messages() -> None:
    """Incoming WebSocket messages are bounded: by their path's limit, by the server's budget of
    incoming bytes, and in time (:class:`WebsocketIntake`; see the module's docstring;
    docs/hypercorn-issues.md, 7). Replaces ``WSStream._handle_events`` (the message assembly)
    and wraps ``WSStream.handle`` (set-up at the handshake, the stall timer around incoming
    bytes, release at the close) and ``WSStream.app_send`` (release when the app ends). Shown by
    the tests of tests/core/test_websocket_messages.py."""
    from hypercorn.protocol import ws_stream
    from hypercorn.protocol.events import Body, Data, Request, StreamClosed
    from wsproto.connection import ConnectionState
    from wsproto.events import CloseConnection, Message, Ping

    handle = ws_stream.WSStream.handle
    app_send = ws_stream.WSStream.app_send

    def assembly_of(stream: Any) -> _Assembly:
        assembly: _Assembly | None = getattr(stream, "sandbox_assembly", None)
        if assembly is None:  # a stream set up before the fix, or a server without our config
            limit = stream.config.websocket_max_message_size
            assembly = stream.sandbox_assembly = _Assembly(limit, None, None)
        return assembly

    def set_up(stream: Any) -> None:
        """At the handshake: this path's limit, the server's budget, and the app queue's hook."""
        intake: WebsocketIntake | None = getattr(stream.config, "websocket_intake", None)
        path = stream.scope.get("path", "")
        if intake is None:
            assembly = _Assembly(stream.config.websocket_max_message_size, None, None)
        else:
            limit = intake.limits.get(path, stream.config.websocket_max_message_size)
            assembly = _Assembly(limit, intake.budget, intake.stall_timeout)
        stream.sandbox_assembly = assembly
        queue = getattr(stream.app_put, "__self__", None)
        if isinstance(queue, asyncio.Queue):  # the app's receive() pops from it: release there
            pop = queue._get

            def get() -> Any:
                message = pop()
                assembly.taken(message)
                return message

            setattr(queue, "_get", get)  # noqa: B010

    async def refuse(stream: Any, assembly: _Assembly, code: int, reason: str) -> None:
        """Close the socket over a message: the close frame, then the connection, at once."""
        if stream.closed or assembly.refused is not None:
            return
        assembly.refused = code
        log.warning("websocket.message_refused", path=stream.scope.get("path"), code=code, reason=reason)
        assembly.drop()
        await stream._send_wsproto_event(CloseConnection(code=code, reason=reason))
        await stream.send(StreamClosed(stream_id=stream.stream_id))

    def stalled(stream: Any, assembly: _Assembly) -> None:
        assembly.timer = None
        if stream.closed or assembly.refused is not None or assembly.stall is None:
            return
        if not _mid_message(stream, assembly):
            return
        loop = asyncio.get_running_loop()
        due = assembly.last + assembly.stall
        if assembly.busy or loop.time() < due:  # bytes came meanwhile, or the server is the slow one
            assembly.timer = loop.call_at(max(due, loop.time() + 0.1), stalled, stream, assembly)
            return
        reason = f"No bytes of the message for {assembly.stall:g} s"
        with contextlib.suppress(RuntimeError):  # the connection is ending already
            stream.task_group.spawn(refuse, stream, assembly, POLICY_VIOLATION, reason)

    def watch(stream: Any, assembly: _Assembly) -> None:
        """After incoming bytes: time the rest of an unfinished message."""
        if assembly.stall is None or stream.closed or assembly.refused is not None:
            return
        if not _mid_message(stream, assembly):
            if assembly.timer is not None:
                assembly.timer.cancel()
                assembly.timer = None
        elif assembly.timer is None:
            assembly.timer = asyncio.get_running_loop().call_at(
                assembly.last + assembly.stall, stalled, stream, assembly
            )

    async def _handle_events(self: Any) -> None:
        assembly = assembly_of(self)
        for event in self.connection.events():
            if isinstance(event, Message):
                refused = await assembly.add(event.data)
                if refused is not None:
                    await refuse(self, assembly, *refused)
                    return
                if event.message_finished:
                    await self.app_put(assembly.finish())
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))

    async def handle_ws(self: Any, event: Any) -> None:
        if isinstance(event, (Body, Data)) and not self.closed and getattr(self, "sandbox_assembly", None) is not None:
            assembly: _Assembly = self.sandbox_assembly
            loop = asyncio.get_running_loop()
            assembly.last = loop.time()
            assembly.busy = True
            try:
                await handle(self, event)
            finally:
                assembly.busy = False
                assembly.last = loop.time()  # a wait for room or for the app is not the client's
            watch(self, assembly)
            return
        if isinstance(event, StreamClosed):
            closing: _Assembly | None = getattr(self, "sandbox_assembly", None)
            if closing is not None:
                closing.drop()
                if closing.refused is not None and not self.closed and self.app_put is not None:
                    self.closed = True  # the app learns why: the code its message was refused with
                    await self.app_put({"type": "websocket.disconnect", "code": closing.refused})
                    return
        await handle(self, event)
        if isinstance(event, Request) and self.app_put is not None:
            set_up(self)

    async def app_send_ws(self: Any, message: Any) -> None:
        if message is None:  # the app has ended
            assembly = getattr(self, "sandbox_assembly", None)
            if assembly is not None:
                assembly.release_queued()
        await app_send(self, message)

    ws_stream.WSStream._handle_events = _handle_events  # type: ignore[method-assign]
    ws_stream.WSStream.handle = handle_ws  # type: ignore[method-assign]
    ws_stream.WSStream.app_send = app_send_ws  # type: ignore[method-assign]


#: Every fix, in the order :func:`apply` applies them.
FIXES: tuple[Callable[[], None], ...] = (
    release_idle_connections,
    linger_after_early_answer,
    time_request_heads,
    refuse_h2c,
    bound_websocket_messages,
    end_ping_loops_at_close,  # after bound_websocket_messages: it wraps WSStream.handle again
    wait_for_h2_window,
)
