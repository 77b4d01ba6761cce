"""Cap'n Web over WebSocket: one text message per protocol message, both directions.

The server side is a raw ASGI handler (run it under any ASGI server); the client side uses the
``websockets`` library (its C masking moves large messages twice as fast as a pure-Python
one). Outgoing messages go through one writer task from a queue of at most
``Limits.max_queued_bytes``: a peer that stops reading while results keep coming aborts its
session, and stream writes wait for their flow-control window before they are queued at all.
A local abort closes the socket with 3000 and the reason, as the reference does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from .session import RpcSession
from .stubs import RpcStub
from .values import Limits, RpcError, SessionClosed

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: How long the writer may take to flush what is queued once the session ends.
FLUSH_TIMEOUT_S = 2.0


def close_reason(reason: str) -> str:
    """A close reason cut to the 123 bytes a close frame allows, on a character boundary."""
    data = reason.encode()[:123]
    return data.decode("utf-8", "ignore")


class Outbox:
    """The bounded queue between a session and the one task that writes to the socket."""

    def __init__(self, limit: int) -> None:
        self._items: collections.deque[str] = collections.deque()
        self._bytes = 0
        self._limit = limit
        self._wake = asyncio.Event()
        self.close_with: tuple[int, str] | None = None
        self.session: RpcSession | None = None
        self._overflowed = False
        self.gone = False  # the peer is gone: nothing more can be written

    def put(self, text: str) -> None:
        self._items.append(text)
        self._bytes += len(text)
        self._wake.set()
        if self._bytes > self._limit and not self._overflowed and self.session is not None:
            self._overflowed = True
            session = self.session
            asyncio.get_running_loop().call_soon(
                session.abort, RpcError("Error", "The peer does not read its messages (send queue full)")
            )

    def close(self, code: int, reason: str) -> None:
        if self.close_with is None:
            self.close_with = (code, close_reason(reason))
        self._wake.set()

    async def run(
        self, send_text: Callable[[str], Awaitable[None]], send_close: Callable[[int, str], Awaitable[None]]
    ) -> None:
        """Write queued messages until a close is asked for; then send what is queued before it
        and the close (unless the peer is gone)."""
        while True:
            while self._items:
                text = self._items.popleft()
                self._bytes -= len(text)
                await send_text(text)
                del text  # not kept alive while the writer waits for the next message
            if self.close_with is not None:
                if not self.gone:
                    await send_close(*self.close_with)
                return
            self._wake.clear()
            await self._wake.wait()


async def _finish(writer: asyncio.Task[None]) -> None:
    """Give the writer a moment to flush and close, then stop it."""
    try:
        await asyncio.wait_for(asyncio.shield(writer), FLUSH_TIMEOUT_S)
    except BaseException:
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer


class SendFailed(Exception):
    """The writer could not send to the peer: the connection is over (its loop ends with it)."""


async def _write(
    outbox: Outbox, send_text: Callable[[str], Awaitable[None]], send_close: Callable[[int, str], Awaitable[None]]
) -> None:
    """The writer task: :meth:`Outbox.run`, a failure to send raising :class:`SendFailed`."""
    try:
        await outbox.run(send_text, send_close)
    except Exception as exc:
        outbox.gone = True
        raise SendFailed(f"sending to the peer failed: {exc!r}") from exc


async def _connection(
    session: RpcSession,
    outbox: Outbox,
    next_message: Callable[[], Awaitable[str | bytes | None]],
    send_text: Callable[[str], Awaitable[None]],
    send_close: Callable[[int, str], Awaitable[None]],
    *,
    ended: str,
    send_failed: Callable[[SendFailed], str] = str,
) -> None:
    """Run one connection until it ends: each message from ``next_message`` (None once the peer
    has gone, the session closed) goes to the session; the session's messages go out through
    the writer task. The loop and the writer share one task group, so that however the
    connection ends (the peer leaves, a send fails, the caller is cancelled) neither outlives
    it. The session is then closed with ``ended``, or with ``send_failed(error)`` when a send
    failed; the writer gets :data:`FLUSH_TIMEOUT_S` to send what is queued and the close."""
    try:
        async with asyncio.TaskGroup() as group:
            writer = group.create_task(_write(outbox, send_text, send_close), name="capnweb writer")
            try:
                while (message := await next_message()) is not None:
                    if isinstance(message, bytes):
                        try:
                            message = message.decode()
                        except UnicodeDecodeError:
                            session.abort(RpcError("Error", "bad RPC message: binary frame is not UTF-8"))
                            continue
                    session.receive(message)
                    del message  # a large message is not kept alive until the next one
            finally:
                if session.closed is None:
                    failed = writer.exception() if writer.done() and not writer.cancelled() else None
                    session.close(send_failed(failed) if isinstance(failed, SendFailed) else ended)
                outbox.close(1000, "")
                await _finish(writer)
    except* SendFailed:
        pass  # the connection is over; the session was closed with the reason


async def serve_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    main: object | None,
    limits: Limits | None = None,
    on_session: Callable[[RpcSession], None] | None = None,
) -> None:
    """Serve one Cap'n Web session on an ASGI websocket connection until it ends."""
    limits = limits or Limits()
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    outbox = Outbox(limits.max_queued_bytes)
    session = RpcSession(main, send=outbox.put, on_close=outbox.close, limits=limits)
    outbox.session = session
    if on_session is not None:
        on_session(session)

    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    async def send_close(code: int, reason: str) -> None:
        await send({"type": "websocket.close", "code": code, "reason": reason})

    async def next_message() -> str | bytes | None:
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.receive":
                text: str | None = event.get("text")
                return text if text is not None else (event.get("bytes") or b"")
            if kind == "websocket.disconnect":
                outbox.gone = True
                session.close(f"the peer closed the WebSocket ({event.get('code', 1005)})")
                return None

    await _connection(session, outbox, next_message, send_text, send_close, ended="the server ended the connection")


