"""``SandboxControlAPI``: the object tree a capnweb peer gets at ``/rpc``.

Its getters (``commands``, ``files``, ``processes``, ``ports``, ``git``, ``interpreter``,
``utils``, ``backup``, ``watch``, then every other registered service by its name) each return
a target whose methods are the contract's (:mod:`.methods`) plus, for the service of that name,
each of its operations in camelCase with positional arguments in its Python signature's order.
``call(service, operation, params)`` runs any operation with named parameters (as the http
transport's ``POST /api/{service}/{operation}``; the Python client's way to reach operations
without a contract name).

Every call goes through the registry. A :class:`SandboxError` rejects the call as upstream does:
``Error(message)`` with own properties ``{code, details}`` (and ``httpStatus`` when the status is
not the one the code's table entry gives). A streaming operation answers a ``ReadableStream`` of
SSE bytes (``data: <json>\\n\\n``; ``event: <type>`` before it for ``commands.executeStream``); an
operation that yields bytes answers those bytes as they are. The engine's flow control bounds
what is in flight; when the reader cancels, the source is closed, and with it the operation (an
exec stream's command ends, by the session rules).
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec
import structlog

from sandbox_core.clock import now_iso
from sandbox_core.contract.models.files import FileMetadataEvent
from sandbox_core.errors import ErrorCode, SandboxError, lookup, validation_error
from sandbox_core.registry import Operation, ServiceRegistry
from sandbox_core.sse import encode_event

from .capnweb import UNDEFINED, ReadableStream, RpcError, RpcTarget
from .methods import CONTRACT_GETTERS, METHODS, RESERVED, Method, absent, camel, clean, named_params, trim

log = structlog.get_logger("sandbox.rpc")

_KEEP = (bytes, bytearray, memoryview, datetime.datetime)


def rpc_error(err: SandboxError) -> RpcError:
    """The contract's rejection for a SandboxError: ``Error`` with props ``{code, details}``."""
    props: dict[str, Any] = {"code": err.code, "details": err.details}
    entry = lookup(err.code)
    if err.status != (entry.status if entry is not None else 500):
        props["httpStatus"] = err.status
    return RpcError("Error", err.message, props)


def builtins(value: Any) -> Any:
    """A service's result as plain data for the engine (camelCase keys, bytes kept as bytes)."""
    return msgspec.to_builtins(value, builtin_types=_KEEP)


def _event_type(event: Any) -> str | None:
    if isinstance(event, msgspec.Struct):
        tag = event.__struct_config__.tag
        return tag if isinstance(tag, str) else None
    if isinstance(event, dict):
        kind = event.get("type")
        return kind if isinstance(kind, str) else None
    return None


def error_event(err: SandboxError) -> dict[str, Any]:
    """The event that ends a stream which failed (upstream's ``{type: 'error', error}``, plus the
    code and details, so a client can raise the typed error)."""
    return {"type": "error", "error": err.message, "code": err.code, "details": err.details, "timestamp": now_iso()}


