"""The ws transport's client side (httpx + httpx-ws): every call of one client over one WebSocket.

* One socket per client, opened on first use and shared by every call; concurrent first calls
  share one connection attempt (bounded by ``connect_timeout_s``). The token goes on the
  upgrade as ``Authorization: Bearer``.
* A unary call waits at most the client's ``timeout``; a stream fails when no event came for
  ``stream_idle_timeout_s`` (each event resets it). Either way, and when the caller is
  cancelled or closes a stream early, a ``cancel`` frame ends the request on the server.
* When the socket closes, from either side, every pending call fails with
  :class:`~sandbox_core.errors.TransportError` and every open stream raises it; the next call
  reconnects. The socket is closed ``idle_disconnect_s`` after the last call ended.
* Error answers become the typed exceptions of :mod:`sandbox_core.errors`, as over http.
* Bounded: an incoming message over ``max_frame_bytes`` closes the socket (1009); the events a
  stream's reader has not taken yet are held up to ``stream_buffer_bytes``, then the client
  stops reading the socket until that reader takes some (so the server slows the producer).
  A reader that awaits another call of the same client while its own stream holds that much
  therefore waits for that call's timeout: read streams promptly, or use a second client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpcore
import httpx
import msgspec
import wsproto
import wsproto.events
from httpx_ws import (
    AsyncWebSocketSession,
    HTTPXWSException,
    WebSocketDisconnect,
    WebSocketNetworkError,
    WebSocketUpgradeError,
    aconnect_ws,
)

from sandbox_core.contract.routes import request_for
from sandbox_core.errors import ErrorCode, SandboxError, TransportError, error_from_code, upgrade_refused
from sandbox_core.transport import ClientContext

from .frames import CancelFrame, OutFrame, RequestFrame
from .settings import WsSettings

#: Bytes read from the socket at once.
READ_BYTES = 256 * 1024

_encoder = msgspec.json.Encoder()
_frame_decoder = msgspec.json.Decoder(OutFrame)
_decoder = msgspec.json.Decoder()


class MessageTooBig(HTTPXWSException):
    """The server sent a message over the client's ``max_frame_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a message of more than {limit} bytes (transports.ws.max_frame_bytes) arrived")
        self.size, self.limit = size, limit


class _EndOfStream(Exception):
    pass


class _Session(AsyncWebSocketSession):
    """httpx-ws's session, receiving as its documentation says: ``max_message_size_bytes`` is the
    largest message accepted (over it, the socket is closed with 1009), and a message that
    arrives in parts is joined once (httpx-ws joined the parts one by one, quadratic in their
    number, and held any size). It overrides a private method of httpx-ws: :data:`PATCHED_CODE`
    lists the httpx-ws code it was written against."""

    async def _background_receive(self, max_bytes: int) -> None:
        parts: list[Any] = []
        size = 0
        try:
            while not self._should_close.is_set():
                data = await self.stream.read(READ_BYTES)
                if not data:
                    raise _EndOfStream
                self.connection.receive_data(data)
                for event in self.connection.events():
                    if isinstance(event, wsproto.events.Ping):
                        pong = self.connection.send(event.response())
                        async with self._write_lock:
                            await self.stream.write(pong)
                        continue
                    if isinstance(event, wsproto.events.Pong):
                        self._ping_manager.ack(event.payload)
                        continue
                    if isinstance(event, wsproto.events.Message):
                        size += len(event.data)
                        if size > max_bytes:
                            await self.close(1009, "Message too big")
                            await self._send_event.send(MessageTooBig(size, max_bytes))
                            return
                        parts.append(event.data)
                        if not event.message_finished:
                            continue
                        whole = parts[0] if len(parts) == 1 else type(parts[0])().join(parts)
                        parts.clear()
                        size = 0
                        await self._send_event.send(type(event)(data=whole))
                        continue
                    if isinstance(event, wsproto.events.CloseConnection):
                        self._should_close.set()
                    await self._send_event.send(event)
        except (httpcore.ReadError, httpcore.WriteError, _EndOfStream):
            await self.close(1011, "Stream error")
            await self._send_event.send(WebSocketNetworkError())


