"""At most once: the table of ``idempotencyKey`` values.

A request that carries a key runs through :meth:`IdempotencyTable.once`. The first request with
a key runs; every later one with the same key and the same parameters, while the key is held,
runs nothing and gets the first one's outcome: its result, or the same error. One that arrives
while the first still runs waits for it (the first's own timeout bounds that wait). The same key
with other parameters (another command, another operation) is 409 ``IDEMPOTENCY_KEY_REUSED``.

The table is bounded: at most ``max_keys`` keys and ``max_bytes`` bytes (the key, the outcome's
size as its caller measures it and a fixed overhead per entry), the oldest out first; an entry
is forgotten ``window_s`` after its first request ended (never while it still runs). A first
request that is cancelled (its client left before it ended) leaves nothing behind: a request
waiting for it, or a later retry, runs it. An outcome is remembered only when it is a result or
a :class:`SandboxError`; an unexpected exception is not (the next request runs again).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, TypeVar, cast

import msgspec
from msgspec import Meta

from sandbox_core.errors import ErrorCode, IdempotencyKeyReused, SandboxError

T = TypeVar("T")

#: An ``idempotencyKey``: any string of 1 to 128 characters.
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=128)]

#: Bytes counted for an entry besides its key and its outcome.
ENTRY_OVERHEAD = 256


class _Retry:
    """The outcome of a first request that did not end (cancelled): whoever waits runs it."""


_RETRY = _Retry()


class _Entry:
    __slots__ = ("ended", "fingerprint", "outcome", "size")

    def __init__(self, fingerprint: bytes, outcome: asyncio.Future[object], size: int) -> None:
        self.fingerprint = fingerprint
        self.outcome = outcome
        self.ended: float | None = None  # when the first request ended (monotonic)
        self.size = size


def fingerprint(operation: str, params: Mapping[str, Any]) -> bytes:
    """What the key stands for: the operation and its parameters (None values left out)."""
    given = {k: v for k, v in params.items() if v is not None}
    return hashlib.sha256(msgspec.json.encode([operation, given], order="sorted")).digest()


def _copy(error: SandboxError) -> SandboxError:
    """A fresh exception equal to ``error`` (each waiter raises its own)."""
    return type(error)(error.code, error.message, error.details, operation=error.operation, status=error._status)


class IdempotencyTable:
    """The keys of one server, bounded by count and bytes, each held ``window_s`` seconds."""

    def __init__(
        self, *, window_s: float, max_keys: int, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    async def once(
        self,
        key: str | None,
        operation: str,
        params: Mapping[str, Any],
        run: Callable[[], Awaitable[T]],
        size: Callable[[T], int] = lambda _: 0,
    ) -> T:
        """``run()``'s outcome, run at most once per ``key`` (no key: simply run it).

        ``operation`` and ``params`` are what the key must keep meaning; ``size`` measures a
        result in bytes (what holding it costs)."""
        if key is None:
            return await run()
        wanted = fingerprint(operation, params)
        while True:
            self._expire()
            entry = self._entries.get(key)
            if entry is None:
                break
            if entry.fingerprint != wanted:
                raise IdempotencyKeyReused(
                    ErrorCode.IDEMPOTENCY_KEY_REUSED,
                    f"idempotencyKey {key!r} was used within the last {self.window_s:g} s for another request"
                    f" (other parameters or another operation than this {operation})",
                    {"field": "idempotencyKey", "idempotencyKey": key, "operation": operation},
                )
            outcome = await asyncio.shield(entry.outcome)  # a waiter that is cancelled leaves it be
            if outcome is _RETRY:
                continue
            if isinstance(outcome, SandboxError):
                raise _copy(outcome)
            return cast(T, outcome)
        entry = _Entry(wanted, asyncio.get_running_loop().create_future(), len(key) + ENTRY_OVERHEAD)
        self._add(key, entry)
        try:
            result = await run()
        except SandboxError as exc:
            self._settle(key, entry, exc, len(exc.message) + len(msgspec.json.encode(exc.details)))
            raise
        except BaseException:
            self._drop(key, entry)
            entry.outcome.set_result(_RETRY)
            raise
        self._settle(key, entry, result, size(result))
        return result

    # the table -------------------------------------------------------------------------------

    def _add(self, key: str, entry: _Entry) -> None:
        while len(self._entries) >= self.max_keys:
            self._pop_oldest()
        self._entries[key] = entry
        self._bytes += entry.size
        self._shrink()

    def _settle(self, key: str, entry: _Entry, outcome: object, size: int) -> None:
        entry.outcome.set_result(outcome)
        entry.ended = self._clock()
        if self._entries.get(key) is not entry:
            return  # pushed out while it ran
        self._bytes += size
        entry.size += size
        self._entries.move_to_end(key)  # its window starts now: the oldest ended are in front
        self._shrink()

    def _drop(self, key: str, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
            self._bytes -= entry.size

    def _pop_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self._bytes -= entry.size

    def _shrink(self) -> None:
        while self._entries and self._bytes > self.max_bytes:
            self._pop_oldest()

    def _expire(self) -> None:
        """Forget the keys whose window has passed (ended entries are in the order they ended)."""
        limit = self._clock() - self.window_s
        expired: list[str] = []
        for key, entry in self._entries.items():
            if entry.ended is None:
                continue  # still running: kept, and it does not say when the later ones ended
            if entry.ended > limit:
                break
            expired.append(key)
        for key in expired:
            self._drop(key, self._entries[key])