class Dispatcher:
    """Runs the methods of the object tree against the registry."""

    def __init__(self, registry: ServiceRegistry, heartbeat_s: float | None = None) -> None:
        self.registry = registry
        self.heartbeat_s = heartbeat_s  # an empty chunk on a stream silent this long

    # unary and streaming calls -----------------------------------------------------------------

    async def invoke(self, method: Method, args: Sequence[Any], named: dict[str, Any] | None = None) -> Any:
        """Run ``method`` with positional ``args`` (or, for the generic named call, ``named``)."""
        try:
            return await self._invoke(method, args, named)
        except SandboxError as err:
            raise rpc_error(err) from None
        except RpcError:
            raise
        except Exception as exc:  # a bug of ours: this call fails, the connection carries on
            log.error("rpc.call_failed", method=method.qualname, error=repr(exc), exc_info=exc)
            raise rpc_error(
                SandboxError(ErrorCode.INTERNAL_ERROR, f"Internal error in {method.qualname}", {})
            ) from None

    async def _invoke(self, method: Method, args: Sequence[Any], named: dict[str, Any] | None) -> Any:
        if method.constant is not None:
            named_params(method, args)  # the argument count is still checked
            return method.constant()
        if method.special == "read_file":
            return await self._read_file(method, args)
        if method.special == "interpreter":
            return await self._interpreter(method, args)
        op = self._operation(method)
        params: Any
        if named is not None:
            params = named
        elif method.slots is None:
            params = self.registry.bind(op, [clean(v) for v in trim(args)], omit=absent)
        else:
            params = named_params(method, args)
        if op.streaming:
            return await self._stream(method, op, params)
        result = await self.registry.call(op.service, op.name, params)
        value = builtins(result)
        return method.shape(value) if method.shape is not None else value

    async def call_named(self, service: Any, operation: Any, params: Any) -> Any:
        """``api.call(service, operation, params)``: any operation with named parameters."""
        if not isinstance(service, str) or not isinstance(operation, str):
            raise rpc_error(validation_error("call(service, operation, params) takes two strings", "operation"))
        if absent(params):
            params = {}
        if not isinstance(params, dict):
            raise rpc_error(validation_error("call(service, operation, params): params must be an object", "params"))
        return await self.invoke(Method(service, camel(operation), service, operation), (), clean(params))

    def _operation(self, method: Method) -> Operation:
        if not self.registry.has(method.service):
            raise SandboxError(
                ErrorCode.UNKNOWN_ERROR,
                f"{method.qualname} is not available: no '{method.service}' service is installed on this server",
                {"service": method.service, "method": method.qualname},
                status=404,
            )
        return self.registry.operation(method.service, method.operation)

    async def _stream(self, method: Method, op: Operation, params: Any) -> ReadableStream:
        try:
            events = self.registry.stream(op.service, op.name, params)
            first, has_first = await _first(events)
        except SandboxError as err:
            if not method.errors_in_band:
                raise
            return ReadableStream(_single(self._encode(method, error_event(err))))
        return ReadableStream(self._pump(method, events, first, has_first), heartbeat=self.heartbeat_s)

    async def _pump(
        self, method: Method, events: AsyncGenerator[object, None], first: object, has_first: bool
    ) -> AsyncIterator[bytes]:
        """The stream's chunks: one per event. However it ends (read to the end, cancelled by the
        reader, the connection gone), the operation's generator is closed."""
        try:
            if has_first:
                chunk = self._encode(method, first)
                if chunk:
                    yield chunk
            async for event in events:
                chunk = self._encode(method, event)
                if chunk:
                    yield chunk
        except SandboxError as err:
            yield self._encode(method, error_event(err))
        finally:
            await events.aclose()

    def _encode(self, method: Method, event: object) -> bytes:
        if isinstance(event, (bytes, bytearray, memoryview)):
            return bytes(event)  # an operation of raw bytes (files.readBytes): sent as they are
        if method.event_filter is not None:
            shaped = method.event_filter(builtins(event))
            if shaped is None:
                return b""
            event = shaped
        return encode_event(event, _event_type(event) if method.event_lines else None)

    # files.readFile with {encoding: 'none'} -------------------------------------------------

    async def _read_file(self, method: Method, args: Sequence[Any]) -> Any:
        params = named_params(method, args)
        if params.get("encoding") != "none":
            return builtins(await self.registry.call("files", "read", params))
        del params["encoding"]
        # the bytes first: a file that cannot be read fails here with its error and details
        data = self.registry.stream("files", "read_bytes", params)
        first, has_first = await _first(data)
        try:
            metadata = None
            async with contextlib.aclosing(self.registry.stream("files", "read_stream", params)) as events:
                async for event in events:
                    metadata = event
                    break
        except BaseException:
            await data.aclose()
            raise
        if not isinstance(metadata, FileMetadataEvent):
            await data.aclose()
            message = getattr(metadata, "error", "the file changed while it was opened")
            raise SandboxError(ErrorCode.FILESYSTEM_ERROR, str(message), {"path": params.get("path")})
        return {
            "success": True,
            "path": params["path"],
            "size": metadata.size,
            "mimeType": metadata.mime_type,
            "timestamp": now_iso(),
            "content": ReadableStream(_bytes(data, first, has_first)),
        }

    # interpreter: contexts with Dates, runs that call the caller's callbacks ------------------

    async def _interpreter(self, method: Method, args: Sequence[Any]) -> Any:
        self._operation(method)  # no interpreter service installed: the same clear rejection
        if method.name == "listCodeContexts":
            named_params(method, args)  # the argument count is still checked
            result = builtins(await self.registry.call("interpreter", "list_code_contexts"))
            return [_code_context(c) for c in result["contexts"]]
        if method.name == "createCodeContext":
            params = named_params(method, args)
            if "envVars" in params:  # the SDK's option name; the operation's is the contract's
                params["env_vars"] = params.pop("envVars")
            created = builtins(await self.registry.call("interpreter", "create_code_context", params))
            when = created["timestamp"]
            return _code_context(
                {"id": created["contextId"], "language": created["language"], "cwd": created["cwd"], "createdAt": when}
            )
        return await self._run_code_stream(method, args)

    async def _run_code_stream(self, method: Method, args: Sequence[Any]) -> Any:
        """``runCodeStream(ctxId, code, lang, {onStdout, onStderr, onResult, onError}, timeoutMs?)``:
        each event calls the caller's callback (awaited: a slow caller slows the run's reader)."""
        params = named_params(method, args)
        callbacks = params.pop("callbacks", None) or {}
        if not isinstance(callbacks, dict):
            raise validation_error("Invalid field 'callbacks': an object of functions is expected", "callbacks")
        events = self.registry.stream("interpreter", "run_code", params)
        async with contextlib.aclosing(events):
            async for event in events:
                value = builtins(event)
                kind = value.pop("type", None)
                name, arg = {
                    "stdout": ("onStdout", {"text": value.get("text"), "timestamp": time.time() * 1000}),
                    "stderr": ("onStderr", {"text": value.get("text"), "timestamp": time.time() * 1000}),
                    "result": ("onResult", value),
                    "error": (
                        "onError",
                        {
                            "name": value.get("ename") or "Error",
                            "message": value.get("evalue") or value.get("error") or "Unknown error",
                            "traceback": value.get("traceback") or [],
                        },
                    ),
                }.get(kind or "", (None, None))
                callback = callbacks.get(name) if name else None
                if callback is not None and callable(callback):
                    await callback(arg)
        return UNDEFINED  # Promise<void>


