"""The service registry: named services, their operations, typed parameters and calls.

A service is a plain class whose public operations are async methods (or async generator
methods for streams) marked with :func:`operation`. Parameters are typed; the registry
builds one msgspec struct per operation (camelCase on the wire) to decode and validate them,
so every transport gets the same validation and the same error naming the bad field. A
parameter whose contract name is not camelCase says so with :class:`WireName`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import inspect
import re
import typing
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload, runtime_checkable

import msgspec
import structlog
from structlog.typing import FilteringBoundLogger

if TYPE_CHECKING:
    from .plugins import Hooks

from .errors import ErrorCode, SandboxError, not_found, validation_error
from .memory import tune_malloc
from .metrics import Metrics

log = structlog.get_logger("sandbox.registry")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_OP_ATTR = "__sandbox_operation__"


@overload
def operation(func: F, /) -> F: ...
@overload
def operation(*, name: str | None = None) -> Callable[[F], F]: ...
def operation(func: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark an async method (or async generator method, for streams) as a service operation.

    The method itself is returned unchanged, so its signature stays what the type checker sees.
    """

    def mark(f: F) -> F:
        if not (inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)):
            raise TypeError(f"operation {f.__qualname__} must be async")
        setattr(f, _OP_ATTR, name or f.__name__)
        return f

    return mark(func) if func is not None else mark


@dataclass(frozen=True)
class WireName:
    """A parameter's name on the wire when it is not the camelCase of its Python name: the
    outermost metadata of its annotation, ``context_id: Annotated[str, WireName("context_id")]``
    (the contract's interpreter bodies are snake_case). Every transport and the client then use
    that name: in JSON bodies, in the generic call's named parameters, in errors naming the field."""

    name: str


@runtime_checkable
class SupportsStartup(Protocol):
    """A service with work to do before it is called: the registry awaits its ``startup()``
    once, after every service is built and before any operation of it is served (those a
    service requires first, else in the order the services were registered; one that fails
    stops the server from starting)."""

    async def startup(self) -> None: ...


@runtime_checkable
class SupportsAclose(Protocol):
    """A service with something to release when the server stops: the registry awaits its
    ``aclose()`` once, every service's at the same time, after the transports have stopped
    serving (a failure is logged and stops no other service's close)."""

    async def aclose(self) -> None: ...


class Service(SupportsStartup, SupportsAclose, Protocol):
    """The lifecycle a service may declare: a service is any object (its operations marked with
    :func:`operation`); ``startup()`` and ``aclose()`` are each optional, and the registry
    calls whichever of them it has (:class:`SupportsStartup`, :class:`SupportsAclose`)."""


@dataclass(frozen=True)
class ServiceSpec:
    """What a plugin registers: a name, a factory taking a ServiceContext, optional settings type.

    ``requires`` names the services this one reaches through ``registry.get`` and cannot work
    without: the registry refuses to start without them (one left out by
    ``SANDBOX_DISABLED_PLUGINS``, or not installed), and starts them before this one."""

    name: str
    factory: Callable[[ServiceContext], object]
    settings: type[msgspec.Struct] | None = None
    description: str = ""
    requires: tuple[str, ...] = ()


@dataclass
class ServiceContext:
    """What a service gets at construction: its settings, the workspace and the registry."""

    name: str
    settings: Any  # an instance of the ServiceSpec's settings type (None when it has none)
    workspace: str
    registry: ServiceRegistry
    log: FilteringBoundLogger


@dataclass(frozen=True)
class Operation:
    service: str
    name: str
    func: Callable[..., Any]
    params: type[msgspec.Struct]
    streaming: bool
    param_names: tuple[str, ...]
    #: wire names of the parameters typed ``msgspec.Raw`` (see :func:`_raw_value`)
    raw_fields: frozenset[str] = frozenset()

    @property
    def qualname(self) -> str:
        return f"{self.service}.{self.name}"


