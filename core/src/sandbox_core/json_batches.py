"""JSON answers holding a long list, encoded a batch of items at a time.

A listing of 100k entries is about 30 MB of JSON: encoded in one call, it holds the event loop
(and every other request) for as long. :func:`split_long_list` finds an answer's long list (a
field of a msgspec Struct with more than :data:`BATCH_ITEMS` items) and encodes the rest of the
answer once, with a placeholder where the list goes; :meth:`LongList.chunks` then yields the
encoded answer piece by piece, the list :data:`BATCH_ITEMS` items at a time, letting other tasks
run between two batches. The pieces joined are exactly what encoding the answer whole gives.
Each transport sends them its own way (http: a chunked body; ws: one frame, joined).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

#: A list longer than this is encoded in batches of this many items.
BATCH_ITEMS = 2048

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class LongList:
    """An answer split around its long list: ``head``, then ``items`` encoded in batches, then ``tail``."""

    head: bytes
    items: list[Any]
    tail: bytes

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The encoded answer in pieces: the head, each batch of items, the tail; other tasks
        run between two batches."""
        yield self.head
        for start in range(0, len(self.items), BATCH_ITEMS):
            batch = _encoder.encode(self.items[start : start + BATCH_ITEMS])[1:-1]  # without [ ]
            yield b"," + batch if start else batch
            await asyncio.sleep(0)  # others' turn
        yield self.tail

    async def encode(self) -> bytes:
        """The whole encoded answer (built from :meth:`chunks`, so others run meanwhile)."""
        return b"".join([chunk async for chunk in self.chunks()])


def split_long_list(body: Any, wrap: Callable[[Any], Any] | None = None) -> LongList | None:
    """``body`` split around its first list of more than :data:`BATCH_ITEMS` items, or None
    when it is not a msgspec Struct with such a list (encode it whole then). ``wrap`` builds
    what is encoded around ``body`` (ws: the response frame that carries it)."""
    if not isinstance(body, msgspec.Struct):
        return None
    for name in body.__struct_fields__:
        items = getattr(body, name)
        if isinstance(items, list) and len(items) > BATCH_ITEMS:
            placeholder = f"sandbox-batched-{id(items)}-{time.monotonic_ns()}"
            outer = msgspec.structs.replace(body, **{name: [placeholder]})
            whole = _encoder.encode(wrap(outer) if wrap is not None else outer)
            head, _, tail = whole.partition(b'"' + placeholder.encode() + b'"')
            return LongList(head, items, tail)
    return None
