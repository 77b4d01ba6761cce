"""Stubs and promises: Python handles on the peer's objects and on the results of calls to them.

Attribute access, item access and calls build up a path and pipeline: ``api.getUser(1).name``
sends one call and one property get, awaited in one round trip. Nothing blocks: a call is sent
when it is made, a property get when it is awaited (or passed as an argument), and ``await``
asks for the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from .values import RpcError

if TYPE_CHECKING:
    from .session import Import, RpcSession

Path = tuple[str | int, ...]


class _Pipelined:
    """Attribute access, item access, calls and ``map`` on a remote value: each pipelines."""

    __slots__ = ("_rpc_entry", "_rpc_path", "_rpc_session")

    _rpc_session: RpcSession
    _rpc_entry: Import
    _rpc_path: Path

    def __getattr__(self, name: str) -> RpcPromise:
        if name.startswith("__"):
            raise AttributeError(name)
        return RpcPromise(self._rpc_session, self._rpc_entry, (*self._rpc_path, name))

    def __getitem__(self, key: str | int) -> RpcPromise:
        return RpcPromise(self._rpc_session, self._rpc_entry, (*self._rpc_path, key))

    def __call__(self, *args: Any) -> RpcPromise:
        return self._rpc_session.call_import(self._rpc_entry, self._rpc_path, args)

    def map(self, fn: Callable[[Any], Any]) -> RpcPromise:
        """Apply ``fn`` to the value (to each element of an array) on the peer's side."""
        return self._rpc_session.remap(self._rpc_entry, self._rpc_path, fn)

    def __repr__(self) -> str:
        path = "".join(f".{p}" for p in self._rpc_path)
        return f"<{type(self).__name__} import {self._rpc_entry.id}{path}>"


class RpcStub(_Pipelined):
    """A reference to an object the peer exports (its main object, a target or a function it
    passed or returned). Call it, read from it, or call its methods; ``dispose()`` (or ``with``)
    lets the peer free it. A stub received as a call argument is disposed when that call returns,
    unless the callee keeps a :meth:`dup` of it."""

    __slots__ = ("_rpc_disposed",)

    def __init__(self, session: RpcSession, entry: Import, path: Path = ()) -> None:
        self._rpc_session = session
        self._rpc_entry = entry
        self._rpc_path = path
        self._rpc_disposed = False

    def dup(self) -> RpcStub:
        """Another handle on the same object, disposed on its own."""
        self._rpc_session.add_local_ref(self._rpc_entry)
        return RpcStub(self._rpc_session, self._rpc_entry, self._rpc_path)

    def dispose(self) -> None:
        """Let the peer free the object (once every handle is disposed); idempotent."""
        if not self._rpc_disposed:
            self._rpc_disposed = True
            self._rpc_session.drop_local_ref(self._rpc_entry)

    def __enter__(self) -> RpcStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()


class RpcPromise(_Pipelined):
    """The pending result of a call or property get on the peer. Await it for the value; access
    attributes, items or call it to pipeline further calls without waiting."""

    __slots__ = ()

    def __init__(self, session: RpcSession, entry: Import, path: Path = ()) -> None:
        self._rpc_session = session
        self._rpc_entry = entry
        self._rpc_path = path

    def __await__(self) -> Generator[Any, None, Any]:
        return self._rpc_session.resolve_import(self._rpc_entry, self._rpc_path).__await__()

    def as_future(self) -> asyncio.Future[Any]:
        """The result as an asyncio future (for ``asyncio.gather`` and friends)."""
        return asyncio.ensure_future(self._rpc_session.resolve_import(self._rpc_entry, self._rpc_path))

    def dispose(self) -> None:
        """Give up the result (the peer frees it, and cancels the call if it still runs)."""
        if not self._rpc_path:
            self._rpc_session.drop_promise(self._rpc_entry)

    def __enter__(self) -> RpcPromise:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()


def is_remote(value: object) -> bool:
    return isinstance(value, (RpcStub, RpcPromise))


def stub_ref(value: RpcStub | RpcPromise) -> tuple[RpcSession, Import, Path]:
    """Package-internal: the session, import and path a stub or promise stands for. (A stub's
    attributes are the peer's, so it keeps these under ``_rpc_`` names and offers no property.)"""
    return value._rpc_session, value._rpc_entry, value._rpc_path


def not_a_function(name: object) -> RpcError:
    return RpcError("TypeError", f"'{name}' is not a function.")