class WebSocketClient:
    """A client connection: ``main`` is the peer's main object; ``closed`` is set when it ends.

    Use :func:`websocket_session` for a scoped connection; this class is for owners that keep a
    connection open across calls (and open a new one when it breaks)."""

    def __init__(
        self,
        url: str,
        *,
        main: object | None = None,
        headers: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        connect_timeout: float = 10.0,
        ping_interval: float | None = None,
    ) -> None:
        self.url = url
        self._local_main = main
        self._headers = dict(headers or {})
        self.limits = limits or Limits()
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._task: asyncio.Task[None] | None = None
        self._outbox: Outbox | None = None
        self.session: RpcSession | None = None
        self.closed = asyncio.Event()

    @property
    def main(self) -> RpcStub:
        if self.session is None:
            raise SessionClosed("not connected")
        return self.session.remote_main()

    async def connect(self) -> RpcStub:
        ready: asyncio.Future[RpcSession] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._run(ready))
        try:
            self.session = await asyncio.wait_for(asyncio.shield(ready), self._connect_timeout)
        except BaseException:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            raise
        return self.session.remote_main()

    async def _run(self, ready: asyncio.Future[RpcSession]) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        session: RpcSession | None = None
        outbox = self._outbox = Outbox(self.limits.max_queued_bytes)
        try:
            try:
                ws = await connect(
                    _ws_url(self.url),
                    additional_headers=self._headers,
                    max_size=self.limits.max_message_chars * 4,
                    ping_interval=self._ping_interval,
                    compression=None,
                    open_timeout=self._connect_timeout,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = bytes(exc.response.body or b"")[:65536]
                raise HandshakeRefused(
                    f"The server refused the WebSocket upgrade: HTTP {status}", status, body
                ) from exc
            try:
                session = RpcSession(self._local_main, send=outbox.put, on_close=outbox.close, limits=self.limits)
                outbox.session = session
                ready.set_result(session)

                async def send_close(code: int, reason: str) -> None:
                    await ws.close(code, reason)

                def peer_closed(exc: ConnectionClosed) -> str:
                    code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
                    return f"Peer closed WebSocket: {code} {reason}".rstrip()

                async def next_message() -> str | bytes | None:
                    try:
                        return await ws.recv()
                    except ConnectionClosed as exc:
                        outbox.gone = True
                        assert session is not None
                        session.close(peer_closed(exc))
                        return None

                def send_failed(error: SendFailed) -> str:
                    cause = error.__cause__
                    return peer_closed(cause) if isinstance(cause, ConnectionClosed) else str(error)

                await _connection(
                    session,
                    outbox,
                    next_message,
                    ws.send,
                    send_close,
                    ended="the client closed the connection",
                    send_failed=send_failed,
                )
            finally:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(ws.close(), FLUSH_TIMEOUT_S)
        except BaseException as exc:
            if not ready.done():
                error = exc if isinstance(exc, SessionClosed) else None
                ready.set_exception(error or SessionClosed(f"WebSocket connection to {self.url} failed: {exc!r}", exc))
            if session is not None and session.closed is None:
                session.close(f"connection failed: {exc!r}")
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if not ready.done():
                ready.set_exception(SessionClosed(f"WebSocket connection to {self.url} ended"))
            self.closed.set()

    async def aclose(self) -> None:
        """Fail what is pending, close the socket (1000) and wait for the connection to end."""
        if self.session is not None and self.session.closed is None:
            self.session.close("the client closed the connection")
        if self._outbox is not None:
            self._outbox.close(1000, "")
        if self._task is not None:
            task = self._task
            try:
                await asyncio.wait_for(asyncio.shield(task), FLUSH_TIMEOUT_S + 1)
            except BaseException:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _ws_url(url: str) -> str:
    if url.startswith("http://"):
        return "ws://" + url[7:]
    if url.startswith("https://"):
        return "wss://" + url[8:]
    return url


class HandshakeRefused(SessionClosed):
    """The server answered the WebSocket upgrade with an HTTP status instead (``status``; the
    start of its answer's body in ``body``)."""

    def __init__(self, message: str, status: int, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@contextlib.asynccontextmanager
async def websocket_session(
    url: str,
    *,
    main: object | None = None,
    headers: Mapping[str, str] | None = None,
    limits: Limits | None = None,
    connect_timeout: float = 10.0,
) -> AsyncIterator[RpcStub]:
    """Connect, yield the peer's main object, close on exit (pending calls then fail)."""
    client = WebSocketClient(url, main=main, headers=headers, limits=limits, connect_timeout=connect_timeout)
    stub = await client.connect()
    try:
        yield stub
    finally:
        await client.aclose()
