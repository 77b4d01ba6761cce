"""The contract's routes run in process: (method, path, query, headers, JSON body) in, a JSON
reply or a stream of event objects out, with no wire format in between.

Every transport that speaks the contract's routes renders the same outcome its own way: http as
an HTTP answer or SSE, ws as frames. So every route, present and future, and the generic
``POST /api/{service}/{operation}``, works on each of them with no per-route code::

    router = Router(registry, TABLE)  # a contract's route table (sandbox_core.contract.routes)
    target = router.match("POST", "/api/execute")          # a Target, or a Reply (404, 405)
    outcome = await router.run(target, RouteRequest(...))  # a Reply or an EventStream

Errors never escape :meth:`Router.run`: a :class:`~sandbox_core.errors.SandboxError` becomes a
Reply with the contract's error body. An event stream's first event is awaited before the
outcome is returned, so a stream that fails to start is a JSON error reply, as upstream.

What a call does, whatever its transport, is :func:`perform`: parameters bound through the
registry, the operation run, a stream's first event awaited, a SandboxError caught. It answers a
:class:`Done` (a unary result), a :class:`Failed` (the error, raised before any answer) or an
:class:`EventStream`. The router renders that as a Reply; the rpc transport, whose calls are not
routes, renders the same outcome in Cap'n Web terms. A stream that fails after it started ends
with :func:`stream_error_event` (:meth:`EventStream.each`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import msgspec

from .clock import now_iso
from .errors import ErrorCode, SandboxError, not_found, validation_error
from .registry import Operation, ServiceRegistry, validation_from_msgspec
from .routing import Route, RouteTable

T = TypeVar("T")


@dataclass(frozen=True)
class RouteRequest:
    """One request to run: ``headers`` with lower-case names; ``body`` is the JSON body as bytes
    (http), a memoryview of it (ws: a view of the frame) or a decoded JSON object, None when
    there is none."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | bytearray | Any = None


@dataclass(frozen=True)
class Target:
    """What a method and path resolve to: an operation, with its contract route (None for the
    generic route) and the parameters taken from the path."""

    op: Operation
    route: Route | None
    path_params: Mapping[str, str]

    @property
    def streaming(self) -> bool:
        return self.op.streaming if self.route is None else self.route.stream


@dataclass(frozen=True)
class Reply:
    """A JSON answer: ``body`` is a msgspec Struct or plain JSON values, for the transport to encode."""

    status: int
    body: Any


@dataclass
class EventStream:
    """A stream of event objects (each the data of one SSE event): ``first`` was pulled already
    (None for a stream that ended at once), the rest come from ``events``. Close it (``aclose``)
    when the reader goes away: that ends what produces it (a command, by the session rules)."""

    events: AsyncGenerator[Any, None]
    first: Any

    async def aclose(self) -> None:
        await self.events.aclose()

    async def each(self, error_event: Callable[[SandboxError], Any] | None = None) -> AsyncGenerator[Any, None]:
        """Every event, the first one included. With ``error_event``, a SandboxError raised
        after the stream started ends it with ``error_event(err)`` (:func:`stream_error_event`)
        instead of escaping. However it ends (read to the end, failed, closed by the reader),
        the stream is closed."""
        try:
            if self.first is not None:
                yield self.first
                async for event in self.events:
                    yield event
        except SandboxError as err:
            if error_event is None:
                raise
            yield error_event(err)
        finally:
            await self.aclose()


@dataclass(frozen=True)
class Done:
    """A unary operation's result, as its service returned it (not yet encoded)."""

    value: Any


@dataclass(frozen=True)
class Failed:
    """A call that failed before it answered: its parameters were refused, its service raised,
    or its stream failed before the first event."""

    error: SandboxError


#: What :func:`perform` answers.
Outcome: TypeAlias = Done | Failed | EventStream

#: An operation's parameters: a mapping by wire names (the registry decodes it), or the struct the
#: registry's ``decode`` or ``bind`` made of them (already validated, so not validated again).
Params: TypeAlias = msgspec.Struct | Mapping[str, Any]


def error_reply(err: SandboxError, operation: str | None = None) -> Reply:
    """The contract's error body for ``err``, naming the operation."""
    if operation and not err.operation:
        err.operation = operation
    return Reply(err.status, err.to_body())


def stream_error_event(err: SandboxError, *, details: bool = False) -> dict[str, Any]:
    """The event that ends a stream which failed after it started (as upstream's SSE); with
    ``details``, the error's details too (the rpc transport's, so a client can raise the typed
    error)."""
    event: dict[str, Any] = {"type": "error", "error": err.message, "code": err.code}
    if details:
        event["details"] = err.details
    event["timestamp"] = now_iso()
    return event