_AT_FIELD = re.compile(r"at `\$\.?([^`]*)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def validation_from_msgspec(exc: Exception, what: str = "request body") -> SandboxError:
    """Turn a msgspec decode/validation error into VALIDATION_FAILED naming the field."""
    text = str(exc)
    fieldname: str | None = None
    for pattern in (_MISSING_FIELD, _UNKNOWN_FIELD, _AT_FIELD):
        m = pattern.search(text)
        if m and m.group(1):
            fieldname = m.group(1)
            break
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return validation_error(f"Invalid JSON in {what}: {text}")
    if fieldname:
        return validation_error(f"Invalid field '{fieldname}' in {what}: {text}", fieldname)
    return validation_error(f"Invalid {what}: {text}")


def _raw_value(field: str, value: Any) -> msgspec.Raw:
    """A mapping's value for a parameter typed ``msgspec.Raw``: its JSON text."""
    if isinstance(value, msgspec.Raw):
        return value
    try:
        return msgspec.Raw(msgspec.json.encode(value))
    except (TypeError, ValueError) as exc:
        raise validation_error(f"Invalid field '{field}': {exc}", field) from None


#: JSON tokens for :func:`_deepest_field`: an object key (a string and its colon), any other
#: string (skipped whole, brackets and all), an opening or closing bracket.
_JSON_TOKEN = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")\s*:|"[^"\\]*(?:\\.[^"\\]*)*"|[\[{]|[\]}]')


