"""The terminal endpoint (contract section a11): ``GET /ws/pty?sessionId=…&cols=80&rows=24``.

A WebSocket to the session's terminal, reached only through the registry's ``terminals``
operations (``attach``, a stream; ``write`` and ``resize``)::

    server -> client  binary  the replay (the terminal's recent output; only when there is some)
                      text    {"type":"ready"}
                      binary  terminal output, live
                      text    {"type":"error","message":"..."}   (a bad control message; a failure)
    client -> server  binary  keys
                      text    {"type":"resize","cols":100,"rows":30}

Before the upgrade, a missing ``sessionId`` is 400 ``sessionId query parameter required`` and
``cols``/``rows`` that are not positive integers are 400 ``Invalid dimensions: cols and rows
must be positive`` (plain text). A text frame that is not a JSON object is answered with the
error ``Invalid control message`` (so is one nested too deeply to read, or with ``NaN`` or
``Infinity``, which are not JSON); a resize with bad sizes (``1e400`` included) with ``Invalid
dimensions: cols and rows must be positive``; a control message of another type is ignored (as upstream). The
``shell`` parameter is accepted and ignored: the terminal is always ``bash``.

The socket closes with 1000 when the terminal ends (its shell exited, or its session was
deleted), with 1011 after an error message when the attach failed or this reader was dropped
for taking no output for the terminal's ``stalled_reader_s``, and with 1001 when the server
shuts down. Output is sent one frame at a time, each awaited: a client that does not read
holds at most one frame here (the terminal service pauses the terminal, then drops the
reader; see ``sandbox_services.terminals``). Keys are written in order, each once the terminal
has taken the one before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import structlog

from sandbox_core.contract.models.terminals import TerminalData, TerminalExit, TerminalReplay
from sandbox_core.errors import SandboxError
from sandbox_core.registry import ServiceRegistry

log = structlog.get_logger("sandbox.ws.pty")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PATH = "/ws/pty"
MISSING_SESSION = "sessionId query parameter required"
INVALID_DIMENSIONS = "Invalid dimensions: cols and rows must be positive"
TOO_LARGE = "Invalid dimensions: cols and rows must be at most 65535"
INVALID_CONTROL = "Invalid control message"
MAX_DIMENSION = 65535
READY = '{"type":"ready"}'
#: How long a close frame may wait for a client that does not read.
CLOSE_WAIT_S = 1.0


def _error(message: str) -> str:
    return json.dumps({"type": "error", "message": message})


def _reason(text: str) -> str:
    """A close reason: at most 123 bytes of UTF-8 (the protocol's limit)."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode("utf-8", "ignore") + "..."


def _query(scope: Scope) -> dict[str, list[str]]:
    raw = scope.get("query_string", b"")
    text = raw.decode("latin-1") if isinstance(raw, (bytes, bytearray)) else str(raw)
    return parse_qs(text, keep_blank_values=True, errors="replace")


def _dimension(value: str | None, default: int) -> int:
    """A size from the query: absent or empty is the default; else a positive integer."""
    if not value:
        return default
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise ValueError(INVALID_DIMENSIONS)
    if int(value) > MAX_DIMENSION:
        raise ValueError(TOO_LARGE)
    return int(value)


def _size(value: object) -> int | None:
    """A size from a resize message: a positive whole number (JSON's 80 or 80.0), else None
    (``1e400``, which JSON reads as infinity, too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    if value < 1:
        return None
    return int(value)


def _reject_constant(name: str) -> object:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (Python's reader takes them)."""
    raise ValueError(f"{name} is not JSON")


def _parse_control(text: str) -> object:
    """A control message's JSON value; None when it is not JSON (or nests too deeply to read)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None


async def _deny(scope: Scope, send: Send, status: int, text: str) -> None:
    """Refuse the upgrade with an HTTP answer (plain text) where the server can send one."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"access-control-allow-origin", b"*")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": text.encode()})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": _reason(text)})


class _Closed(Exception):
    """The socket is gone (a send failed, or it was closed)."""


