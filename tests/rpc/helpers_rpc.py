"""Helpers of the rpc transport tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from capnweb import ReadableStream, RpcError

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


class RawPeer:
    """A Cap'n Web peer that sends the messages the test writes (over a real WebSocket): it
    numbers its imports as the protocol does, and keeps every message the server sends."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_import = 1
        self.received: list[Any] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[RawPeer]:
        from websockets.asyncio.client import connect

        async with connect(url, max_size=None, compression=None) as ws:
            yield cls(ws)

    async def send(self, message: list[Any]) -> int:
        """Send ``message``; the import id it takes (push, stream, pipe), else 0."""
        await self.ws.send(json.dumps(message, separators=(",", ":")))
        if message[0] not in ("push", "stream", "pipe"):
            return 0
        self.next_import += 1
        return self.next_import - 1

    async def ping(self, timeout_s: float = 60.0) -> list[Any]:
        """``utils.ping()``, answered after everything sent before (the server reads in order):
        its answer, or the abort that came instead."""
        call = await self.send(["push", ["pipeline", 0, ["utils", "ping"], []]])
        await self.send(["pull", call])
        async with asyncio.timeout(timeout_s):
            while True:
                message = json.loads(await self.ws.recv())
                self.received.append(message)
                if message[0] == "abort" or (message[0] in ("resolve", "reject") and message[1] == call):
                    return message

    def rejected(self) -> dict[int, str]:
        """The server's rejections so far: id to error message."""
        return {m[1]: m[2][2] for m in self.received if m[0] == "reject"}
