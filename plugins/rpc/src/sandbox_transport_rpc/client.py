"""The rpc transport's client side: the facade's operations as calls on the server's
``SandboxControlAPI`` over one shared Cap'n Web WebSocket session (``<url>/rpc``).

An operation the contract names goes to its contract method (:mod:`.methods`, read the other
way: named parameters to positional arguments) and its result is turned back into what the
facade's models expect; any other operation, or one given a parameter its contract method has no
place for, goes through the server's generic ``call(service, operation, params)``. Stream
operations answer a ``ReadableStream`` of SSE bytes, parsed incrementally
(:class:`sandbox_core.sse.SSEDecoder`); closing the generator cancels the stream on the server.

One session per client: concurrent callers share one connection attempt (the token goes as
``Authorization: Bearer`` on the upgrade). When the connection drops, every pending call and
open stream fails at once (the engine raises) and the next call connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import msgspec

from capnweb import (
    HandshakeRefused,
    Limits,
    ReadableStream,
    RpcError,
    RpcPromise,
    RpcStub,
    SessionClosed,
    WebSocketClient,
)
from sandbox_core.errors import ErrorCode, SandboxError, TransportError, error_from_code, upgrade_refused
from sandbox_core.sse import SSEDecoder, SSEError
from sandbox_core.transport import ClientContext

from .methods import BY_OPERATION, Method, positional_args
from .settings import RpcSettings

_decoder = msgspec.json.Decoder()

PATH = "/rpc"


def rpc_url(url: str) -> str:
    """The WebSocket URL of a server's ``/rpc`` (``http://h:p`` → ``ws://h:p/rpc``)."""
    url = url.rstrip("/")
    if url.startswith("http://"):
        url = "ws://" + url[7:]
    elif url.startswith("https://"):
        url = "wss://" + url[8:]
    return url if url.endswith(PATH) else url + PATH


def _transport_error(message: str, **details: Any) -> TransportError:
    return TransportError(ErrorCode.RPC_TRANSPORT_ERROR, message, details)


def error_from_rpc(exc: RpcError) -> SandboxError:
    """A rejection from the server as the typed error its ``code`` names."""
    code = exc.props.get("code")
    if isinstance(code, str):
        details = exc.props.get("details")
        status = exc.props.get("httpStatus")
        return error_from_code(
            code,
            exc.message,
            details if isinstance(details, dict) else {},
            status=status if isinstance(status, int) and not isinstance(status, bool) else None,
        )
    return _transport_error(f"{exc.name}: {exc.message}", name=exc.name)


