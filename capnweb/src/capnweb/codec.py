"""Expressions: Python values to the reference's JSON forms (``devaluate``) and back (``Evaluator``).

Plain JSON passes through, except arrays: a literal array is escaped as ``[[...]]`` at every
depth, and every other array is a typed form (``["bytes", b64]``, ``["date", ms]``,
``["export", -1]``, ...). References to objects on either side (stubs, promises, streams) are
the session's business: both directions call back into it for those.
"""

from __future__ import annotations

import asyncio
import binascii
import datetime as dt
import inspect
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import pybase64

from .targets import RpcTarget
from .values import INVALID_DATE, JS_ERROR_NAMES, UNDEFINED, BigInt, Limits, ProtocolError, RpcError, TypedBytes, Url

if TYPE_CHECKING:
    from .stubs import RpcStub

MAX_SAFE_INTEGER = 2**53 - 1
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_BIGINT = re.compile(r"-?[0-9]+")
TYPED_ARRAYS = frozenset(
    {
        "ArrayBuffer",
        "DataView",
        "Int8Array",
        "Uint8Array",
        "Uint8ClampedArray",
        "Int16Array",
        "Uint16Array",
        "Int32Array",
        "Uint32Array",
        "BigInt64Array",
        "BigUint64Array",
        "Float32Array",
        "Float64Array",
    }
)
_ELEMENT_SIZE = {"Int16Array": 2, "Uint16Array": 2, "Int32Array": 4, "Uint32Array": 4, "Float32Array": 4}
_ELEMENT_SIZE |= {"BigInt64Array": 8, "BigUint64Array": 8, "Float64Array": 8}
_UNSUPPORTED = frozenset({"headers", "request", "response", "blob"})


