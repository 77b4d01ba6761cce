"""The http transport's server side: an ASGI app mapping the contract's routes to operations.

It holds no business logic: it decodes the request into the operation's parameters (a bad
body is 400 VALIDATION_FAILED naming the field), calls the registry, and encodes the result,
an SSE stream, or the contract's error body. Every response carries the CORS headers once;
OPTIONS is answered for any path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
import structlog

from sandbox_core.clock import now_iso
from sandbox_core.config import ConfigError
from sandbox_core.contract.routes import TABLE
from sandbox_core.edge import ANONYMOUS
from sandbox_core.errors import ErrorCode, SandboxError, not_found
from sandbox_core.intake import ByteBudget, Hold, read_body
from sandbox_core.json_batches import LongList, split_long_list
from sandbox_core.metrics import CONNECTIONS, TRANSPORT, Metrics
from sandbox_core.registry import ServiceRegistry
from sandbox_core.router import EventStream, Reply, Router, RouteRequest, announces_body, stream_error_event
from sandbox_core.sse import encode_event
from sandbox_core.transport import ServerContext, ServerMount

from .settings import HttpSettings

log = structlog.get_logger("sandbox.http")

CORS_HEADERS = [  # the answer to OPTIONS (204, no body)
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
    (
        b"access-control-allow-headers",
        b"Content-Type, Authorization, X-Session-Id, X-Sandbox-Id, X-Trace-Id, traceparent",
    ),
    (b"access-control-max-age", b"86400"),
]
ROOT_TEXT = b"sandbox runtime: see /api/ping"
ROOT_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"content-length", str(len(ROOT_TEXT)).encode()),
    (b"content-type", b"text/plain; charset=utf-8"),
]
SSE_RAW_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"access-control-allow-origin", b"*"),
]

_encoder = msgspec.json.Encoder()
#: The Prometheus scrape path.
METRICS_PATH = "/metrics"
#: The probes the http transport answers itself (readiness; liveness asked without the token).
PROBE_PATHS = frozenset({"/api/ready", "/api/ping"})


class Response:
    """A fixed status, headers and body sent as two ASGI messages (OPTIONS, the root page)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


OPTIONS_RESPONSE = Response(204, CORS_HEADERS)
ROOT_RESPONSE = Response(200, ROOT_HEADERS, ROOT_TEXT)


class JSONResponse:
    """A JSON body sent as two ASGI messages (the hot path: no framework response object)."""

    __slots__ = ("body", "status")

    def __init__(self, body: bytes, status: int) -> None:
        self.body = body
        self.status = status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.body)).encode()),
                    (b"access-control-allow-origin", b"*"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


def json_response(body: Any, status: int = 200) -> JSONResponse | BatchedJSONResponse:
    long_list = split_long_list(body)
    if long_list is not None:
        return BatchedJSONResponse(long_list, status)
    return JSONResponse(_encoder.encode(body), status)


class BatchedJSONResponse:
    """A JSON answer whose long list is encoded and sent in batches (chunked transfer), so that
    encoding a large answer never holds the event loop for long (see :mod:`sandbox_core.json_batches`)."""

    def __init__(self, body: LongList, status: int) -> None:
        self.body = body
        self.status = status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"access-control-allow-origin", b"*")]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        async with contextlib.aclosing(self.body.chunks()) as chunks:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def error_response(err: SandboxError, operation: str | None = None) -> JSONResponse:
    if operation and not err.operation:
        err.operation = operation
    return JSONResponse(_encoder.encode(err.to_body()), err.status)


T = TypeVar("T")


class Request:
    """The parts of an ASGI http request the routes use (lighter than a framework request)."""

    __slots__ = ("_headers", "_query", "body_read", "hold", "method", "path", "receive", "scope")

    def __init__(self, scope: dict[str, Any], receive: Any, budget: ByteBudget) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self._headers: dict[str, str] | None = None
        self._query: dict[str, str] | None = None
        self.hold = Hold(budget)  # body bytes counted against the server's budget
        self.body_read = False  # its body was read to the end

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope["headers"]}
        return self._headers

    @property
    def query_params(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))
        return self._query


