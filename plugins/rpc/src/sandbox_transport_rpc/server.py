"""The rpc transport's server side: ``/rpc``, Cap'n Web over WebSocket (one session per socket)
and over HTTP batch (``POST /rpc``, one session per request), both answering with a
:class:`~.api.SandboxControlAPI` (a raw ASGI app; the engine is :mod:`.capnweb`).

Every session has the settings' limits (message size, nesting, queued bytes). A batch's body
is read as the http transport reads one (:func:`sandbox_core.intake.read_body`): over
``max_batch_bytes`` it is 413 before any of it is read when its ``Content-Length`` says so, it
counts against the server's budget of incoming bytes until the batch is answered (503 when
there is no room in time), and a body whose bytes stop coming is 408; those answers carry the
contract's error body. A client that goes away before its batch is answered cancels the
batch's calls (a foreground exec ends its command).

When a session ends (the peer closes, a send fails, a limit is broken, or the server shuts
down), every call it is running is cancelled (a foreground exec ends its command) and every
stream it feeds is closed (its operation ends). At shutdown every open WebSocket session is aborted: its peer's
pending calls fail at once and the socket closes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import structlog

from capnweb import Budget, Limits, RpcError, RpcSession, serve_http_batch, serve_websocket
from sandbox_core.errors import SandboxError
from sandbox_core.intake import Hold, read_body
from sandbox_core.memory import trim_after
from sandbox_core.metrics import CONNECTIONS, TRANSPORT
from sandbox_core.router import announces_body
from sandbox_core.transport import ServerContext, ServerMount

from .api import ApiFactory
from .settings import RpcSettings

log = structlog.get_logger("sandbox.rpc")

PATH = "/rpc"


def limits(settings: RpcSettings) -> Limits:
    """The engine's limits for the sessions of one server, from the transport's settings (with
    one budget for the stream buffers of them all)."""
    return Limits(
        max_message_chars=settings.max_message_bytes,  # a message has at most as many characters as bytes
        max_depth=settings.max_depth,
        max_queued_bytes=settings.max_queued_bytes,
        max_stream_buffer=settings.max_stream_buffer_bytes,
        max_session_stream_buffer=settings.max_session_stream_buffer_bytes,
        shared_stream_buffer=Budget(
            settings.max_server_stream_buffer_bytes, label="all the server's streams (max_server_stream_buffer_bytes)"
        ),
    )


class RpcApp:
    """The ASGI app of ``/rpc``."""

    def __init__(self, ctx: ServerContext, settings: RpcSettings) -> None:
        self.registry = ctx.registry
        self.settings = settings
        self.budget = ctx.budget
        self.body_timeout = ctx.body_timeout
        self.limits = limits(settings)
        self._factory: ApiFactory | None = None
        self.sessions: set[RpcSession] = set()
        self.connections: set[asyncio.Future[None]] = set()
        self.closing = False
        metrics = ctx.metrics
        metrics.source(CONNECTIONS, lambda: [(("rpc",), len(self.connections))])
        self.bytes_in = metrics.byte_counter("rpc", "in")
        self.bytes_out = metrics.byte_counter("rpc", "out")

    @property
    def factory(self) -> ApiFactory:
        """The object tree's classes, made on first use (when every service has started)."""
        if self._factory is None:
            self._factory = ApiFactory(self.registry, self.settings.stream_heartbeat_s)
        return self._factory

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        TRANSPORT.set("rpc")
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._batch(scope, receive, send)

    async def _batch(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``POST /rpc``: the body read within the server's limits, then the batch answered
        (see the module's docstring); anything but POST is 405, its body unread."""
        if scope.get("method") != "POST":
            await serve_http_batch(scope, receive, _closing(scope, send), main=None, limits=self.limits)
            return
        hold = Hold(self.budget)
        try:
            try:
                # in a list, handed over to the engine with no reference kept here: the engine
                # frees the body once it has decoded it
                box = [
                    await read_body(
                        receive,
                        scope["headers"],
                        limit=self.settings.max_batch_bytes,
                        setting="transports.rpc.max_batch_bytes",
                        hold=hold,
                        timeout=self.body_timeout,
                    )
                ]
            except SandboxError as err:
                await _error_response(_closing(scope, send), err)
                return
            size = len(box[0])
            self.bytes_in(size)
            await serve_http_batch(scope, receive, send, main=self.factory(), limits=self.limits, body=box.pop())
            trim_after(size)
        finally:
            hold.release()

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.closing:
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": 1001, "reason": "Server shutting down"})
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connections.add(done)
        sessions: list[RpcSession] = []

        def on_session(session: RpcSession) -> None:
            sessions.append(session)
            self.sessions.add(session)
            log.debug("rpc.connected", client=scope.get("client"))

        bytes_in, bytes_out = self.bytes_in, self.bytes_out

        async def receive_large(receive: Any = receive) -> Any:
            event = await receive()
            size = len(event.get("text") or event.get("bytes") or "")
            bytes_in(size)
            trim_after(size)
            return event

        async def send_large(event: Any, send: Any = send) -> None:
            await send(event)
            size = len(event.get("text") or "")
            bytes_out(size)
            trim_after(size)  # the memory of a large message comes back

        try:
            await serve_websocket(
                scope, receive_large, send_large, main=self.factory(), limits=self.limits, on_session=on_session
            )
        finally:
            for session in sessions:
                self.sessions.discard(session)
                if session.closed is None:
                    session.close("the connection ended")
                log.debug("rpc.closed", reason=str(session.closed))
            self.connections.discard(done)
            done.set_result(None)

    async def aclose(self) -> None:
        """Shutdown: every open session is aborted (its pending calls fail, its streams end)
        and its socket closed; returns when every connection has ended."""
        self.closing = True
        for session in list(self.sessions):
            session.abort(RpcError("Error", "Server shutting down"))
        if self.connections:
            await asyncio.gather(*self.connections)


def _closing(scope: dict[str, Any], send: Any) -> Any:
    """``send`` adding ``Connection: close`` to the answer when the request's body, announced, is
    not read (the connection cannot serve another request)."""
    if not announces_body(scope.get("headers", ())):
        return send

    async def send_closing(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return send_closing


async def _error_response(send: Any, err: SandboxError) -> None:
    """The contract's error body (as the http transport answers)."""
    body = msgspec.json.encode(err.to_body())
    await send(
        {
            "type": "http.response.start",
            "status": err.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"access-control-allow-origin", b"*"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def make_server(ctx: ServerContext) -> ServerMount:
    settings: RpcSettings = ctx.settings if ctx.settings is not None else RpcSettings()
    app = RpcApp(ctx, settings)
    return ServerMount(
        app=app,
        http_paths=(PATH,),
        websocket_paths=(PATH,),
        aclose=app.aclose,
        websocket_ping_interval=settings.ping_interval_s,
        websocket_max_message_bytes=settings.max_message_bytes,
    )