#: For each override of httpx-ws internals, the httpx-ws code it replaces or relies on, by a hash
#: of that code (:func:`sandbox_core.patching.code_hash`: comments, layout and docstrings do not
#: count). tests/ws/test_httpx_ws_override.py compares them with the installed httpx-ws: an
#: upgrade that changes any of it fails there, naming the override to review (then update the hash).
PATCHED_CODE: dict[str, dict[str, str]] = {
    "_Session._background_receive": {
        # replaced: the receiving loop
        "httpx_ws._api:AsyncWebSocketSession._background_receive": "99e91f25d8d20a25",
        # starts it in the session's task group with max_message_size_bytes as its argument
        # (read here as the largest message), and creates _send_event, the queue receive() reads
        "httpx_ws._api:AsyncWebSocketSession.__asynccontextmanager__": "ab1e3febd0f40f57",
        # stream, connection, _should_close, _write_lock, _ping_manager
        "httpx_ws._api:AsyncWebSocketSession.__init__": "8834f5f5643362b0",
        "httpx_ws._ping:AsyncPingManager": "8a4eb06249c82571",
        # close(code, reason) sends the close frame and closes the stream
        "httpx_ws._api:AsyncWebSocketSession.close": "be707d4932d99f99",
        # raises an exception found in the queue (MessageTooBig, WebSocketNetworkError);
        # CloseConnection becomes WebSocketDisconnect
        "httpx_ws._api:AsyncWebSocketSession.receive": "4dfed63f3d129fa7",
        # session_class is built with max_message_size_bytes
        "httpx_ws._api:aconnect_ws": "5600ed34c4109ca9",
        "httpx_ws._api:AsyncWebSocketClient.__init__": "93b85f079c463253",
        "httpx_ws._api:AsyncWebSocketClient.connect": "21aac5a0ed74f564",
    },
}


