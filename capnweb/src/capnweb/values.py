"""The values of the JavaScript side that Python has no type for, the engine's errors and limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


class _Undefined:
    """JavaScript ``undefined`` (``None`` is ``null``). Falsy; one instance, :data:`UNDEFINED`."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()


class _InvalidDate:
    """A JavaScript ``Date`` whose time is NaN (``new Date("x")``). One instance, :data:`INVALID_DATE`."""

    _instance: _InvalidDate | None = None

    def __new__(cls) -> _InvalidDate:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "capnweb.INVALID_DATE"


INVALID_DATE: Final = _InvalidDate()


class Url(str):
    """A JavaScript ``URL``: its href, as a string."""

    __slots__ = ()


class BigInt(int):
    """An integer that travelled as a JavaScript ``bigint`` (so it goes back as one). Any
    ``int`` beyond the 53 bits a JavaScript number holds exactly is sent as a bigint too."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"BigInt({int(self)})"


class TypedBytes(bytes):
    """Bytes that travelled as a typed array other than ``Uint8Array`` (``js_type`` names it:
    ``Int16Array``, ``ArrayBuffer``, ...), so they go back as the same type."""

    js_type: str

    def __new__(cls, data: bytes, js_type: str) -> TypedBytes:
        self = super().__new__(cls, data)
        self.js_type = js_type
        return self

    def __repr__(self) -> str:
        return f"TypedBytes({bytes(self)!r}, {self.js_type!r})"


#: The error names a JavaScript peer turns back into its own classes (others become ``Error``).
JS_ERROR_NAMES: Final = frozenset(
    {"Error", "EvalError", "RangeError", "ReferenceError", "SyntaxError", "TypeError", "URIError", "AggregateError"}
)


class RpcError(Exception):
    """An error that crossed the connection, or one to send: a JavaScript ``Error`` with its
    ``name``, ``message`` and own properties (``props``, e.g. ``{"code": ..., "details": ...}``)."""

    def __init__(self, name: str, message: str, props: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.props: dict[str, Any] = dict(props or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.message, self.props))

    def __repr__(self) -> str:
        extra = f", {self.props!r}" if self.props else ""
        return f"RpcError({self.name!r}, {self.message!r}{extra})"

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RpcError):
            return NotImplemented
        return (self.name, self.message, self.props) == (other.name, other.message, other.props)

    __hash__ = Exception.__hash__


class SessionClosed(ConnectionError):
    """The session ended (the connection closed, the peer aborted, or we did): every pending call
    and open stream of it fails with this; ``reason`` is what ended it."""

    def __init__(self, message: str, reason: BaseException | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ProtocolError(Exception):
    """A message the peer should never have sent: the session aborts with it."""


class Budget:
    """An amount (bytes held, characters evaluated) never past ``limit``: what is taken from a
    budget with a ``parent`` is taken from the parent too (a session's stream buffers within a
    server's). ``label`` names what it bounds, for error messages."""

    __slots__ = ("label", "limit", "parent", "used")

    def __init__(self, limit: int, parent: Budget | None = None, *, label: str = "the stream buffers") -> None:
        self.limit = limit
        self.parent = parent
        self.label = label
        self.used = 0

    def take(self, size: int) -> Budget | None:
        """Count ``size`` more: None when taken, else (nothing taken) the budget it would break
        (this one or an ancestor)."""
        if self.used + size > self.limit:
            return self
        if self.parent is not None and (refused := self.parent.take(size)) is not None:
            return refused
        self.used += size
        return None

    def give(self, size: int) -> None:
        """Give back ``size`` taken earlier."""
        self.used -= size
        if self.parent is not None:
            self.parent.give(size)


@dataclass(frozen=True)
class Limits:
    """What one session accepts from its peer; anything beyond aborts the session (or, for the
    stream buffers of a session or of several, fails the stream that would break them)."""

    #: the largest message, in characters of its JSON text (the reference's 32 Mi UTF-16 units)
    max_message_chars: int = 32 * 1024 * 1024
    #: how deeply expressions may nest
    max_depth: int = 256
    #: the most digits of a bigint
    max_bigint_digits: int = 16384
    #: how many bytes of written-but-unread chunks one incoming stream may hold (a sender that
    #: ignores flow control and goes past it aborts the session)
    max_stream_buffer: int = 64 * 1024 * 1024
    #: how many bytes of written-but-unread chunks all the incoming streams of one session may
    #: hold together: the write that would go past it fails its stream (the session goes on)
    max_session_stream_buffer: int = 64 * 1024 * 1024
    #: a budget shared by several sessions (a server's): the bytes of written-but-unread chunks
    #: of all their incoming streams; the write that would go past it fails its stream
    shared_stream_buffer: Budget | None = None
    #: how many entries the peer may make us hold in the exports table (calls it pushed and did
    #: not release, pipes): past it the session aborts
    max_exports: int = 100_000
    #: how many entries the peer may make us hold in the imports table (stubs, promises and
    #: writables it exported to us, not yet released or resolved): past it the session aborts
    max_imports: int = 100_000
    #: how many results (promises, pipelined calls and properties inside a message) the peer's
    #: messages may make us wait for at once (each costs about 1.5 KB): past it the session aborts
    max_pending: int = 10_000
    #: how many bytes of outgoing messages may wait for the connection (a peer that stops reading
    #: while calls keep answering aborts the session past it; stream writes wait for their window)
    max_queued_bytes: int = 128 * 1024 * 1024