def _closing(send: Any) -> Any:
    """``send`` with ``Connection: close`` added to the answer's head (see ``announces_body``)."""

    async def send_closing(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return send_closing


#: A call still running after this long starts watching for the client's departure (a quick
#: call never pays for the watcher; a departure is seen at most this late).
WATCH_AFTER_S = 0.02


async def until_disconnect(request: Request, call: Awaitable[T]) -> T:
    """Await ``call`` (the body has been read), cancelling it if the client goes away first:
    a service call whose caller left is cancelled, and so ended (a command's processes too)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    left = False
    watcher: asyncio.Future[Any] | None = None

    def on_message(received: asyncio.Future[Any]) -> None:
        nonlocal left
        if not received.cancelled() and received.exception() is None:
            left = received.result().get("type") == "http.disconnect"
            if left:
                task.cancel()

    def watch() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(request.receive())
        watcher.add_done_callback(on_message)

    timer = loop.call_later(WATCH_AFTER_S, watch)
    try:
        return await call
    except asyncio.CancelledError:
        if left:  # nobody to answer: end quietly
            task.uncancel()
            raise SandboxError(ErrorCode.OPERATION_INTERRUPTED, "The client disconnected") from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.remove_done_callback(on_message)
            watcher.cancel()


class HttpApp:
    def __init__(
        self,
        registry: ServiceRegistry,
        settings: HttpSettings,
        budget: ByteBudget | None = None,
        body_timeout: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.budget = budget if budget is not None else ByteBudget()
        self.body_timeout = body_timeout
        self.router = Router(registry, TABLE)
        self.metrics = metrics if metrics is not None else Metrics(enabled=False)
        self.in_flight = 0  # requests being answered (sandbox_open_connections{transport="http"})
        self.metrics.source(CONNECTIONS, lambda: [(("http",), self.in_flight)])
        self.bytes_in = self.metrics.byte_counter("http", "in")
        self.bytes_out = self.metrics.byte_counter("http", "out")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        TRANSPORT.set("http")
        self.in_flight += 1
        request = Request(scope, receive, self.budget)
        try:
            try:
                response = await self.dispatch(request)
            except SandboxError as err:
                response = error_response(err)
            except Exception as exc:  # a bug of ours: log it, answer without a stack trace
                log.error("request.failed", path=scope.get("path"), error=repr(exc), exc_info=exc)
                response = error_response(SandboxError(ErrorCode.INTERNAL_ERROR, "Internal server error"))
            finally:
                request.hold.release()
            if not request.body_read and announces_body(scope["headers"]):
                send = _closing(send)  # answered without reading the body (an error, a 404 or 405...)
            await response(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def dispatch(self, request: Request) -> Response | JSONResponse | BatchedJSONResponse | SSEResponse:
        method = request.method
        if method == "OPTIONS":
            return OPTIONS_RESPONSE
        if method == "GET" and request.path == "/":
            return ROOT_RESPONSE
        if method == "GET" and request.path == METRICS_PATH:
            return self.exposition()
        if method == "GET" and request.path in PROBE_PATHS:
            probe = self.probe(request)
            if probe is not None:
                return probe
        target = self.router.match(method, request.path)
        if isinstance(target, Reply):
            return json_response(target.body, target.status)
        body = await self.read_body(request) if method in ("POST", "PUT") else None
        outcome = await self.router.run(
            target,
            RouteRequest(method, request.path, request.query_params, request.headers, body),
            guard=lambda call: until_disconnect(request, call),
        )
        del body
        if isinstance(outcome, EventStream):
            return SSEResponse(outcome.events, outcome.first, self.settings.sse_heartbeat_s, self.bytes_out)
        return json_response(outcome.body, outcome.status)

    def exposition(self) -> Response:
        """``GET /metrics``: the server's metrics in the Prometheus text format
        (:mod:`sandbox_core.metrics`); 404 naming the setting when ``[server] metrics = false``."""
        if not self.metrics.enabled:
            raise not_found("Metrics are off on this server (server.metrics = false)", setting="server.metrics")
        body, content_type = self.metrics.exposition()
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        return Response(200, headers, body)

    def probe(self, request: Request) -> JSONResponse | None:
        """Readiness (``GET /api/ready``): 200 while the server serves, 503 ``SHUTTING_DOWN``
        from the moment it begins to shut down. Liveness (``GET /api/ping``) asked without the
        server's token (the edge lets probes through, :data:`sandbox_core.edge.PROBES`): up, and
        nothing more (no ``runtimeId``); with the token (or none configured) it is the ``utils.ping``
        operation (None: the route answers)."""
        if request.path == "/api/ready":
            if self.registry.draining:
                return error_response(
                    SandboxError(ErrorCode.SHUTTING_DOWN, "The server is shutting down: it takes no new work")
                )
            return JSONResponse(_encoder.encode({"success": True, "status": "ready", "timestamp": now_iso()}), 200)
        if request.scope.get(ANONYMOUS):
            body = {"success": True, "status": "healthy", "message": "pong", "timestamp": now_iso()}
            return JSONResponse(_encoder.encode(body), 200)
        return None

    async def read_body(self, request: Request) -> bytes | bytearray:
        """The whole body (:func:`sandbox_core.intake.read_body`): 413 before any of it is read
        when its ``Content-Length`` is over ``max_body_bytes``; counted against the server's
        budget until the request is done (past it, a request waits for room, then 503); 408
        when its bytes stop coming for ``[server] body_timeout``."""
        body = await read_body(
            request.receive,
            request.scope["headers"],
            limit=self.settings.max_body_bytes,
            setting="transports.http.max_body_bytes",
            hold=request.hold,
            timeout=self.body_timeout,
        )
        request.body_read = True
        self.bytes_in(len(body))
        return body


class SSEResponse:
    """Sends each event of a stream as it comes, a comment line when the stream has been silent
    for ``heartbeat`` seconds, and stops (closing the stream) when the client disconnects.

    A slow client slows the stream: each event is sent before the next is pulled.
    """

    def __init__(
        self,
        events: AsyncGenerator[Any, None],
        first: Any,
        heartbeat: float,
        count: Callable[[float], None] | None = None,
    ) -> None:
        self.events = events
        self.first = first
        self.heartbeat = heartbeat
        self.count = count  # each event's size (sandbox_stream_bytes_total)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        lock = asyncio.Lock()
        last = time.monotonic()

        async def emit(data: bytes) -> None:
            nonlocal last
            async with lock:
                await send({"type": "http.response.body", "body": data, "more_body": True})
                last = time.monotonic()
            if self.count is not None:
                self.count(len(data))

        async def pump() -> None:
            try:
                if self.first is not None:
                    await emit(encode_event(self.first))
                async for event in self.events:
                    await emit(encode_event(event))
            except SandboxError as err:
                await emit(encode_event(stream_error_event(err)))

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(max(0.0, last + self.heartbeat - time.monotonic()))
                if time.monotonic() - last >= self.heartbeat:
                    await emit(b": keep-alive\n\n")

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        await send({"type": "http.response.start", "status": 200, "headers": SSE_RAW_HEADERS})
        try:
            # one task group: however the response ends (the stream is over, the client left, a
            # send failed, the request is cancelled), none of its tasks outlives it
            async with asyncio.TaskGroup() as group:
                pumping = group.create_task(pump(), name="sse pump")
                beating = group.create_task(keep_alive(), name="sse heartbeat")
                watching = group.create_task(disconnected(), name="sse disconnect watcher")
                await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
                beating.cancel()
                watching.cancel()
                if pumping.done():  # the stream is over (a failure of it has ended the group)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                pumping.cancel()
        except* OSError:
            pass  # the client went away while we were sending
        finally:
            await self.events.aclose()


def make_server(ctx: ServerContext) -> ServerMount:
    settings = ctx.settings if ctx.settings is not None else HttpSettings()
    budget = ctx.budget
    if settings.max_body_bytes_total is not None:  # the budget's former name, when set, sets it
        budget.total = settings.max_body_bytes_total
        budget.setting = "transports.http.max_body_bytes_total"
    if settings.body_wait_s is not None:
        budget.wait = settings.body_wait_s
    if budget.total < settings.max_body_bytes:
        raise ConfigError(
            f"{budget.setting} ({budget.total}) is below transports.http.max_body_bytes "
            f"({settings.max_body_bytes}): the largest body could never be read"
        )
    app = HttpApp(ctx.registry, settings, budget, ctx.body_timeout, ctx.metrics)
    return ServerMount(app=app, http_paths=("/api/",), catch_all=True)