def _depth(value: Any) -> int:
    """How deeply lists and mappings nest in ``value`` (iteratively: any depth)."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, Mapping):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _deepest_field(raw: bytes | bytearray | memoryview | Mapping[str, Any] | None) -> str | None:
    """The top-level key whose value nests deepest (None when the body is not an object)."""
    if isinstance(raw, Mapping):
        depths = {str(k): _depth(v) for k, v in raw.items()}
        return max(depths, key=lambda k: depths[k]) if depths else None
    if raw is None:
        return None
    key: str | None = None
    best: tuple[int, str | None] = (0, None)
    depth = 0
    for m in _JSON_TOKEN.finditer(raw):
        token = m.group()
        if m.group(1) is not None:  # an object key
            if depth == 1:
                try:
                    key = msgspec.json.decode(m.group(1), type=str)
                except msgspec.DecodeError:
                    key = m.group(1)[1:-1].decode("utf-8", "replace")
        elif token in (b"[", b"{"):
            depth += 1
            if depth > best[0]:
                best = (depth, key)
        elif token in (b"]", b"}"):
            depth -= 1
            if depth <= 0:
                break  # the end of the top-level value
    return best[1]


def too_deep(raw: bytes | bytearray | memoryview | Mapping[str, Any] | None) -> SandboxError:
    """400 VALIDATION_FAILED for a body nested too deeply to decode, naming its deepest field."""
    field = _deepest_field(raw)
    if field is None:
        return validation_error("Invalid request body: nested too deeply")
    return validation_error(f"Invalid field '{field}' in request body: nested too deeply", field)


#: Values :func:`_struct_values` keeps as they are (msgspec converts them back unchanged).
_KEEP = (bytes, bytearray, memoryview, datetime.datetime, datetime.date, datetime.time, uuid.UUID, decimal.Decimal)


#: (Python name, wire name) of each field of a parameter struct type, as :func:`_struct_values`
#: reads them (``msgspec.structs.fields`` evaluates the type's annotations on every call).
_FIELD_NAMES: dict[type[msgspec.Struct], tuple[tuple[str, str], ...]] = {}


def _field_names(kind: type[msgspec.Struct]) -> tuple[tuple[str, str], ...]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple((f.name, f.encode_name) for f in msgspec.structs.fields(kind))
    return names


def _struct_values(struct: msgspec.Struct) -> dict[str, Any]:
    """A parameter struct as the mapping :meth:`ServiceRegistry.decode` takes (wire names; nested
    structs as mappings, so their constraints are checked again; a ``msgspec.Raw`` value and a
    value of a type msgspec cannot turn into builtins, such as a stream, kept as they are)."""
    values: dict[str, Any] = {}
    for name, wire in _field_names(type(struct)):
        value = getattr(struct, name)
        if not isinstance(value, msgspec.Raw):
            # not a msgspec value (an async iterable of bytes): kept, the field's type checks it
            with contextlib.suppress(TypeError):
                value = msgspec.to_builtins(value, builtin_types=_KEEP)
        values[wire] = value
    return values


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _build_params(service: str, func: Callable[..., Any]) -> tuple[type[msgspec.Struct], tuple[str, ...]]:
    hints = typing.get_type_hints(func, include_extras=True)
    fields: list[tuple[Any, ...]] = []
    names: list[str] = []
    for pname, param in inspect.signature(func).parameters.items():
        if pname == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        ptype = hints.get(pname, Any)
        names.append(pname)
        wire = next((m.name for m in getattr(ptype, "__metadata__", ()) if isinstance(m, WireName)), None)
        if wire is not None:
            default = msgspec.NODEFAULT if param.default is inspect.Parameter.empty else param.default
            fields.append((pname, ptype, msgspec.field(default=default, name=wire)))
        elif param.default is inspect.Parameter.empty:
            fields.append((pname, ptype))
        else:
            fields.append((pname, ptype, param.default))
    struct = msgspec.defstruct(
        f"{service}.{func.__name__}.params",
        fields,
        kw_only=True,
        rename=_camel,
        forbid_unknown_fields=False,
    )
    return struct, tuple(names)


def start_order(specs: Mapping[str, ServiceSpec]) -> list[str]:
    """The services' names, each after those it requires (otherwise in the order given).

    Raises :class:`~sandbox_core.plugins.PluginLoadError` naming each service whose required
    service is missing (not installed, or left out by ``SANDBOX_DISABLED_PLUGINS``) and every
    service that would have to be left out with it, or a cycle of requirements."""
    from .plugins import PluginLoadError  # the plugin manager imports this module

    missing = {name: [need for need in spec.requires if need not in specs] for name, spec in specs.items()}
    missing = {name: needs for name, needs in missing.items() if needs}
    if missing:
        broken = set(missing)  # and, in turn, whatever requires a broken service
        while grown := {name for name, spec in specs.items() if name not in broken and broken & set(spec.requires)}:
            broken |= grown
        needs = "; ".join(
            f"service {name!r} requires {', '.join(repr(need) for need in sorted(needs))}"
            for name, needs in sorted(missing.items())
        )
        absent = sorted({need for needs in missing.values() for need in needs})
        raise PluginLoadError(
            f"{needs}, which no plugin registers (not installed, or left out by SANDBOX_DISABLED_PLUGINS): "
            f"enable {', '.join(absent)}, or leave out {', '.join(sorted(broken))} as well"
        )
    try:
        return list(TopologicalSorter({name: spec.requires for name, spec in specs.items()}).static_order())
    except CycleError as exc:
        raise PluginLoadError(f"services require each other in a cycle: {' -> '.join(exc.args[1])}") from None


class ServiceRegistry:
    """Holds the running services and dispatches operation calls to them.

    :meth:`start` awaits each service's optional ``startup()``; :meth:`aclose` stops every
    service at once (each service's optional ``aclose()``, concurrently: see :class:`Service`),
    so stopping the server takes as long as its slowest service, not their sum.
    While it runs, :attr:`closing` is true, and a service ending processes gives them at most
    :attr:`stop_grace` seconds between SIGTERM and SIGKILL (the server sets it from
    ``server.shutdown_timeout``, so that the whole stop fits in it).

    :attr:`runtime_id` names this run of the services: a fresh random id each time a registry
    is made (each server start), which ``utils.ping`` and ``utils.version`` report, so that a
    client can tell that the handles it holds (process ids, ...) belong to an earlier run.
    """

    def __init__(
        self,
        specs: Mapping[str, ServiceSpec],
        *,
        settings: Mapping[str, object],
        workspace: str,
        hooks: Hooks | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.specs = dict(specs)
        #: this server's metrics (:mod:`sandbox_core.metrics`): services register what they
        #: report there (off unless given: the server gives one as ``[server] metrics`` says)
        self.metrics = metrics if metrics is not None else Metrics(enabled=False)
        self.workspace = workspace
        self._settings = dict(settings)
        self._hooks = hooks
        self._services: dict[str, object] = {}
        self._ops: dict[tuple[str, str], Operation] = {}
        #: this run of the services: 16 random hex digits, new at every server start
        self.runtime_id = uuid.uuid4().hex[:16]
        #: the server has begun to shut down (SIGTERM): readiness answers 503 from then on, while
        #: requests already running go on (set before :attr:`closing`)
        self.draining = False
        #: the services are being stopped (:meth:`aclose` has begun)
        self.closing = False
        #: SIGTERM to SIGKILL, in seconds, for the processes a service ends while it stops
        self.stop_grace = 1.0

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Build every service (those a service requires before it), then run each one's
        optional ``startup()`` in the same order. A service whose required service is missing
        stops it all before anything is built (:class:`~sandbox_core.plugins.PluginLoadError`)."""
        self.specs = {name: self.specs[name] for name in start_order(self.specs)}
        tune_malloc()  # the services' large requests give their memory back (see sandbox_core.memory)
        for name, spec in self.specs.items():
            settings = self._settings.get(name)
            if settings is None and spec.settings is not None:
                settings = spec.settings()
            ctx = ServiceContext(name, settings, self.workspace, self, structlog.get_logger(f"sandbox.{name}"))
            self._services[name] = spec.factory(ctx)
        for name, service in self._services.items():
            if isinstance(service, SupportsStartup):  # the optional lifecycle (see Service)
                await service.startup()
            self._index(name, service)

    async def aclose(self) -> None:
        """Stop every service at once; a service's failure is logged and stops no other."""
        self.closing = True

        async def close(name: str, service: SupportsAclose) -> None:
            try:
                await service.aclose()
            except Exception:
                log.exception("service.close_failed", service=name)

        async with asyncio.TaskGroup() as closing:
            for name, service in reversed(list(self._services.items())):
                if isinstance(service, SupportsAclose):
                    closing.create_task(close(name, service), name=f"close service {name}")
        self._services.clear()
        self._ops.clear()

    def _index(self, name: str, service: object) -> None:
        for attr in dir(type(service)):
            func = getattr(type(service), attr, None)
            opname = getattr(func, _OP_ATTR, None)
            if opname is None or not callable(func):
                continue
            params, names = _build_params(name, func)
            raw = frozenset(f.encode_name for f in msgspec.structs.fields(params) if f.type is msgspec.Raw)
            self._ops[(name, opname)] = Operation(
                name, opname, getattr(service, attr), params, inspect.isasyncgenfunction(func), names, raw
            )

    # lookup --------------------------------------------------------------------------------

    def get(self, name: str, kind: type[T]) -> T:
        """The running service ``name``, checked to be a ``kind`` (how services reach each other)."""
        service = self._lookup(name)
        if not isinstance(service, kind):
            raise TypeError(f"service {name!r} is a {type(service).__name__}, not a {kind.__name__}")
        return service

    def _lookup(self, name: str) -> object:
        try:
            return self._services[name]
        except KeyError:
            raise not_found(f"Unknown service '{name}'", service=name) from None

    def has(self, name: str) -> bool:
        return name in self._services

    def operation(self, service: str, name: str) -> Operation:
        op = self._ops.get((service, name))
        if op is None:
            self._lookup(service)
            raise not_found(f"Unknown operation '{name}' of service '{service}'", service=service, operation=name)
        return op

    def operations(self) -> list[Operation]:
        return list(self._ops.values())

    # calls ---------------------------------------------------------------------------------

    def decode(
        self, op: Operation, raw: bytes | bytearray | memoryview | Mapping[str, Any] | None, *, strict: bool = True
    ) -> msgspec.Struct:
        """Decode JSON bytes or a mapping into the operation's parameter struct
        (``strict=False`` accepts strings for numbers and booleans, as in a query string).

        A parameter typed ``msgspec.Raw`` keeps its value as JSON text: decoded from bytes, a
        view of the body, not a copy (a service that takes a large string decodes it as it goes);
        from a mapping, the value encoded as JSON. A body nested deeper than msgspec's limit
        (about 1,000 levels) is 400 ``VALIDATION_FAILED`` naming the top-level field that holds it."""
        try:
            if raw is None or raw == b"":
                return msgspec.convert({}, op.params)
            if isinstance(raw, (bytes, bytearray, memoryview)):
                return msgspec.json.decode(raw, type=op.params)
            if op.raw_fields:
                raw = {k: _raw_value(k, v) if k in op.raw_fields else v for k, v in raw.items()}
            return msgspec.convert(raw, op.params, strict=strict)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise validation_from_msgspec(exc) from None
        except RecursionError:  # msgspec's own limit on nesting: never a 500
            raise too_deep(raw) from None

    def replace(self, op: Operation, params: msgspec.Struct, changes: Mapping[str, Any]) -> msgspec.Struct:
        """``params`` (the operation's parameter struct) with the wire-named ``changes``, all of
        it validated again as :meth:`decode` validates a mapping."""
        values = _struct_values(params)
        values.update(changes)
        return self.decode(op, values)

    def bind(
        self,
        op: Operation,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None = None,
        *,
        omit: Callable[[Any], bool] | None = None,
    ) -> msgspec.Struct:
        """The operation's parameter struct from positional ``args`` (in the order of the
        operation's Python signature) and keyword ``kwargs`` (camelCase wire names, as
        :meth:`decode` takes them), validated exactly as keyword parameters are: a bad value is
        ``VALIDATION_FAILED`` naming its field; more positional arguments than parameters, or a
        parameter given both ways, is ``VALIDATION_FAILED`` too. A positional value for which
        ``omit`` is true is left out (its parameter keeps its default: "not given")."""
        wires = [wire for _, wire in _field_names(op.params)]
        if len(args) > len(wires):
            raise validation_error(
                f"{op.qualname} takes at most {len(wires)} positional argument{'s' if len(wires) != 1 else ''}"
                f" ({', '.join(wires) or 'none'}), got {len(args)}",
                "arguments",
            )
        values: dict[str, Any] = {
            wire: value for wire, value in zip(wires, args, strict=False) if omit is None or not omit(value)
        }
        for key, value in (kwargs or {}).items():
            if key in values:
                raise validation_error(f"Invalid field '{key}': given both by position and by name", key)
            values[key] = value
        return self.decode(op, values)

    def kwargs(self, op: Operation, params: msgspec.Struct) -> dict[str, Any]:
        return {name: getattr(params, name) for name in op.param_names}

    def map_exception(self, exc: BaseException, op: Operation | str) -> SandboxError:
        """The SandboxError for any exception a service raised (INTERNAL_ERROR when unmapped)."""
        if isinstance(exc, SandboxError):
            return exc
        opname = op.qualname if isinstance(op, Operation) else op
        if self._hooks is not None:
            mapped = self._hooks.map_exception(exc, opname)
            if mapped is not None:
                return mapped
        log.error("call.failed", operation=opname, error=repr(exc), exc_info=exc)
        return SandboxError(
            ErrorCode.INTERNAL_ERROR, f"Internal error in {opname}: {type(exc).__name__}", {"operation": opname}
        )

    def _params(
        self,
        op: Operation,
        params: Mapping[str, Any] | msgspec.Struct | bytes | None,
        args: Sequence[Any] | None = None,
    ) -> msgspec.Struct:
        if args is not None:
            if params is not None and not isinstance(params, Mapping):
                raise TypeError(f"{op.qualname}: positional arguments go with a mapping of named ones, not {params!r}")
            return self.bind(op, args, params)
        if isinstance(params, msgspec.Struct):
            if not isinstance(params, op.params):
                raise TypeError(f"{op.qualname} takes {op.params.__name__}, not {type(params).__name__}")
            # msgspec checks no constraint when a struct is built in Python: validate it again
            return self.decode(op, _struct_values(params))
        return self.decode(op, params)

    async def call(
        self,
        service: str,
        name: str,
        params: Mapping[str, Any] | msgspec.Struct | bytes | None = None,
        *,
        args: Sequence[Any] | None = None,
    ) -> object:
        """Call a unary operation with validated parameters; raises SandboxError only.

        ``args`` are positional parameters (see :meth:`bind`); ``params`` then holds the named ones."""
        op = self.operation(service, name)
        if op.streaming:
            raise validation_error(f"Operation {op.qualname} is a stream", "operation")
        return await self.invoke(op, self._params(op, params, args))

    async def invoke(self, op: Operation, params: msgspec.Struct) -> object:
        """Call the unary operation ``op`` with ``params`` as :meth:`decode` or :meth:`bind` made
        them, so already validated (a struct built in Python is not: give it to :meth:`call`,
        which validates it again); raises SandboxError only."""
        try:
            result: object = await op.func(**self.kwargs(op, params))
            return result
        except SandboxError:
            raise
        except Exception as exc:
            raise self.map_exception(exc, op) from exc

    def stream(
        self,
        service: str,
        name: str,
        params: Mapping[str, Any] | msgspec.Struct | bytes | None = None,
        *,
        args: Sequence[Any] | None = None,
    ) -> AsyncGenerator[object, None]:
        """Open a streaming operation; iterating yields its events; errors are SandboxError.

        ``args`` are positional parameters (see :meth:`bind`); ``params`` then holds the named ones."""
        op = self.operation(service, name)
        struct = self._params(op, params, args)
        if not op.streaming:
            raise validation_error(f"Operation {op.qualname} is not a stream", "operation")
        return self.open(op, struct)

    def open(self, op: Operation, params: msgspec.Struct) -> AsyncGenerator[object, None]:
        """Open the streaming operation ``op`` with ``params`` as :meth:`decode` or :meth:`bind`
        made them (see :meth:`invoke`); iterating yields its events; errors are SandboxError."""
        return self._guard(op, op.func(**self.kwargs(op, params)))

    async def _guard(self, op: Operation, agen: AsyncIterator[object]) -> AsyncGenerator[object, None]:
        try:
            async for event in agen:
                yield event
        except SandboxError:
            raise
        except Exception as exc:
            raise self.map_exception(exc, op) from exc
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()
