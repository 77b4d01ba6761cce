"""Helpers of the rpc transport tests."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sandbox_transport_rpc.capnweb import ReadableStream, RpcError

#: One SSE frame as the contract's RPC streams send it: an optional ``event:`` line, one ``data:`` line.
FRAME = re.compile(rb"(?:event: ([a-z_]+)\n)?data: ([^\n]*)\n\n")


def sid(prefix: str = "rpc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def read_all(stream: Any) -> bytes:
    assert isinstance(stream, ReadableStream), type(stream)
    chunks = [chunk async for chunk in stream]
    assert all(isinstance(chunk, bytes) for chunk in chunks), [type(c) for c in chunks]
    return b"".join(chunks)


def frames(data: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """The (event line, data) of every frame; the bytes must be frames and nothing else."""
    found: list[tuple[str | None, dict[str, Any]]] = []
    pos = 0
    while pos < len(data):
        m = FRAME.match(data, pos)
        assert m is not None, f"not an SSE frame at {pos}: {data[pos : pos + 120]!r}"
        found.append((m.group(1).decode() if m.group(1) else None, json.loads(m.group(2))))
        pos = m.end()
    return found


def events(data: bytes) -> list[dict[str, Any]]:
    return [event for _, event in frames(data)]


async def rejection(call: Awaitable[Any]) -> RpcError:
    """The RpcError a call rejects with (it must reject)."""
    try:
        value = await call
    except RpcError as err:
        return err
    raise AssertionError(f"the call did not reject: {value!r}")


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if await check():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