def header_session_id(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The session id from headers or query, as the contract's router reads it: ``Authorization:
    Bearer <id>`` (unless the edge took that header as the server's token), ``X-Session-Id``,
    ``?session=``, ``?sessionId=``."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return auth[7:].strip()
    return headers.get("x-session-id") or query.get("session") or query.get("sessionId")


def _identity(call: Awaitable[T]) -> Awaitable[T]:
    return call


async def open_stream(registry: ServiceRegistry, op: Operation, params: Params) -> EventStream:
    """Open the streaming operation ``op`` and await its first event, so that a stream which
    fails to start raises its SandboxError here (the stream is closed then)."""
    if isinstance(params, msgspec.Struct):  # made by the registry's decode or bind: validated
        events = registry.open(op, params)
    else:
        events = registry.stream(op.service, op.name, params)
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await events.aclose()
        raise
    return EventStream(events, first)


async def perform(
    registry: ServiceRegistry,
    op: Operation,
    params: Params | Callable[[], Params],
    *,
    streaming: bool | None = None,
    guard: Callable[[Awaitable[Any]], Awaitable[Any]] = _identity,
) -> Outcome:
    """Run ``op`` (a stream when ``streaming``, by default when the operation is one) with
    ``params`` (or what ``params()`` makes: its SandboxError is the call's too). ``guard`` wraps
    the service call of a unary operation (http cancels it when the client goes away).

    A SandboxError never escapes: it is the :class:`Failed` outcome, for the transport to render
    (:func:`error_reply`, or the rpc transport's rejection)."""
    try:
        bound = params() if callable(params) else params
        if op.streaming if streaming is None else streaming:
            return await open_stream(registry, op, bound)
        if isinstance(bound, msgspec.Struct):  # made by the registry's decode or bind: validated
            return Done(await guard(registry.invoke(op, bound)))
        return Done(await guard(registry.call(op.service, op.name, bound)))
    except SandboxError as err:
        return Failed(err)


class Router:
    """Runs the routes of ``table`` against the registry (see the module docstring)."""

    def __init__(self, registry: ServiceRegistry, table: RouteTable) -> None:
        self.registry = registry
        self.table = table

    def match(self, method: str, path: str) -> Target | Reply:
        """The operation ``method path`` calls, or the error reply: 405 for a known path with
        another method, 404 for anything else (a contract route of a service the server does not
        run, one left out by ``SANDBOX_DISABLED_PLUGINS``, included)."""
        route, path_params, known = self.table.match(method, path)
        if route is not None:
            try:
                return Target(self.registry.operation(route.service, route.operation), route, path_params)
            except SandboxError as err:
                return error_reply(err, f"{route.service}.{route.operation}")
        if known:
            return error_reply(
                SandboxError(
                    ErrorCode.METHOD_NOT_ALLOWED,
                    f"Method {method} is not allowed on {path}",
                    {"method": method, "path": path},
                    status=405,
                )
            )
        prefix = self.table.generic_prefix
        if method == "POST" and path.startswith(prefix):
            parts = path[len(prefix) :].split("/")
            if len(parts) == 2 and all(parts) and self.registry.has(parts[0]):
                try:
                    return Target(self.registry.operation(parts[0], parts[1]), None, {})
                except SandboxError as err:
                    return error_reply(err, f"{parts[0]}.{parts[1]}")
        return error_reply(not_found(path=path, method=method))

    async def run(
        self,
        target: Target,
        request: RouteRequest,
        *,
        guard: Callable[[Awaitable[Any]], Awaitable[Any]] = _identity,
    ) -> Reply | EventStream:
        """Run ``target`` with ``request``'s parameters (:func:`perform`). ``guard`` wraps the
        service call of a unary operation (http cancels it when the client goes away)."""
        outcome = await perform(
            self.registry,
            target.op,
            lambda: self.params(target, request),
            streaming=target.streaming,
            guard=guard,
        )
        if isinstance(outcome, Failed):
            return error_reply(outcome.error, target.op.qualname)
        if isinstance(outcome, EventStream):
            return outcome
        result = outcome.value
        if target.route is None:
            return Reply(200, {"success": True, "result": result, "timestamp": now_iso()})
        if target.route.wrap is not None:
            result = target.route.wrap(result)
        return Reply(200, result)

    def params(self, target: Target, request: RouteRequest) -> msgspec.Struct:
        """The operation's parameters: the body (POST, PUT), else the path and the route's query
        keys; then the session id from headers or query where the route takes it from there."""
        op, route = target.op, target.route
        if request.method in ("POST", "PUT"):
            body = request.body
            if body is None or (isinstance(body, (bytes, bytearray)) and (not body or body.isspace())):
                body = b"{}"
            if not isinstance(body, (bytes, bytearray, memoryview, Mapping)):
                raise SandboxError(
                    ErrorCode.VALIDATION_FAILED,
                    f"The request body must be a JSON object, not {type(body).__name__}",
                    {"field": "body"},
                )
            if target.path_params:  # (``POST /api/process/{id}/stdin``): the path's values join the body's
                if not isinstance(body, Mapping):
                    try:
                        body = msgspec.json.decode(body)
                    except msgspec.DecodeError as exc:
                        raise validation_from_msgspec(exc) from None
                    except RecursionError:
                        raise validation_error("The request body is nested too deeply", "body") from None
                    if not isinstance(body, dict):
                        raise validation_error("The request body must be a JSON object", "body")
                body = {**body, **target.path_params}
            params = self.registry.decode(op, body)
            del body  # what the params need of it, they hold (a large body is not kept twice)
        else:
            raw: dict[str, Any] = dict(target.path_params)
            if route is not None:
                for key in route.query:
                    if key in request.query:
                        raw[key] = request.query[key]
            params = self.registry.decode(op, raw, strict=False)
        if route is not None and route.session_fallback and getattr(params, "session_id", None) is None:
            sid = header_session_id(request.headers, request.query)
            if sid is not None:  # validated as if the body had it
                params = self.registry.replace(op, params, {"sessionId": sid})
        return params


def announces_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an ASGI request's headers announce a body (a non-zero ``Content-Length`` or a
    ``Transfer-Encoding``). An answer given without reading it must close the connection: the
    connection cannot serve another request, and a client that reused it (it may, before it
    sees the close) would get no answer."""
    for key, value in headers:
        key = key.lower()
        if (key == b"content-length" and value.strip() not in (b"0", b"")) or key == b"transfer-encoding":
            return True
    return False
