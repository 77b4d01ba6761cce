"""Fixes to hypercorn (0.17-0.18) that the server applies before it serves; each is tested
(tests/core/test_connections.py, tests/core/test_websocket_messages.py) against the installed
hypercorn, so an upgrade that changes the code patched here fails the tests instead of silently
losing a fix. A fix written as a function of its own (:func:`bound_websocket_messages`) lists the
code it patches in :data:`PATCHED_CODE`, checked by hash: a change there fails a test naming it.

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
* **Incoming WebSocket messages are bounded** (:func:`bound_websocket_messages`). Hypercorn
  assembles each message in memory before the app sees it, up to one limit for the whole server,
  forever, and (past that limit) kept appending what a client sent after its 1009. Now a message
  is assembled within its path's own limit (``ServerMount.websocket_max_message_bytes``; over it,
  1009), counted against the server's budget of incoming bytes until the app has taken it
  (:class:`sandbox_core.intake.ByteBudget`; no room within the budget's wait, 1013), and one
  whose bytes stop coming for ``body_timeout`` seconds is given up (1008). Each of those closes
  the connection at once (the app gets ``websocket.disconnect`` with that code) and gives back
  what the message held.
* **HTTP/2 sends wait for the peer's flow-control window.** Hypercorn's per-stream send buffer
  let its producer go on whenever the sender popped less than the low-water mark, which it also
  does when the window is 0 (it pops nothing): a client that stops sending WINDOW_UPDATE made
  the buffer, and the server's memory, grow without bound. The producer now waits until the
  buffer itself is below the low-water mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import memory
from .errors import SandboxError
from .intake import ByteBudget

log = structlog.get_logger("sandbox.server")

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
    bound_websocket_messages()  # before the ping fix below, which wraps WSStream.handle again

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


# --- the shape of the code the fixes patch ------------------------------------------------------

#: For each fix written as a function of its own, the third-party code it replaces, wraps or
#: relies on, by a hash of that code as :func:`ast.unparse` writes it (:func:`code_hash`: comments
#: and layout do not count). tests/core/test_websocket_messages.py compares them with the installed
#: packages: an upgrade that changes any of it fails there, naming the fix to review (then update
#: the hash).
PATCHED_CODE: dict[str, dict[str, str]] = {
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
        "wsproto.connection:Connection.__init__": "234ba32033417398",
        "wsproto.frame_protocol:FrameProtocol.__init__": "8e82de6bc57b47a0",
        "wsproto.frame_protocol:FrameDecoder.__init__": "cbd7e53e691a1d70",
        "wsproto.frame_protocol:FrameDecoder.process_buffer": "88275c64a5e55ffc",
        "wsproto.frame_protocol:MessageDecoder.process_frame": "a9a819410ba385e7",
    },
}


def code_hash(name: str) -> str | None:
    """A hash of the syntax tree of ``module:Qualified.name`` as the installed package has it
    (read from its source file, so a patch in place does not hide it); None when absent."""
    import ast
    import hashlib
    import importlib.util

    module, _, qualname = name.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    with open(spec.origin, encoding="utf-8") as fh:
        body: list[ast.stmt] = ast.parse(fh.read()).body
    node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef | None = None
    for part in qualname.split("."):
        for candidate in body:
            if isinstance(candidate, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and candidate.name == part:
                node = candidate
                break
        else:
            return None
        body = node.body
    if node is None:
        return None
    return hashlib.sha256(ast.unparse(node).encode()).hexdigest()[:16]


def changed_code() -> list[str]:
    """What differs from :data:`PATCHED_CODE` in the installed packages, one line per piece of
    code, naming the fix that depends on it (empty: every fix applies to what it was written for)."""
    problems = []
    for fix, pieces in PATCHED_CODE.items():
        for name, expected in pieces.items():
            found = code_hash(name)
            if found != expected:
                what = "is gone" if found is None else f"has changed (hash {found}, expected {expected})"
                problems.append(f"hypercorn_fixes.{fix}: {name} {what}: review the fix against it")
    return problems


# --- bound_websocket_messages ----------------------------------------------------------------

#: WebSocket close codes (RFC 6455) of a refused message.
MESSAGE_TOO_BIG = 1009  # over its path's limit: the message itself is the problem
TRY_AGAIN_LATER = 1013  # no room in the server's budget: the server is busy, the message may be fine
POLICY_VIOLATION = 1008  # its bytes stopped coming for body_timeout seconds
#: The limit of a path no mount names (hypercorn's ``websocket_max_message_size`` by default).
DEFAULT_MESSAGE_BYTES = 64 * 1024 * 1024
#: The key of a ``websocket.receive`` message, while in the app's queue, that says how many
#: budget bytes it holds (taken out before the app sees the message).
_HELD = "sandbox.held"


@dataclass(frozen=True)
class WebsocketIntake:
    """One server's limits on incoming WebSocket messages; hypercorn's config carries it as
    ``websocket_intake`` (:class:`Config`), so two servers in one process keep their own."""

    #: the server's budget of incoming bytes (None: none)
    budget: ByteBudget | None = None
    #: a message whose bytes stop coming for this long closes the socket (None: never)
    stall_timeout: float | None = None
    #: path -> the largest message (bytes; a text message's UTF-8 length)
    limits: Mapping[str, int] = field(default_factory=dict)


@functools.cache
def _config_class() -> type[Any]:
    from hypercorn.config import Config as HypercornConfig

    class Config(HypercornConfig):
        """Hypercorn's config with the server's own WebSocket limits."""

        websocket_intake: WebsocketIntake | None = None

    return Config


def make_config(intake: WebsocketIntake) -> Any:
    """A hypercorn config for one server, carrying ``intake``."""
    config = _config_class()()
    config.websocket_intake = intake
    return config


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


def bound_websocket_messages() -> None:
    """The fix (see the module's docstring): replaces ``WSStream._handle_events`` (the message
    assembly) and wraps ``WSStream.handle`` (set-up at the handshake, the stall timer around
    incoming bytes, release at the close) and ``WSStream.app_send`` (release when the app
    ends). Applied by :func:`apply`."""
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
