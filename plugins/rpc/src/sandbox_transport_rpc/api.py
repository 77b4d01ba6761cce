"""``SandboxControlAPI``: the object tree a capnweb peer gets at ``/rpc``.

Its getters (``commands``, ``files``, ``processes``, ``ports``, ``git``, ``interpreter``,
``utils``, ``backup``, ``watch``, then every other registered service by its name) each return
a target whose methods are the contract's (:mod:`.methods`) plus, for the service of that name,
each of its operations in camelCase with positional arguments in its Python signature's order.
``call(service, operation, params)`` runs any operation with named parameters (as the http
transport's ``POST /api/{service}/{operation}``; the Python client's way to reach operations
without a contract name).

Every call runs as the http and ws transports' routes run (:func:`sandbox_core.router.perform`:
parameters bound through the registry, a stream's first event awaited); this module only answers
the outcome in Cap'n Web terms, as each method's entry in :mod:`.methods` says. A
:class:`SandboxError` rejects the call as upstream does:
``Error(message)`` with own properties ``{code, details}`` (and ``httpStatus`` when the status is
not the one the code's table entry gives). A streaming operation answers a ``ReadableStream`` of
SSE bytes (``data: <json>\\n\\n``; ``event: <type>`` before it for ``commands.executeStream``); an
operation that yields bytes answers those bytes as they are. The engine's flow control bounds
what is in flight; when the reader cancels, the source is closed, and with it the operation (an
exec stream's command ends, by the session rules).
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec
import structlog

from capnweb import UNDEFINED, ReadableStream, RpcError, RpcTarget
from sandbox_core.clock import now_iso
from sandbox_core.contract.models.files import FileMetadataEvent
from sandbox_core.errors import ErrorCode, SandboxError, lookup, validation_error
from sandbox_core.registry import Operation, ServiceRegistry
from sandbox_core.router import Done, EventStream, Failed, Params, open_stream, perform, stream_error_event
from sandbox_core.sse import encode_event

from .methods import (
    CONTRACT_GETTERS,
    METHODS,
    RESERVED,
    Answer,
    Callbacks,
    Method,
    absent,
    callbacks_arg,
    camel,
    clean,
    named_params,
    trim,
)

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
    """The event that ends a stream which failed: the router's, with the error's details (so a
    client can raise the typed error)."""
    return stream_error_event(err, details=True)


class ApiRunner:
    """Runs the methods of the object tree: each call through :func:`sandbox_core.router.perform`
    (as the http and ws transports' routes), its outcome answered as the method's table entry
    says (:class:`~.methods.Answer`)."""

    def __init__(self, registry: ServiceRegistry, heartbeat_s: float | None = None) -> None:
        self.registry = registry
        self.heartbeat_s = heartbeat_s  # an empty chunk on a stream silent this long

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
        op = self._operation(method)
        params = self._params(method, op, args, named)
        answer = method.answer or (Answer.SSE if op.streaming else Answer.VALUE)
        callbacks = callbacks_arg(method, args) if answer is Answer.CALLBACKS else {}
        if answer is Answer.FILE and isinstance(params, Mapping) and params.get("encoding") == "none":
            return await self._file_with_bytes(dict(params))
        outcome = await perform(self.registry, op, params)
        if isinstance(outcome, Failed):
            if method.errors_in_band:
                return ReadableStream(_single(self._encode(method, error_event(outcome.error))))
            raise outcome.error
        if isinstance(outcome, Done):
            value = builtins(outcome.value)
            return method.shape(value) if method.shape is not None else value
        if answer is Answer.CALLBACKS:
            found = method.callbacks
            assert found is not None
            await _call_back(found[1], callbacks, outcome)
            return UNDEFINED  # Promise<void>
        return ReadableStream(self._sse(method, outcome), heartbeat=self.heartbeat_s)

    def _params(self, method: Method, op: Operation, args: Sequence[Any], named: dict[str, Any] | None) -> Params:
        """The call's parameters, for the registry to validate: named ones as they came, else
        the arguments by the method's slots, else by position in the operation's signature."""
        if named is not None:
            return named
        if method.slots is None:
            return self.registry.bind(op, [clean(v) for v in trim(args)], omit=absent)
        return named_params(method, args)

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

    async def _sse(self, method: Method, stream: EventStream) -> AsyncIterator[bytes]:
        """The stream's chunks: one per event, a failure after the start its error event. However
        it ends (read to the end, cancelled by the reader, the connection gone), the operation's
        generator is closed (:meth:`EventStream.each`)."""
        async for event in stream.each(error_event):
            chunk = self._encode(method, event)
            if chunk:
                yield chunk

    def _encode(self, method: Method, event: object) -> bytes:
        if isinstance(event, (bytes, bytearray, memoryview)):
            return bytes(event)  # an operation of raw bytes (files.readBytes): sent as they are
        if method.event_filter is not None:
            shaped = method.event_filter(builtins(event))
            if shaped is None:
                return b""
            event = shaped
        return encode_event(event, _event_type(event) if method.event_lines else None)

    async def _file_with_bytes(self, params: dict[str, Any]) -> Any:
        """``files.readFile`` with ``{encoding: 'none'}`` (:attr:`Answer.FILE`). Not data: the
        contract answers the file's metadata with a ReadableStream of its bytes, and no one
        operation gives both (``files.read_bytes`` gives the bytes, ``files.read_stream``'s first
        event the metadata), so this call runs two. The bytes first: a file that cannot be read
        fails here with its error and details."""
        del params["encoding"]
        data = await open_stream(self.registry, self.registry.operation("files", "read_bytes"), params)
        try:
            exact = {**params, "encoding": "base64"}  # the range's edges as the bytes have them
            meta = await open_stream(self.registry, self.registry.operation("files", "read_stream"), exact)
            await meta.aclose()
        except BaseException:
            await data.aclose()
            raise
        metadata = meta.first
        if not isinstance(metadata, FileMetadataEvent):
            await data.aclose()
            message = getattr(metadata, "error", "the file changed while it was opened")
            raise SandboxError(ErrorCode.FILESYSTEM_ERROR, str(message), {"path": params.get("path")})
        answer: dict[str, Any] = {
            "success": True,
            "path": params["path"],
            "size": metadata.size,
            "mimeType": metadata.mime_type,
            "timestamp": now_iso(),
            "content": ReadableStream(data.each()),
        }
        if metadata.offset is not None:  # ours: a ranged or tail read says which bytes it sends
            answer.update(offset=metadata.offset, length=metadata.length, totalSize=metadata.total_size)
        return answer


async def _call_back(slot: Callbacks, callbacks: Mapping[str, Any], stream: EventStream) -> None:
    """Each event of ``stream`` calls the caller's callback its type names (awaited: a slow
    caller slows the stream's reader); a failure of the stream rejects the call."""
    async for event in stream.each():
        value = builtins(event)
        name, make = slot.on.get(value.pop("type", None) or "", (None, None))
        callback = callbacks.get(name) if name else None
        if callback is not None and callable(callback) and make is not None:
            await callback(make(value))


async def _single(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


# the object tree -------------------------------------------------------------------------------


class ServiceTarget(RpcTarget):
    """Base of one getter's target: its methods are made per getter (see :func:`target_class`)."""

    def __init__(self, runner: ApiRunner) -> None:
        self._runner = runner


def _method(method: Method) -> Callable[..., Any]:
    async def call(self: ServiceTarget, *args: Any) -> Any:
        return await self._runner.invoke(method, args)

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

    def __init__(self, runner: ApiRunner, targets: Mapping[str, ServiceTarget]) -> None:
        self._runner = runner
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
        return await self._runner.call_named(service, operation, params)


def _getter(name: str) -> property:
    def get(self: SandboxControlAPI) -> ServiceTarget:
        return self._target(name)

    return property(get, doc=f"the {name!r} service")


class ApiFactory:
    """Makes the main object of each connection: the getters' targets are made once, from
    the registry's services (a service's getter is its name; see :func:`getter_methods`)."""

    def __init__(self, registry: ServiceRegistry, heartbeat_s: float | None = None) -> None:
        self.runner = ApiRunner(registry, heartbeat_s)
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
            getter: target_class(getter, getter_methods(registry, getter))(self.runner) for getter in getters
        }
        extra = [g for g in getters if g not in CONTRACT_GETTERS]
        namespace: dict[str, Any] = {g: _getter(g) for g in extra}
        self.api_class: type[SandboxControlAPI] = type("SandboxControlAPI", (SandboxControlAPI,), namespace)

    def __call__(self) -> SandboxControlAPI:
        return self.api_class(self.runner, self.targets)