class RpcClientTransport:
    """The facade's transport over ``/rpc`` (see the module docstring)."""

    def __init__(self, ctx: ClientContext) -> None:
        self.settings: RpcSettings = ctx.settings if ctx.settings is not None else RpcSettings()
        self.url = rpc_url(ctx.url)
        self.timeout = ctx.timeout
        self._headers = {"Authorization": f"Bearer {ctx.token}"} if ctx.token else {}
        self._limits = Limits(
            max_message_chars=self.settings.max_message_bytes,
            max_depth=self.settings.max_depth,
            max_queued_bytes=self.settings.max_queued_bytes,
            max_stream_buffer=self.settings.max_stream_buffer_bytes,
            max_session_stream_buffer=self.settings.max_session_stream_buffer_bytes,
        )
        self._client: WebSocketClient | None = None
        self._main: RpcStub | None = None
        self._connecting: asyncio.Future[RpcStub] | None = None
        self._closed = False

    # the connection -----------------------------------------------------------------------------

    async def _api(self) -> RpcStub:
        """The server's main object on the open session, connecting when there is none."""
        if self._closed:
            raise _transport_error("The client is closed", url=self.url)
        client, main = self._client, self._main
        if client is not None and main is not None and client.session is not None and client.session.closed is None:
            return main
        attempt = self._connecting
        if attempt is None:  # the first caller starts the attempt; the others share it
            attempt = self._connecting = asyncio.ensure_future(self._connect())
            attempt.add_done_callback(self._attempt_done)
        return await asyncio.shield(attempt)

    def _attempt_done(self, attempt: asyncio.Future[RpcStub]) -> None:
        if self._connecting is attempt:
            self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: every caller got it

    async def _connect(self) -> RpcStub:
        old, old_main, self._client, self._main = self._client, self._main, None, None
        await _close(old, old_main)
        client = WebSocketClient(
            self.url,
            headers=self._headers,
            limits=self._limits,
            connect_timeout=self.settings.connect_timeout_s,
            ping_interval=None,  # the server pings; a slow stream reader must not be cut off
        )
        try:
            main = await client.connect()
        except SessionClosed as exc:
            await client.aclose()
            raise self._refused(exc) from None
        except BaseException:
            await client.aclose()
            raise
        if self._closed:
            await client.aclose()
            raise _transport_error("The client is closed", url=self.url)
        self._client, self._main = client, main
        return main

    def _refused(self, exc: SessionClosed) -> SandboxError:
        if not isinstance(exc, HandshakeRefused):
            return _transport_error(f"Cannot connect to {self.url}: {exc}", url=self.url)
        return upgrade_refused(self.url, "rpc", exc.status, exc.body)

    def _lost(self, main: RpcStub) -> None:
        """The session of ``main`` failed: the next call connects again."""
        if self._main is main:
            self._main = None

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        client, main, self._client, self._main = self._client, self._main, None, None
        await _close(client, main)

    # calls --------------------------------------------------------------------------------------

    def _start(
        self, main: RpcStub, service: str, operation: str, params: Mapping[str, Any]
    ) -> tuple[RpcPromise, Method | None]:
        method = BY_OPERATION.get((service, operation))
        if method is not None:
            args = positional_args(method, params)
            if args is not None:
                return getattr(getattr(main, method.getter), method.name)(*args), method
        return main.call(service, operation, dict(params)), None

    def _failure(self, exc: BaseException, main: RpcStub) -> SandboxError:
        if isinstance(exc, RpcError):
            return error_from_rpc(exc)
        if isinstance(exc, SessionClosed):
            self._lost(main)
            return _transport_error(f"The rpc connection failed: {exc}", url=self.url)
        raise exc

    async def call(self, service: str, operation: str, params: Mapping[str, Any]) -> Any:
        main = await self._api()
        promise, method = self._start(main, service, operation, params)
        try:
            async with asyncio.timeout(self.timeout):
                result = await promise
        except asyncio.CancelledError:
            promise.dispose()  # the caller went away: the server cancels the call (its command ends)
            raise
        except TimeoutError:
            promise.dispose()  # the server frees the result and cancels the call if it still runs
            raise _transport_error(
                f"{service}.{operation} took longer than the client's timeout ({self.timeout} s)", url=self.url
            ) from None
        except (RpcError, SessionClosed) as exc:
            raise self._failure(exc, main) from None
        if isinstance(result, ReadableStream):  # a stream asked for as a unary call
            await result.aclose()
            raise error_from_code(
                ErrorCode.VALIDATION_FAILED, f"Operation {service}.{operation} is a stream", {"field": "operation"}
            )
        if method is not None and method.unwrap is not None:
            return method.unwrap(result)
        return result

    async def stream(
        self, service: str, operation: str, params: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        main = await self._api()
        promise, method = self._start(main, service, operation, params)
        try:
            async with asyncio.timeout(self.timeout):
                stream = await promise
        except asyncio.CancelledError:
            promise.dispose()
            raise
        except TimeoutError:
            promise.dispose()
            raise _transport_error(
                f"{service}.{operation} did not start within {self.timeout} s", url=self.url
            ) from None
        except (RpcError, SessionClosed) as exc:
            raise self._failure(exc, main) from None
        if not isinstance(stream, ReadableStream):
            raise error_from_code(
                ErrorCode.VALIDATION_FAILED, f"Operation {service}.{operation} is not a stream", {"field": "operation"}
            )
        started = method is None or not method.errors_in_band
        decoder = SSEDecoder(self.settings.max_event_bytes)
        idle = self.settings.stream_idle_timeout_s
        chunks = stream.__aiter__()
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise _transport_error(f"stream chunk is a {type(chunk).__name__}, not bytes", url=self.url)
                for event in decoder.feed(bytes(chunk)):
                    value = self._event(event.data)
                    if value is None:
                        continue
                    if not started:
                        if value.get("type") == "error":  # the command did not start: the call's error
                            raise self._start_error(value)
                        started = True
                    yield value
            for event in decoder.close():
                value = self._event(event.data)
                if value is not None:
                    yield value
        except TimeoutError:
            raise _transport_error(f"the stream sent nothing for {idle} s", url=self.url) from None
        except (RpcError, SessionClosed) as exc:
            raise self._failure(exc, main) from None
        except SSEError as exc:
            raise _transport_error(f"stream failed: {exc}", url=self.url) from None
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # cancels it on the server when it has not ended

    @staticmethod
    def _event(data: str) -> dict[str, Any] | None:
        if data in ("", "[DONE]"):
            return None
        try:
            value = _decoder.decode(data)
        except (msgspec.DecodeError, RecursionError):
            return None  # as the contract's parsers: unparsable (or too deeply nested) data is skipped
        return value if isinstance(value, dict) else None

    @staticmethod
    def _start_error(event: Mapping[str, Any]) -> SandboxError:
        code = event.get("code")
        details = event.get("details")
        return error_from_code(
            code if isinstance(code, str) else ErrorCode.STREAM_START_ERROR,
            str(event.get("error", "the stream failed to start")),
            details if isinstance(details, dict) else {},
        )


async def _close(client: WebSocketClient | None, main: RpcStub | None) -> None:
    """End a session: disposing the peer's main object ends it on both sides (as the reference
    does), so the socket closes at once; then the connection's task is awaited."""
    if main is not None:
        with contextlib.suppress(Exception):
            main.dispose()
    if client is not None:
        await client.aclose()