def ws_url(url: str) -> str:
    """The socket's URL (http scheme, as httpx wants it): ``/ws`` under the URL's path, unless
    the URL names the socket already (``.../ws``)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def error_from_body(status: int, body: Any) -> SandboxError:
    """The typed exception of an error answer (the contract's body), as the http client does."""
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        details = body.get("context") if isinstance(body.get("context"), dict) else {}
        return error_from_code(body["code"], str(body.get("message", "")), details, status=status)
    text = repr(body)[:200]
    return TransportError(ErrorCode.RPC_TRANSPORT_ERROR, f"HTTP {status}: {text}", {"status": status}, status=status)


#: Where :func:`_keep_refusal` puts the body of a refused upgrade (``response.extensions``).
REFUSAL_BODY = "sandbox.refusal_body"
#: The most of a refusal's body that is read.
REFUSAL_BODY_MAX = 64 * 1024


async def _keep_refusal(response: httpx.Response) -> None:
    """An upgrade answered with a status instead: keep (the start of) its body, which the
    server's error is in (httpx-ws raises without reading it)."""
    if response.status_code == 101:
        return
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= REFUSAL_BODY_MAX:
            break
    response.extensions[REFUSAL_BODY] = bytes(body[:REFUSAL_BODY_MAX])


def _transport_error(message: str, **details: Any) -> TransportError:
    return TransportError(ErrorCode.RPC_TRANSPORT_ERROR, message, details)


class _StreamBuffer:
    """What arrived for one stream and its reader has not taken yet, bounded by size: the
    connection's reader waits in :meth:`put` while it holds ``limit`` or more."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.deque[tuple[str, Any]] = collections.deque()
        self.size = 0
        self.abandoned = False
        self._item: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    async def put(self, kind: str, value: Any, size: int) -> None:
        while self.size >= self.limit and not self.abandoned:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        self.put_nowait(kind, value, size)

    def put_nowait(self, kind: str, value: Any, size: int = 0) -> None:
        if self.abandoned:
            return
        self.items.append((kind, value))
        self.size += size
        if self._item is not None and not self._item.done():
            self._item.set_result(None)

    async def get(self, idle_s: float) -> tuple[str, Any]:
        """The next item; TimeoutError when none came for ``idle_s`` seconds."""
        if not self.items:
            self._item = asyncio.get_running_loop().create_future()
            async with asyncio.timeout(idle_s):
                await self._item
        kind, value = self.items.popleft()
        if kind == "data":
            self.size -= len(value)
            if self.size < self.limit and self._room is not None and not self._room.done():
                self._room.set_result(None)
        return kind, value

    def abandon(self) -> None:
        """The reader is gone: nothing more is kept, and the connection's reader never waits."""
        self.abandoned = True
        self.items.clear()
        self.size = 0
        if self._room is not None and not self._room.done():
            self._room.set_result(None)


class _Pending:
    """A request waiting for its answer: a unary call's future, or a stream's buffer."""

    __slots__ = ("future", "stream")

    def __init__(self, future: asyncio.Future[OutFrame] | None = None, stream: _StreamBuffer | None = None) -> None:
        self.future = future
        self.stream = stream

    def fail(self, error: SandboxError) -> None:
        if self.future is not None:
            if not self.future.done():
                self.future.set_exception(error)
        elif self.stream is not None:
            self.stream.put_nowait("error", error)


class _Connection:
    """One socket: an owner task holds httpx-ws's session and reads frames into the pending calls."""

    def __init__(self, transport: WsClientTransport) -> None:
        self.transport = transport
        self.pending: dict[str, _Pending] = {}
        self.ws: _Session | None = None
        self.open = False
        self.error: SandboxError | None = None
        self.task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._idle: asyncio.TimerHandle | None = None

    def next_id(self) -> str:
        return f"py_{next(self._ids)}"

    async def start(self) -> None:
        settings = self.transport.settings
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._run(ready))
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await asyncio.shield(ready)
        except TimeoutError:
            self.task.cancel()
            raise _transport_error(
                f"WebSocket connection timeout after {settings.connect_timeout_s} s: {self.transport.url}",
                url=self.transport.url,
            ) from None
        except BaseException:
            self.task.cancel()
            raise

    async def _run(self, ready: asyncio.Future[None]) -> None:
        transport = self.transport
        error: SandboxError = _transport_error("WebSocket closed", url=transport.url)
        try:
            async with aconnect_ws(
                transport.url,
                transport.http(),
                headers=transport.headers,
                session_class=_Session,
                max_message_size_bytes=transport.settings.max_frame_bytes,
                keepalive_ping_interval_seconds=None,  # the server pings; a slow stream reader must not be cut off
            ) as ws:
                self.ws = ws
                self.open = True
                ready.set_result(None)
                error = await self._read(ws)
        except WebSocketUpgradeError as exc:
            error = self._refused(exc.response)
        except asyncio.CancelledError:
            error = self.error or _transport_error("WebSocket closed by the client", url=transport.url)
        except BaseException as exc:  # anyio wraps errors in groups; none may escape the owner
            error = _transport_error(f"WebSocket failed: {_describe(exc)}", url=transport.url)
        finally:
            self.open = False
            self.error = self.error or error
            if not ready.done():
                ready.set_exception(self.error)
            self._fail_all(self.error)
            transport._lost(self)

    def _refused(self, response: httpx.Response) -> SandboxError:
        """The error of a refused upgrade, from its status and the body :func:`_keep_refusal` kept."""
        body = response.extensions.get(REFUSAL_BODY, b"")
        return upgrade_refused(self.transport.url, "ws", response.status_code, body)

    async def _read(self, ws: _Session) -> SandboxError:
        """Frames to their pending calls until the socket closes; returns why it closed."""
        url = self.transport.url
        decode = _frame_decoder.decode
        pending = self.pending
        try:
            while True:
                event = await ws.receive()
                if not isinstance(event, (wsproto.events.TextMessage, wsproto.events.BytesMessage)):
                    continue
                try:
                    frame = decode(event.data)
                except (msgspec.DecodeError, RecursionError):
                    continue  # not a frame of the contract (or too deep to read): nobody waits for it
                del event
                if frame.id is None:
                    continue
                call = pending.get(str(frame.id))
                if call is None:
                    continue  # a request that was cancelled or timed out
                if frame.type == "stream":
                    if call.stream is not None and frame.data is not None:
                        await call.stream.put("data", frame.data, len(frame.data))
                elif frame.type == "response":
                    del pending[str(frame.id)]
                    if call.future is not None:
                        if not call.future.done():
                            call.future.set_result(frame)
                    elif call.stream is not None:
                        call.stream.put_nowait("end", frame)
                elif frame.type == "error":
                    del pending[str(frame.id)]
                    call.fail(
                        error_from_code(
                            frame.code or ErrorCode.INTERNAL_ERROR,
                            frame.message or "",
                            frame.context or {},
                            status=frame.status or None,
                        )
                    )
        except WebSocketDisconnect as exc:
            return _transport_error(
                f"WebSocket closed by the server: {exc.code} {exc.reason or ''}".rstrip(),
                url=url,
                code=exc.code,
                reason=exc.reason,
            )
        except MessageTooBig as exc:
            return _transport_error(f"WebSocket closed: {exc}", url=url, limit=exc.limit)
        except HTTPXWSException as exc:
            return _transport_error(f"WebSocket failed: {_describe(exc)}", url=url)

    def _fail_all(self, error: SandboxError) -> None:
        pending = list(self.pending.values())
        self.pending.clear()
        for call in pending:
            call.fail(error)
        self.busy()

    async def send(self, frame: bytes) -> None:
        ws = self.ws
        if not self.open or ws is None:
            raise self.error or _transport_error("WebSocket closed", url=self.transport.url)
        try:
            await ws.send_text(frame.decode())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _transport_error(f"WebSocket send failed: {_describe(exc)}", url=self.transport.url)
            self.close(error)
            raise error from None

    def cancel(self, rid: str) -> None:
        """Tell the server to end request ``rid`` (without waiting: the caller may be cancelled)."""
        self.pending.pop(rid, None)
        if self.open:
            self.transport.spawn(self.send(_encoder.encode(CancelFrame(id=rid))))

    # idle disconnect ----------------------------------------------------------------------------

    def busy(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def idle(self) -> None:
        """A call ended: with none left, close the socket after ``idle_disconnect_s``."""
        if self.pending or not self.open:
            return
        self.busy()
        self._idle = asyncio.get_running_loop().call_later(self.transport.settings.idle_disconnect_s, self._idle_close)

    def _idle_close(self) -> None:
        self._idle = None
        if not self.pending and self.open:
            self.close(_transport_error("WebSocket closed after being idle", url=self.transport.url))

    def close(self, error: SandboxError) -> None:
        """Close the socket: every pending call fails with ``error``."""
        self.open = False
        self.error = self.error or error
        self.busy()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._fail_all(self.error)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _with_query(path: str, query: Mapping[str, str] | None) -> str:
    return f"{path}?{urlencode(query)}" if query else path


class WsClientTransport:
    """The client side of the ws transport (see the module docstring)."""

    def __init__(self, ctx: ClientContext) -> None:
        self.settings: WsSettings = ctx.settings if ctx.settings is not None else WsSettings()
        self.url = ws_url(ctx.url)
        self.timeout = ctx.timeout
        self.headers = {"Authorization": f"Bearer {ctx.token}"} if ctx.token else {}
        self._http: httpx.AsyncClient | None = None
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closed = False

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.connect_timeout_s), event_hooks={"response": [_keep_refusal]}
            )
        return self._http

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background (kept until it ends; its failure is the connection's)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed cancel frame is the connection's failure, reported there

    async def connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.open:
            return conn
        if self._closed:
            raise _transport_error("The client is closed", url=self.url)
        attempt = self._connecting
        if attempt is None:  # the first caller starts the attempt; the others share it
            attempt = self._connecting = asyncio.ensure_future(self._connect())
            attempt.add_done_callback(self._attempt_done)
        return await asyncio.shield(attempt)

    async def _connect(self) -> _Connection:
        conn = _Connection(self)
        await conn.start()
        self._conn = conn
        return conn

    def _attempt_done(self, attempt: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: every caller got it

    def _lost(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close(_transport_error("The client is closed", url=self.url))
            if conn.task is not None:
                with contextlib.suppress(BaseException):
                    await conn.task
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def _frame(self, rid: str, service: str, operation: str, params: Mapping[str, Any]) -> tuple[Any, str, bytes]:
        route, method, path, query, values = request_for(service, operation, params)
        path = _with_query(path, query)
        body = values if values is not None else msgspec.UNSET
        return route, f"{method} {path}", _encoder.encode(RequestFrame(id=rid, method=method, path=path, body=body))

    async def call(self, service: str, operation: str, params: Mapping[str, Any]) -> Any:
        conn = await self.connection()
        rid = conn.next_id()
        route, what, frame = self._frame(rid, service, operation, params)
        future: asyncio.Future[OutFrame] = asyncio.get_running_loop().create_future()
        conn.pending[rid] = _Pending(future=future)
        conn.busy()
        answered = False
        try:
            async with asyncio.timeout(self.timeout):
                await conn.send(frame)
                del frame
                response = await future
            answered = True
        except TimeoutError:
            raise _transport_error(f"Request timeout after {self.timeout} s: {what}", url=self.url) from None
        finally:
            if not answered and rid in conn.pending:
                conn.cancel(rid)  # timed out or cancelled: the server ends the request
            conn.pending.pop(rid, None)
            conn.idle()
        if response.status >= 400:
            raise error_from_body(response.status, response.body)
        body = response.body
        if route is None:
            return body.get("result") if isinstance(body, dict) else body
        return route.unwrap(body) if route.unwrap is not None else body

    async def stream(self, service: str, operation: str, params: Mapping[str, Any]) -> AsyncGenerator[Any, None]:
        conn = await self.connection()
        rid = conn.next_id()
        _, what, frame = self._frame(rid, service, operation, params)
        buffer = _StreamBuffer(self.settings.stream_buffer_bytes)
        conn.pending[rid] = _Pending(stream=buffer)
        conn.busy()
        idle_timeout = self.settings.stream_idle_timeout_s
        finished = False
        try:
            await conn.send(frame)
            del frame
            while True:
                try:
                    kind, value = await buffer.get(idle_timeout)
                except TimeoutError:
                    raise _transport_error(
                        f"Stream idle timeout after {idle_timeout} s: {what}", url=self.url
                    ) from None
                if kind == "data":
                    if value in ("", "[DONE]"):
                        continue
                    try:
                        event = _decoder.decode(value)
                    except (msgspec.DecodeError, RecursionError):
                        continue  # as the contract's SSE parsers: unparsable data is skipped
                    del value
                    yield event
                elif kind == "end":
                    finished = True
                    if value.status >= 400:
                        raise error_from_body(value.status, value.body)
                    return
                else:
                    finished = True
                    raise value
        finally:
            buffer.abandon()
            if not finished and rid in conn.pending:
                conn.cancel(rid)  # closed early, timed out or cancelled: the server ends the stream
            conn.pending.pop(rid, None)
            conn.idle()