def as_json(value: Any, limit: int = 100) -> str:
    """A value as the peer sent it (JSON), cut to ``limit`` characters, for error messages."""
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PendingCount:
    """How many :class:`Pending` placeholders of one session are alive: what the peer's
    messages make it wait for (each costs a future, often a task), never more than ``limit``."""

    __slots__ = ("alive", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.alive = 0


class Pending:
    """A promise inside an evaluated value: substituted by its result before delivery. It counts
    in ``count`` while it lives (until the substitution is done or given up); one past the count's
    limit is a :class:`ProtocolError`."""

    __slots__ = ("_count", "future")

    def __init__(self, future: asyncio.Future[Any], count: PendingCount | None = None) -> None:
        self.future = future
        self._count: PendingCount | None = None
        if count is not None:
            if count.alive >= count.limit:
                raise ProtocolError(f"the peer's messages make this side wait for {count.alive} results (the limit)")
            count.alive += 1
            self._count = count

    def __del__(self) -> None:
        if self._count is not None:
            self._count.alive -= 1


# --- Python to JSON -------------------------------------------------------------------------


class Exporter(Protocol):
    """What devaluation needs from the session."""

    limits: Limits

    def export_local(self, value: object) -> int: ...
    def export_promise(self, awaitable: Any) -> int: ...
    def export_writable(self, writable: Any) -> int: ...
    def devaluate_remote(self, value: Any) -> Any: ...
    def devaluate_readable(self, stream: Any, after_send: list[Callable[[], None]]) -> Any: ...
    def is_remote(self, value: object) -> bool: ...
    def is_readable(self, value: object) -> bool: ...
    def is_writable(self, value: object) -> bool: ...


def b64encode(data: bytes | bytearray | memoryview) -> str:
    """Base64 without padding, as the reference sends it (pybase64: SIMD, several times faster)."""
    return pybase64.b64encode_as_string(data).rstrip("=")


def date_ms(value: dt.datetime) -> int | float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    micros = (value - EPOCH) // dt.timedelta(microseconds=1)
    return micros // 1000 if micros % 1000 == 0 else micros / 1000


def error_name(exc: BaseException) -> str:
    if isinstance(exc, RpcError):
        return exc.name if exc.name in JS_ERROR_NAMES else "Error"
    for cls, name in ((TypeError, "TypeError"), (RecursionError, "RangeError"), (OverflowError, "RangeError")):
        if isinstance(exc, cls):
            return name
    return "Error"


class Devaluator:
    """Turns one message's worth of Python values into expressions; collects what must happen
    once that message is sent (pumping the streams it carries)."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.after_send: list[Callable[[], None]] = []

    def devaluate(self, value: Any, depth: int = 0) -> Any:
        if depth > self.exporter.limits.max_depth:
            raise RpcError("TypeError", "Value is nested too deeply to serialize")
        if value is None or value is True or value is False:
            return value
        if isinstance(value, str):
            return ["url", str(value)] if isinstance(value, Url) else value
        if isinstance(value, int):
            if isinstance(value, BigInt):
                return ["bigint", str(int(value))]
            value = int(value)
            return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else ["bigint", str(value)]
        if isinstance(value, float):
            if math.isnan(value):
                return ["nan"]
            if math.isinf(value):
                return ["inf"] if value > 0 else ["-inf"]
            return value
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise RpcError("TypeError", f"Cannot serialize an object key of type {type(key).__name__}")
                out[key] = self.devaluate(item, depth + 1)
            return out
        if isinstance(value, (list, tuple)):
            return [[self.devaluate(item, depth + 1) for item in value]]
        if value is UNDEFINED:
            return ["undefined"]
        if isinstance(value, (bytes, bytearray, memoryview)):
            if isinstance(value, TypedBytes) and value.js_type != "Uint8Array":
                return ["bytes", b64encode(value), value.js_type]
            return ["bytes", b64encode(value)]
        if isinstance(value, dt.datetime):
            return ["date", date_ms(value)]
        if value is INVALID_DATE:
            return ["date", None]
        if isinstance(value, BaseException):
            return self.devaluate_error(value, depth)
        exporter = self.exporter
        if exporter.is_remote(value):
            return exporter.devaluate_remote(value)
        if isinstance(value, RpcTarget):
            return ["export", exporter.export_local(value)]
        if exporter.is_readable(value):
            return exporter.devaluate_readable(value, self.after_send)
        if exporter.is_writable(value):
            return ["writable", exporter.export_writable(value)]
        if isinstance(value, msgspec.Struct):
            return self.devaluate(msgspec.to_builtins(value, builtin_types=(bytes, bytearray, dt.datetime)), depth)
        if inspect.isawaitable(value):
            return ["promise", exporter.export_promise(value)]
        if callable(value) and not isinstance(value, type):
            return ["export", exporter.export_local(value)]
        raise RpcError("TypeError", f"Cannot serialize a value of type {type(value).__name__} over RPC")

    def devaluate_error(self, exc: BaseException, depth: int = 0) -> list[Any]:
        name = error_name(exc)
        message = exc.message if isinstance(exc, RpcError) else str(exc)
        props = exc.props if isinstance(exc, RpcError) else None
        if props:
            try:
                encoded = {k: self.devaluate(v, depth + 1) for k, v in props.items() if isinstance(k, str)}
            except RpcError:
                encoded = {}
            if encoded:
                return ["error", name, message, None, encoded]
        return ["error", name, message]


# --- JSON to Python -------------------------------------------------------------------------


class Importer(Protocol):
    """What evaluation needs from the session (or from a mapper, for ``remap`` instructions)."""

    limits: Limits

    def ref(self, evaluator: Evaluator, ref_id: Any, path: Any, args: Any, promise: bool) -> Any: ...
    def remap_expr(self, evaluator: Evaluator, ref_id: Any, path: Any, captures: Any, instructions: Any) -> Any: ...
    def import_export(self, evaluator: Evaluator, export_id: Any) -> Any: ...
    def import_promise(self, evaluator: Evaluator, export_id: Any) -> Any: ...
    def import_writable(self, evaluator: Evaluator, export_id: Any) -> Any: ...
    def claim_readable(self, evaluator: Evaluator, pipe_id: Any) -> Any: ...


def check_path(path: Any) -> tuple[str | int, ...]:
    if not isinstance(path, list) or not all(
        isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) for p in path
    ):
        raise ProtocolError(f"invalid property path: {path!r}")
    return tuple(path)


def check_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"invalid id: {value!r}")
    return value


def _b64decode(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError("bytes must be a base64 string")
    try:
        padding = -len(text) % 4
        return pybase64.b64decode(text + "=" * padding if padding else text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid base64 in bytes") from None


class Evaluator:
    """Evaluates the expressions of one message (or one call's arguments). Promises inside the
    result are left as :class:`Pending` and listed, to be substituted before delivery; stubs it
    creates are listed too (a call's parameters are disposed when the call returns)."""

    def __init__(self, importer: Importer) -> None:
        self.importer = importer
        self.pending: list[tuple[Any, Any, Pending]] = []  # (container, key, placeholder)
        self.stubs: list[RpcStub] = []
        self.limits = importer.limits

    def evaluate(self, expr: Any, container: Any = None, key: Any = None, depth: int = 0) -> Any:
        value = self._evaluate(expr, depth)
        if isinstance(value, Pending):
            self.pending.append((container, key, value))
        return value

    def _evaluate(self, expr: Any, depth: int) -> Any:
        if depth > self.limits.max_depth:
            raise ProtocolError("message is nested too deeply")
        if expr is None or isinstance(expr, (str, bool, int, float)):
            return expr
        if isinstance(expr, dict):
            out: dict[str, Any] = {}
            for k, v in expr.items():
                out[k] = self.evaluate(v, out, k, depth + 1)
            return out
        if not isinstance(expr, list):
            raise ProtocolError(f"unexpected value of type {type(expr).__name__}")
        if not expr:
            raise ProtocolError("unknown special value: []")
        head = expr[0]
        if isinstance(head, list):
            if len(expr) != 1:
                raise ProtocolError("an escaped array must be the only element of its array")
            items: list[Any] = []
            for index, item in enumerate(head):
                items.append(self.evaluate(item, items, index, depth + 1))
            return items
        if not isinstance(head, str):
            raise ProtocolError(f"unknown special value: {as_json(expr)}")
        return self._special(head, expr, depth)

    def _special(self, tag: str, expr: list[Any], depth: int) -> Any:
        n = len(expr)
        importer = self.importer
        match tag:
            case "undefined":
                return UNDEFINED
            case "inf":
                return math.inf
            case "-inf":
                return -math.inf
            case "nan":
                return math.nan
            case "bigint" if n == 2 and isinstance(expr[1], str):
                text = expr[1]
                if len(text.lstrip("-")) > self.limits.max_bigint_digits:
                    raise ProtocolError("bigint has too many digits")
                if not _BIGINT.fullmatch(text):
                    raise ProtocolError(f"invalid bigint: {text!r:.50}")
                return BigInt(text)
            case "date" if n == 2:
                ms = expr[1]
                if ms is None:
                    return INVALID_DATE
                if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not math.isfinite(ms):
                    raise ProtocolError("invalid date")
                try:
                    return EPOCH + dt.timedelta(microseconds=round(ms * 1000))
                except OverflowError:
                    return INVALID_DATE
            case "bytes" if n in (2, 3):
                data = _b64decode(expr[1])
                if n == 3:
                    kind = expr[2]
                    if kind not in TYPED_ARRAYS:
                        raise ProtocolError(f"unknown bytes type: {kind!r:.50}")
                    if len(data) % _ELEMENT_SIZE.get(kind, 1):
                        raise ProtocolError(f"{kind} byte length must be a multiple of its element size")
                    return data if kind == "Uint8Array" else TypedBytes(data, kind)
                return data
            case "error" if 3 <= n <= 5 and isinstance(expr[1], str) and isinstance(expr[2], str):
                name = expr[1] if expr[1] in JS_ERROR_NAMES else "Error"
                props: dict[str, Any] = {}
                if n == 5 and expr[4] is not None:
                    if not isinstance(expr[4], dict):
                        raise ProtocolError("error properties must be an object")
                    for k, v in expr[4].items():
                        if k not in ("name", "message", "stack"):
                            props[k] = self.evaluate(v, props, k, depth + 1)
                return RpcError(name, expr[2], props)
            case "url" if n == 2 and isinstance(expr[1], str):
                return Url(expr[1])
            case "import" | "pipeline" if 2 <= n <= 4:
                ref_id = check_id(expr[1])
                path = check_path(expr[2]) if n >= 3 else ()
                args = expr[3] if n == 4 else None
                if args is not None and not isinstance(args, list):
                    raise ProtocolError("call arguments must be an array")
                return importer.ref(self, ref_id, path, args, tag == "pipeline")
            case "remap" if n == 5:
                if not isinstance(expr[3], list) or not isinstance(expr[4], list) or not expr[4]:
                    raise ProtocolError("invalid remap")
                return importer.remap_expr(self, check_id(expr[1]), check_path(expr[2]), expr[3], expr[4])
            case "export" if n == 2:
                return importer.import_export(self, check_id(expr[1]))
            case "promise" if n == 2:
                return importer.import_promise(self, check_id(expr[1]))
            case "writable" if n == 2:
                return importer.import_writable(self, check_id(expr[1]))
            case "readable" if n == 2:
                return importer.claim_readable(self, check_id(expr[1]))
            case _ if tag in _UNSUPPORTED:
                raise RpcError("TypeError", f"Cap'n Web '{tag}' values are not supported by this peer")
        raise ProtocolError(f"unknown special value: {as_json(expr)}")

    def evaluate_args(self, args: list[Any], depth: int = 0) -> list[Any]:
        values: list[Any] = []
        for index, arg in enumerate(args):
            values.append(self.evaluate(arg, values, index, depth + 1))
        return values

    def substitute(self, results: list[Any]) -> None:
        """Put each promise's result where its placeholder was (``results`` in ``pending`` order)."""
        for (container, key, _), result in zip(self.pending, results, strict=True):
            if container is not None:
                container[key] = result
        self.pending.clear()
