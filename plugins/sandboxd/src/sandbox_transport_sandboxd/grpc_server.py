"""The gRPC listener: a ``grpc.aio`` server with this transport's limits, the token check and
every method of a table of :class:`GrpcService` (so no generated servicer code is needed: a
method is served under the spec's name with the checked-in message classes).

A handler raises :class:`SandboxError` (what the registry raises) and the caller gets the status
:func:`errors.mapped` gives it; any other exception is logged and answered INTERNAL.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import structlog
from google.protobuf.message import Message

from sandbox_core.edge import EdgePolicy
from sandbox_core.errors import SandboxError

from .errors import mapped
from .settings import SandboxdSettings

log = structlog.get_logger("sandbox.transport.sandboxd")

#: Trailing metadata of a failed call: the error code of the sandbox's error table
#: (``VALIDATION_FAILED``, ``FILE_NOT_FOUND``...) and, when it names one, the offending field.
ERROR_CODE_KEY = "sandbox-error-code"
ERROR_FIELD_KEY = "sandbox-error-field"

if TYPE_CHECKING:  # grpc's classes are generic in its type stubs only
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
Unary: TypeAlias = "Callable[[Any, Context], Awaitable[Message]]"
Streaming: TypeAlias = "Callable[[Any, Context], AsyncGenerator[Message, None]]"


@dataclass(frozen=True)
class Rpc:
    """One method: its name in the service, its message classes and its handler (a coroutine
    function for a unary method, an async generator function for a server stream)."""

    name: str
    request: type[Message]
    response: type[Message]
    handler: Callable[[Any, Context], Any]  # Unary, or Streaming when ``streaming``
    streaming: bool = False


@dataclass(frozen=True)
class GrpcService:
    """A service as it is named on the wire (``package.Service``) and its methods."""

    name: str
    rpcs: tuple[Rpc, ...]


class _CallEnded(Exception):
    """A write to a call failed: its client has gone (or it was cancelled); nothing to answer."""


async def _abort(context: Context, exc: BaseException, method: str) -> None:
    if isinstance(exc, SandboxError):
        # for programs, beside the status: the service's own error code and the field it names
        trailing = [(ERROR_CODE_KEY, exc.code)]
        field = exc.details.get("field")
        if isinstance(field, str) and field.isprintable():
            trailing.append((ERROR_FIELD_KEY, field))
        await context.abort(mapped(exc).grpc, exc.message, tuple(trailing))
    log.error("sandboxd.rpc_failed", method=method, error=repr(exc), exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"Internal error in {method}: {type(exc).__name__}")


def _method_handler(path: str, rpc: Rpc) -> Handler:
    if rpc.streaming:
        stream: Streaming = rpc.handler

        async def serve_stream(request: Any, context: Context) -> None:
            # A coroutine that writes (not an async generator that grpc iterates): every way a
            # call ends (the client cancels, leaves, its deadline passes, a write fails, the
            # server stops) reaches this frame, and ``aclosing`` closes the handler's stream at
            # once (a Start's process ends), never later through the garbage collector.
            try:
                async with contextlib.aclosing(stream(request, context)) as messages:
                    async for message in messages:
                        try:
                            await context.write(message)  # waits while the client is not reading
                        except Exception as exc:  # the call is over (grpc raises its own errors)
                            raise _CallEnded from exc
            except (grpc.aio.AbortError, _CallEnded):
                return
            except Exception as exc:
                await _abort(context, exc, path)

        return grpc.unary_stream_rpc_method_handler(
            serve_stream,
            request_deserializer=rpc.request.FromString,
            response_serializer=rpc.response.SerializeToString,
        )
    unary: Unary = rpc.handler

    async def serve_unary(request: Any, context: Context) -> Message:
        try:
            return await unary(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, path)
            raise  # not reached: abort raises

    return grpc.unary_unary_rpc_method_handler(
        serve_unary,
        request_deserializer=rpc.request.FromString,
        response_serializer=rpc.response.SerializeToString,
    )


def _denied(request_streaming: bool, response_streaming: bool) -> Handler:
    """A handler of that kind that refuses the call: UNAUTHENTICATED."""
    message = "Authentication required: send metadata authorization: Bearer <token>"

    async def deny(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if request_streaming and response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class TokenCheck(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Every call needs the server's token (when it has one) in its metadata, ``authorization``
    or ``x-forwarded-authorization`` (what passes the agent-sandbox router): ``Bearer <token>``.
    A call without it is refused by a handler of its method's kind (unary or streaming either way)."""

    def __init__(self, policy: EdgePolicy) -> None:
        self.policy = policy
        self.deny = {(a, b): _denied(a, b) for a in (False, True) for b in (False, True)}

    async def intercept_service(  # type: ignore[override]  # grpc-stubs: a lookup may find no handler
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)  # a lookup: None for a method nobody serves
        metadata = details.invocation_metadata or ()
        headers = [(key.encode(), value if isinstance(value, bytes) else value.encode()) for key, value in metadata]
        if handler is None or self.policy.authorized_headers(headers):
            return handler
        return self.deny[(handler.request_streaming, handler.response_streaming)]


def build_server(policy: EdgePolicy, settings: SandboxdSettings, services: Sequence[GrpcService]) -> grpc.aio.Server:
    """A server with every method of ``services`` (and, with ``settings.reflection``, gRPC server
    reflection describing them), not yet bound nor started."""
    options = [
        ("grpc.so_reuseport", 0),  # a port in use is an error, never a second server sharing it
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ]
    server = grpc.aio.server(interceptors=[TokenCheck(policy)], options=options)
    for service in services:
        handlers = {rpc.name: _method_handler(f"/{service.name}/{rpc.name}", rpc) for rpc in service.rpcs}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.name, handlers),))
    if settings.reflection:
        from grpc_reflection.v1alpha import reflection

        from .descriptors import spec_pool

        names = [service.name for service in services]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server, pool=spec_pool())
    return server


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC writes a target (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
