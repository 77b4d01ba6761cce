"""The ws transport's server side: the contract's routes multiplexed over one WebSocket
(``/ws`` and ``/api/ws``), a raw ASGI app. See :mod:`.frames` for the frames.

Each ``request`` frame runs as a task of its own through the same in-process router as http
(:class:`sandbox_core.router.Router`), so answers come back in completion order. A JSON answer
is one ``response`` frame; an event stream is one ``stream`` frame per event (the event
objects go from the service to the frame with no SSE in between) and a final ``response``
with no body. A ``cancel`` frame cancels its request's task: a stream is closed (its command
ends, by the session rules) and a unary call is cancelled (a foreground exec ends its command).

Every buffer is bounded, and every way a connection ends ends all its requests:

* Frames go to the socket through one writer task and a send queue of at most
  ``max_queued_bytes``: a producer waits for room before it queues its frame, so a client that
  stops reading stops its streams (and their commands, once their pipes fill), as over http.
  The writer's ``send`` waits for the socket (hypercorn awaits the transport's drain).
* An incoming frame over ``max_frame_bytes`` closes the socket with 1009; at most
  ``max_in_flight`` requests run at once per connection, the excess is answered 503
  ``RESOURCE_BUSY`` at once (the connection keeps reading, so cancels still arrive).
* A frame that is not JSON (or nests too deeply to decode) gets an ``error`` frame
  ``PARSE_ERROR``; JSON that is not a request
  or a cancel gets ``INVALID_REQUEST``: the connection and its other requests carry on.
* A send that fails closes the socket with 1011; the client closing the socket, the server
  shutting down (1001) or an oversized frame (1009) likewise cancel every request of that
  connection (and of no other) and wait for them to end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote

import msgspec
import structlog

from sandbox_core.contract.routes import TABLE
from sandbox_core.edge import CREDENTIAL_HEADERS, load_token
from sandbox_core.errors import ErrorCode, SandboxError
from sandbox_core.json_batches import split_long_list
from sandbox_core.memory import trim_after
from sandbox_core.metrics import CONNECTIONS, TRANSPORT, Metrics
from sandbox_core.router import EventStream, Reply, Router, RouteRequest, Target, stream_error_event
from sandbox_core.transport import ServerContext, ServerMount

from .frames import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    STREAM_ERROR,
    ErrorFrame,
    FrameId,
    IdOnly,
    InFrame,
    ResponseFrame,
    StreamFrame,
)
from .pty import PATH as PTY_PATH
from .pty import PtyEndpoint
from .settings import WsSettings

log = structlog.get_logger("sandbox.ws")

PATHS = ("/ws", "/api/ws")

#: WebSocket close codes (RFC 6455).
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009
INTERNAL = 1011

#: A close frame that cannot be sent within this long (the client does not read) is given up.
CLOSE_TIMEOUT_S = 1.0

_encoder = msgspec.json.Encoder()
_frame_decoder = msgspec.json.Decoder(InFrame)
_id_decoder = msgspec.json.Decoder(IdOnly)


class Closed(Exception):
    """The connection is closing: nothing more is queued or sent."""


class SendQueue:
    """Frames waiting for the socket, bounded by their size: :meth:`put` waits while the queue
    holds ``limit`` characters or more (a single larger frame still goes through, alone)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: collections.deque[str] = collections.deque()
        self.size = 0
        self.closed = False
        self._room: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ready: asyncio.Future[None] | None = None

    async def put(self, frame: str) -> None:
        while self.size >= self.limit and not self.closed:
            waiter = asyncio.get_running_loop().create_future()
            self._room.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were given the room and leave: pass it on
                raise
        if self.closed:
            raise Closed
        self.frames.append(frame)
        self.size += len(frame)
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)
        if self.size < self.limit:
            self._wake_one()

    async def get(self) -> str:
        while not self.frames:
            if self.closed:
                raise Closed
            self._ready = asyncio.get_running_loop().create_future()
            await self._ready
        frame = self.frames.popleft()
        self.size -= len(frame)
        if self.size < self.limit:
            self._wake_one()
        return frame

    def _wake_one(self) -> None:
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Drop what is queued and release every waiter (they raise :class:`Closed`)."""
        self.closed = True
        self.frames.clear()
        self.size = 0
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)


def text_size(data: str | bytes) -> int:
    """The size of a frame in bytes (a text frame's UTF-8 length, without encoding an ASCII one)."""
    if isinstance(data, bytes) or data.isascii():
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def stream_frame(rid: FrameId, event: Any) -> str:
    return _encoder.encode(StreamFrame(id=rid, data=_encoder.encode(event).decode())).decode()


def response_frame(rid: FrameId, status: int, body: Any = msgspec.UNSET) -> str:
    return _encoder.encode(ResponseFrame(id=rid, status=status, body=body)).decode()


async def reply_frame(rid: FrameId, status: int, body: Any) -> str:
    """The ``response`` frame of a JSON answer; a long list in it is encoded in batches, the
    event loop serving other requests in between (the frame itself is sent whole; see
    :mod:`sandbox_core.json_batches`)."""
    long_list = split_long_list(body, lambda outer: ResponseFrame(id=rid, status=status, body=outer))
    if long_list is not None:
        return (await long_list.encode()).decode()
    return response_frame(rid, status, body)


def error_frame(
    code: str, message: str, rid: FrameId | None = None, status: int = 400, context: dict[str, Any] | None = None
) -> str:
    return _encoder.encode(
        ErrorFrame(
            id=msgspec.UNSET if rid is None else rid,
            code=code,
            message=message,
            status=status,
            context=msgspec.UNSET if context is None else context,
        )
    ).decode()


def frame_id(data: str | bytes) -> FrameId | None:
    """The id of a frame that failed validation, when it has a usable one."""
    try:
        return _id_decoder.decode(data).id
    except (msgspec.DecodeError, RecursionError):
        return None


def parse_frame(data: str | bytes) -> InFrame | str:
    """A client's frame: a request or a cancel, or the ``error`` frame that answers anything
    else (``PARSE_ERROR`` for what is not JSON or nests too deeply to decode, ``INVALID_REQUEST``
    for the rest). Never raises."""
    try:
        frame = _frame_decoder.decode(data)
    except msgspec.ValidationError as exc:
        return error_frame(INVALID_REQUEST, f"Invalid frame: {exc}", frame_id(data))
    except msgspec.DecodeError as exc:
        return error_frame(PARSE_ERROR, f"The frame is not valid JSON: {exc}")
    except RecursionError:  # msgspec's limit on nesting (the interpreter's recursion limit)
        return error_frame(PARSE_ERROR, "The frame nests too deeply to decode")
    if frame.type == "cancel":
        return frame
    if frame.type != "request":
        message = f"Unknown frame type {frame.type!r}: expected 'request' or 'cancel'"
        return error_frame(INVALID_REQUEST, message, frame.id)
    if frame.id is None or frame.method is None or frame.path is None:
        missing = [
            name for name, value in (("id", frame.id), ("method", frame.method), ("path", frame.path)) if value is None
        ]
        message = f"A request frame needs {' and '.join(missing)}"
        return error_frame(INVALID_REQUEST, message, frame.id, context={"fields": missing})
    return frame


class Connection:
    """One accepted socket: a reader (frames in), a writer (frames out) and a task per request,
    all in one task group (:meth:`serve`)."""

    def __init__(self, app: WsApp, send: Callable[[dict[str, Any]], Awaitable[None]], number: int) -> None:
        self.app = app
        self.send = send
        self.number = number
        self.tasks: dict[FrameId, asyncio.Task[None]] = {}
        self.queue = SendQueue(app.settings.max_queued_bytes)
        self.ending: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self.requests = 0
        #: the connection's task group (its reader, writer and requests), set by :meth:`serve`
        self.group: asyncio.TaskGroup

    def end(self, code: int | None, reason: str) -> None:
        """Close the connection: with ``code`` (None when the client has gone already)."""
        if not self.ending.done():
            self.ending.set_result((code, reason))

    async def serve(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Run the connection until it ends: its reader, its writer and its requests are tasks of
        one task group, so that however it ends (a close, a failure, the server cancelling the
        connection), every one of them has ended when this returns."""
        code: int | None = None
        reason = "cancelled"
        ended = 0
        try:
            async with asyncio.TaskGroup() as group:
                self.group = group
                reader = group.create_task(self._read(receive), name=f"ws {self.number} reader")
                writer = group.create_task(self._write(), name=f"ws {self.number} writer")
                try:
                    code, reason = await self.ending
                finally:
                    ended = await self._teardown(reader, writer, code, reason)
                # leaving the group waits for the requests, cancelled by the teardown
        finally:
            self.closed.set()
            log.debug("ws.closed", conn=self.number, code=code, reason=reason, requests=self.requests, ended=ended)

    async def _teardown(
        self, reader: asyncio.Task[None], writer: asyncio.Task[None], code: int | None, reason: str
    ) -> int:
        """Stop the reader and the writer, cancel every request and send the close frame (if
        any); returns how many requests were cancelled."""
        self.queue.close()
        reader.cancel()
        writer.cancel()
        await asyncio.wait((reader, writer))
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if code is not None:  # before waiting for the requests: the client learns at once
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.send({"type": "websocket.close", "code": code, "reason": reason}), CLOSE_TIMEOUT_S
                )
        return len(tasks)

    # frames in ----------------------------------------------------------------------------------

    async def _read(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        limit = self.app.settings.max_frame_bytes
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    data: str | bytes = text if text is not None else (message.get("bytes") or b"")
                    size = text_size(data)
                    if size > limit:
                        log.warning("ws.frame_too_large", conn=self.number, size=size, limit=limit)
                        self.end(MESSAGE_TOO_BIG, "Frame too large")
                        return
                    self.app.bytes_in(size)
                    await self.on_frame(data)
                    del data, text, message
                elif kind == "websocket.disconnect":
                    self.end(None, f"closed by the client ({message.get('code')})")
                    return
        except Closed:
            return
        except Exception as exc:  # a bug of ours: this connection ends, the server carries on
            log.error("ws.read_failed", conn=self.number, error=repr(exc), exc_info=exc)
            self.end(INTERNAL, "Internal error")

    async def on_frame(self, data: str | bytes) -> None:
        frame = parse_frame(data)
        if isinstance(frame, str):
            await self.queue.put(frame)
        elif frame.type == "cancel":
            task = self.tasks.get(frame.id) if frame.id is not None else None
            if task is not None:
                task.cancel()
        else:
            await self.on_request(frame)

    async def on_request(self, frame: InFrame) -> None:
        rid, method, path = frame.id, frame.method, frame.path
        if rid is None or method is None or path is None:  # parse_frame answered those
            return
        if rid in self.tasks:
            message = f"A request with id {rid!r} is still running on this connection"
            await self.queue.put(error_frame(INVALID_REQUEST, message, rid))
            return
        limit = self.app.settings.max_in_flight
        if len(self.tasks) >= limit:
            busy = SandboxError(
                ErrorCode.RESOURCE_BUSY,
                f"{limit} requests are running on this connection, its limit; retry when one has ended",
                {"limit": limit, "setting": "transports.ws.max_in_flight"},
                status=503,
            )
            await self.queue.put(response_frame(rid, 503, busy.to_body()))
            return
        self.requests += 1
        method = method.upper()
        path, _, query = path.partition("?")
        if "%" in path:
            path = unquote(path)
        target = self.app.router.match(method, path)
        if isinstance(target, Reply):
            await self.queue.put(await reply_frame(rid, target.status, target.body))
            return
        body: memoryview | None = None
        if method in ("POST", "PUT"):
            raw = frame.body
            if len(raw) and not (len(raw) == 4 and bytes(raw) == b"null"):
                body = memoryview(raw)  # a view of the frame: the operation's decoder reads it
        request = RouteRequest(
            method,
            path,
            dict(parse_qsl(query)) if query else {},
            self.app.frame_headers(frame.headers) if frame.headers else {},
            body,
        )
        task = self.group.create_task(self.run(rid, target, request), name=f"ws {self.number} request {rid!r}")
        self.tasks[rid] = task
        task.add_done_callback(partial(self._forget, rid))

    def _forget(self, rid: FrameId, task: asyncio.Task[None]) -> None:
        if self.tasks.get(rid) is task:
            del self.tasks[rid]

    # requests -----------------------------------------------------------------------------------

    async def run(self, rid: FrameId, target: Target, request: RouteRequest) -> None:
        size = len(request.body) if isinstance(request.body, memoryview) else 0
        try:
            outcome = await self.app.router.run(target, request)
            del request
            if isinstance(outcome, EventStream):
                await self.pump(rid, outcome)
            else:
                await self.queue.put(await reply_frame(rid, outcome.status, outcome.body))
        except Closed:
            pass
        except Exception as exc:  # a bug of ours: this request fails, the connection carries on
            log.error("ws.request_failed", conn=self.number, path=target.op.qualname, error=repr(exc), exc_info=exc)
            with contextlib.suppress(Closed):
                await self.queue.put(error_frame(INTERNAL_ERROR, "Internal server error", rid, status=500))
        finally:
            trim_after(size)  # a large request's memory goes back to the system once it is done

    async def pump(self, rid: FrameId, stream: EventStream) -> None:
        """Each event as a ``stream`` frame, then the final ``response``. Each frame waits for room
        in the send queue before the next event is pulled, so a reader that does not read slows
        the producer. However it ends, the stream is closed (what produces it ends)."""
        put = self.queue.put
        try:
            if stream.first is not None:
                await put(stream_frame(rid, stream.first))
                async for event in stream.events:
                    await put(stream_frame(rid, event))
        except SandboxError as err:
            await put(stream_frame(rid, stream_error_event(err)))
        except (Closed, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug of ours: this stream fails, the connection carries on
            log.error("ws.stream_failed", conn=self.number, error=repr(exc), exc_info=exc)
            await put(error_frame(STREAM_ERROR, "Reading the stream failed", rid, status=500))
            return
        finally:
            await stream.aclose()
        await put(response_frame(rid, 200))

    # frames out ---------------------------------------------------------------------------------

    async def _write(self) -> None:
        send, get, count = self.send, self.queue.get, self.app.bytes_out
        try:
            while True:
                frame = await get()
                await send({"type": "websocket.send", "text": frame})
                count(text_size(frame))
        except Closed:
            return
        except Exception as exc:  # the socket failed: nothing sent from now on reaches the client
            log.warning("ws.send_failed", conn=self.number, error=repr(exc))
            self.end(INTERNAL, "Send failed")


class WsApp:
    """The ASGI app of ``/ws`` and ``/api/ws``: one :class:`Connection` per socket."""

    def __init__(
        self, registry: Any, settings: WsSettings, *, token: bool = False, metrics: Metrics | None = None
    ) -> None:
        self.router = Router(registry, TABLE)
        self.settings = settings
        self.token = token  # with a token, Authorization is a credential, never a session id
        self.connections: set[Connection] = set()
        self.closing = False
        self._numbers = itertools.count(1)
        metrics = metrics if metrics is not None else Metrics(enabled=False)
        metrics.source(CONNECTIONS, lambda: [(("ws",), len(self.connections))])
        self.bytes_in = metrics.byte_counter("ws", "in")
        self.bytes_out = metrics.byte_counter("ws", "out")

    def frame_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        found = {name.lower(): value for name, value in headers.items()}
        if self.token:  # a credential, as at the edge: never seen by a route (nor read as a session id)
            for name in CREDENTIAL_HEADERS:
                found.pop(name.decode(), None)
        return found

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        if self.closing:
            await send({"type": "websocket.close", "code": GOING_AWAY, "reason": "Server shutting down"})
            return
        TRANSPORT.set("ws")  # the connection's tasks label what they count with it
        conn = Connection(self, send, next(self._numbers))
        log.debug("ws.connected", conn=conn.number, path=scope.get("path"), client=scope.get("client"))
        self.connections.add(conn)
        try:
            await conn.serve(receive)
        finally:
            self.connections.discard(conn)

    async def aclose(self) -> None:
        """Shutdown: every socket is closed (1001) and every request on it ended."""
        self.closing = True
        connections = list(self.connections)
        for conn in connections:
            conn.end(GOING_AWAY, "Server shutting down")
        for conn in connections:  # each ends on its own: waiting for one after the other is no slower
            await conn.closed.wait()


def _has_token(config: Any) -> bool:
    server = getattr(config, "server", None)
    if server is None:
        return False
    try:
        return load_token(server.token, server.token_file, os.environ) is not None
    except ValueError:  # the edge policy reported it already
        return True


class Mount:
    """The transport's one ASGI app: ``/ws/pty`` to the terminal endpoint (:mod:`.pty`), the
    rest (``/ws``, ``/api/ws``) to :class:`WsApp`; closing closes both."""

    def __init__(self, routes: WsApp, pty: PtyEndpoint) -> None:
        self.routes, self.pty = routes, pty

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("path") == PTY_PATH:
            await self.pty(scope, receive, send)
        else:
            await self.routes(scope, receive, send)

    async def aclose(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.routes.aclose())
            group.create_task(self.pty.aclose())


def make_server(ctx: ServerContext) -> ServerMount:
    settings: WsSettings = ctx.settings if ctx.settings is not None else WsSettings()
    routes = WsApp(ctx.registry, settings, token=_has_token(ctx.config), metrics=ctx.metrics)
    mount = Mount(routes, PtyEndpoint(ctx.registry))
    return ServerMount(
        app=mount,
        websocket_paths=(*PATHS, PTY_PATH),
        aclose=mount.aclose,
        websocket_ping_interval=settings.ping_interval_s,
        websocket_max_message_bytes=settings.max_frame_bytes,
    )