class _Connection:
    """One open terminal socket."""

    def __init__(
        self,
        registry: ServiceRegistry,
        receive: Receive,
        send: Send,
        session_id: str,
        cols: int,
        rows: int,
        replay_bytes: int | None,
    ) -> None:
        self.registry = registry
        self.receive = receive
        self._send = send
        self.session_id = session_id
        self.cols = cols
        self.rows = rows
        self.replay_bytes = replay_bytes
        self.closed = False
        self.close_code: int | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._shutdown: tuple[int, str] | None = None

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """One message, sends in order; a failed send means the socket is gone."""
        if self.closed:
            raise _Closed
        async with self._lock:
            try:
                await self._send(message)
            except Exception as exc:  # the server's own error for a connection that has gone
                self.closed = True
                raise _Closed from exc

    async def send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame (once; waiting at most :data:`CLOSE_WAIT_S` for the client)."""
        if self.closed:
            return
        with contextlib.suppress(_Closed, TimeoutError):
            await asyncio.wait_for(
                self.send({"type": "websocket.close", "code": code, "reason": _reason(reason)}), CLOSE_WAIT_S
            )
        self.closed = True
        self.close_code = code

    async def fail(self, message: str) -> None:
        with contextlib.suppress(_Closed, TimeoutError):
            await asyncio.wait_for(self.send_text(_error(message)), CLOSE_WAIT_S)
        await self.close(1011, message)

    def shut(self, code: int, reason: str) -> None:
        """Close from outside (the server shuts down): stop both directions, then close."""
        self._shutdown = (code, reason)
        for task in self._tasks:
            task.cancel()

    async def run(self) -> None:
        params: dict[str, object] = {"sessionId": self.session_id, "cols": self.cols, "rows": self.rows}
        if self.replay_bytes is not None:
            params["replayBytes"] = self.replay_bytes
        try:
            stream = self.registry.stream("terminals", "attach", params)
        except SandboxError as exc:
            await self.fail(exc.message)
            return
        try:
            try:
                first = await anext(stream)
            except SandboxError as exc:
                await self.fail(exc.message)
                return
            except StopAsyncIteration:
                await self.fail("The terminal ended before it was ready")
                return
            try:
                if isinstance(first, TerminalReplay) and first.data:
                    await self.send({"type": "websocket.send", "bytes": first.data})
                await self.send_text(READY)
            except _Closed:
                return
            log.debug("pty.ready", session_id=self.session_id, replay_bytes=len(getattr(first, "data", b"")))
            self._tasks = [
                asyncio.ensure_future(self._output(stream)),
                asyncio.ensure_future(self._keys()),
            ]
            if self._shutdown is not None:  # the server began to shut down while this one attached
                self.shut(*self._shutdown)
            try:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in self._tasks:
                    task.cancel()
                for task in self._tasks:
                    with contextlib.suppress(asyncio.CancelledError, _Closed):
                        await task
            if self._shutdown is not None:
                await self.close(*self._shutdown)
        finally:
            await stream.aclose()

    async def _output(self, stream: AsyncGenerator[object, None]) -> None:
        """Terminal output to the socket, one frame at a time; the end closes the socket."""
        try:
            async for event in stream:
                if isinstance(event, TerminalData):
                    await self.send({"type": "websocket.send", "bytes": event.data})
                elif isinstance(event, TerminalExit):
                    await self.close(1000, event.reason)
                    return
        except SandboxError as exc:
            await self.fail(exc.message)
            return
        await self.close(1000, "Terminal exited")

    async def _keys(self) -> None:
        """Messages from the client: keys (binary) and control messages (text), in order."""
        while True:
            message = await self.receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                self.closed = True
                self.close_code = message.get("code")
                return
            if kind != "websocket.receive":
                continue
            data = message.get("bytes")
            if data is not None:
                try:
                    await self.registry.call("terminals", "write", {"sessionId": self.session_id, "data": data})
                except SandboxError as exc:  # the terminal ended: the output side closes the socket
                    log.debug("pty.write_failed", session_id=self.session_id, error=exc.message)
            else:
                await self._control(message.get("text") or "")

    async def _control(self, text: str) -> None:
        control = _parse_control(text)
        if not isinstance(control, dict):
            await self.send_text(_error(INVALID_CONTROL))
            return
        if control.get("type") != "resize":
            log.info("pty.control_ignored", session_id=self.session_id, control_type=str(control.get("type"))[:64])
            return
        cols, rows = _size(control.get("cols")), _size(control.get("rows"))
        if cols is None or rows is None:
            await self.send_text(_error(INVALID_DIMENSIONS))
            return
        if cols > MAX_DIMENSION or rows > MAX_DIMENSION:
            await self.send_text(_error(TOO_LARGE))
            return
        try:
            await self.registry.call("terminals", "resize", {"sessionId": self.session_id, "cols": cols, "rows": rows})
        except SandboxError as exc:
            log.debug("pty.resize_failed", session_id=self.session_id, error=exc.message)


class PtyEndpoint:
    """The ASGI app of ``/ws/pty`` for one server: serves terminal sockets and, with
    :meth:`aclose` (the mount's ``aclose``), closes them all when the server shuts down."""

    def __init__(self, registry: ServiceRegistry, *, replay_bytes: int | None = None) -> None:
        self.registry = registry
        self.replay_bytes = replay_bytes
        self._connections: set[_Connection] = set()
        self._closing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        query = _query(scope)
        session_id = (query.get("sessionId") or [""])[0]
        if not session_id:
            await _deny(scope, send, 400, MISSING_SESSION)
            return
        try:
            cols = _dimension((query.get("cols") or [""])[0], 80)
            rows = _dimension((query.get("rows") or [""])[0], 24)
        except ValueError as exc:
            await _deny(scope, send, 400, str(exc))
            return
        if self._closing:
            await _deny(scope, send, 503, "The server is shutting down")
            return
        await send({"type": "websocket.accept"})
        conn = _Connection(self.registry, receive, send, session_id, cols, rows, self.replay_bytes)
        self._connections.add(conn)
        log.debug("pty.opened", session_id=session_id, cols=cols, rows=rows)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            log.debug("pty.closed", session_id=session_id, code=conn.close_code)

    async def aclose(self) -> None:
        """Close every open terminal socket (1001): the server is shutting down."""
        self._closing = True
        for conn in list(self._connections):
            conn.shut(1001, "Server shutting down")