def _code_context(ctx: dict[str, Any]) -> dict[str, Any]:
    """A context as the contract's RPC answers it: ``createdAt`` and ``lastUsed`` are Dates."""

    def date(value: Any) -> datetime.datetime:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return datetime.datetime.now(datetime.UTC)

    created = date(ctx.get("createdAt"))
    used = date(ctx.get("lastUsed")) if ctx.get("lastUsed") else created
    return {"id": ctx["id"], "language": ctx["language"], "cwd": ctx["cwd"], "createdAt": created, "lastUsed": used}


async def _first(events: AsyncGenerator[Any, None]) -> tuple[Any, bool]:
    """The first event of a stream (so a failure to open it is the call's), closing it on error."""
    try:
        return await events.__anext__(), True
    except StopAsyncIteration:
        return None, False
    except BaseException:
        await events.aclose()
        raise


async def _single(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


async def _bytes(data: AsyncGenerator[Any, None], first: Any, has_first: bool) -> AsyncIterator[bytes]:
    try:
        if has_first:
            yield first
        async for chunk in data:
            yield chunk
    finally:
        await data.aclose()


# the object tree -------------------------------------------------------------------------------


class ServiceTarget(RpcTarget):
    """Base of one getter's target: its methods are made per getter (see :func:`target_class`)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher


def _method(method: Method) -> Callable[..., Any]:
    async def call(self: ServiceTarget, *args: Any) -> Any:
        return await self._dispatcher.invoke(method, args)

    call.__name__ = method.name
    call.__qualname__ = f"{method.getter}.{method.name}"
    call.__doc__ = f"{method.qualname} → {method.service}.{method.operation}"
    return call


def target_class(getter: str, methods: Iterable[Method]) -> type[ServiceTarget]:
    """The target class of one getter, with one method per :class:`Method`."""
    namespace: dict[str, Any] = {"__doc__": f"The {getter!r} target of SandboxControlAPI."}
    for method in methods:
        namespace[method.name] = _method(method)
    name = "".join(part[:1].upper() + part[1:] for part in getter.replace("-", "_").split("_")) + "API"
    return type(name, (ServiceTarget,), namespace)


def getter_methods(registry: ServiceRegistry, getter: str) -> list[Method]:
    """A getter's methods: the contract's, then every operation of the service of that name
    under its camelCase name (the contract's name wins where both exist)."""
    methods = {m.name: m for m in METHODS if m.getter == getter}
    if registry.has(getter):
        for op in registry.operations():
            if op.service == getter:
                methods.setdefault(camel(op.name), Method(getter, camel(op.name), getter, op.name))
    return list(methods.values())


class SandboxControlAPI(RpcTarget):
    """The main object of ``/rpc`` (upstream's ``SandboxControlAPI``)."""

    def __init__(self, dispatcher: Dispatcher, targets: Mapping[str, ServiceTarget]) -> None:
        self._dispatcher = dispatcher
        self._targets = targets

    def _target(self, name: str) -> ServiceTarget:
        return self._targets[name]

    @property
    def commands(self) -> ServiceTarget:
        return self._target("commands")

    @property
    def files(self) -> ServiceTarget:
        return self._target("files")

    @property
    def processes(self) -> ServiceTarget:
        return self._target("processes")

    @property
    def ports(self) -> ServiceTarget:
        return self._target("ports")

    @property
    def git(self) -> ServiceTarget:
        return self._target("git")

    @property
    def interpreter(self) -> ServiceTarget:
        return self._target("interpreter")

    @property
    def utils(self) -> ServiceTarget:
        return self._target("utils")

    @property
    def backup(self) -> ServiceTarget:
        return self._target("backup")

    @property
    def watch(self) -> ServiceTarget:
        return self._target("watch")

    async def call(self, service: Any, operation: Any, params: Any = None) -> Any:
        """Run ``service.operation`` with named (camelCase) parameters; a stream answers a
        ReadableStream of SSE bytes."""
        return await self._dispatcher.call_named(service, operation, params)


def _getter(name: str) -> property:
    def get(self: SandboxControlAPI) -> ServiceTarget:
        return self._target(name)

    return property(get, doc=f"the {name!r} service")


class ApiFactory:
    """Makes the main object of each connection: the getters' targets are made once, from
    the registry's services (a service's getter is its name; see :func:`getter_methods`)."""

    def __init__(self, registry: ServiceRegistry, heartbeat_s: float | None = None) -> None:
        self.dispatcher = Dispatcher(registry, heartbeat_s)
        services = sorted({op.service for op in registry.operations()})
        getters = list(CONTRACT_GETTERS)
        for name in services:
            if name in getters:
                continue
            if name in RESERVED or not name.isidentifier() or name.startswith("_"):
                log.warning("rpc.service_without_getter", service=name, reason="its name is reserved or not a name")
                continue
            getters.append(name)
        self.targets: dict[str, ServiceTarget] = {
            getter: target_class(getter, getter_methods(registry, getter))(self.dispatcher) for getter in getters
        }
        extra = [g for g in getters if g not in CONTRACT_GETTERS]
        namespace: dict[str, Any] = {g: _getter(g) for g in extra}
        self.api_class: type[SandboxControlAPI] = type("SandboxControlAPI", (SandboxControlAPI,), namespace)

    def __call__(self) -> SandboxControlAPI:
        return self.api_class(self.dispatcher, self.targets)
