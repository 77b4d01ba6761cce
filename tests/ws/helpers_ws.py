"""Helpers of the ws transport tests: a raw WebSocket client (wsproto over asyncio streams) that
shows the wire as it is (pings, close codes, frames one by one) and can stop reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from sandbox_core.testing.procs import status_kib


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code} {reason}")
        self.code, self.reason = code, reason


class RawWs:
    """One WebSocket to the server, driven by hand. ``recv`` returns the next wsproto event
    (a whole message, a Ping, a CloseConnection); ``frame`` the next JSON frame (pings counted)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []
        self.parts: list[Any] = []
        self.pings = 0
        self.closed: Closed | None = None
        self.other: list[dict[str, Any]] = []  # frames of other ids that ``answer`` passed over

    @classmethod
    async def connect(
        cls, url: str, path: str = "/ws", headers: list[tuple[str, str]] | None = None, rcvbuf: int | None = None
    ) -> RawWs:
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect: the window the server may fill is small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        if rcvbuf is not None:
            writer.transport.set_write_buffer_limits(0)  # type: ignore[attr-defined]
        self = cls(reader, writer)
        host = f"{parts.hostname}:{parts.port}"
        writer.write(self.ws.send(Request(host=host, target=path, extra_headers=headers or [])))
        await writer.drain()
        while True:
            event = await self._next_event(10)
            if isinstance(event, AcceptConnection):
                return self
            if isinstance(event, RejectConnection):
                raise ConnectionRefusedError(f"upgrade refused: {event.status_code}")

    async def _next_event(self, timeout_s: float) -> Event:
        deadline = time.monotonic() + timeout_s
        while not self.events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no event")
            data = await asyncio.wait_for(self.reader.read(1 << 20), remaining)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
            if not data and not self.events:
                raise Closed(1006, "EOF")
        return self.events.pop(0)

    async def recv(self, timeout_s: float = 30) -> Event:
        """The next whole message, Ping or CloseConnection (a Ping is answered)."""
        while True:
            event = await self._next_event(timeout_s)
            if isinstance(event, Message):
                self.parts.append(event.data)
                if not event.message_finished:
                    continue
                data = type(self.parts[0])().join(self.parts)
                self.parts.clear()
                return TextMessage(data) if isinstance(event, TextMessage) else BytesMessage(data)
            if isinstance(event, Ping):
                self.pings += 1
                with contextlib.suppress(Exception):
                    self.writer.write(self.ws.send(event.response()))
                return event
            if isinstance(event, CloseConnection):
                self.closed = Closed(event.code, event.reason)
                with contextlib.suppress(Exception):
                    self.writer.write(self.ws.send(event.response()))
                return event
            return event

    async def frame(self, timeout_s: float = 30) -> dict[str, Any]:
        """The next JSON frame; :class:`Closed` when the server closes."""
        while True:
            event = await self.recv(timeout_s)
            if isinstance(event, CloseConnection):
                raise Closed(event.code, event.reason)
            if isinstance(event, TextMessage):
                frame: dict[str, Any] = json.loads(event.data)
                return frame

    async def close_code(self, timeout_s: float = 30) -> int:
        """Read until the server closes; its close code."""
        while True:
            try:
                await self.frame(timeout_s)
            except Closed as closed:
                return closed.code

    async def send_text(self, text: str) -> None:
        self.writer.write(self.ws.send(TextMessage(text)))
        await self.writer.drain()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.send_text(json.dumps(frame))

    async def request(
        self, rid: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        frame: dict[str, Any] = {"type": "request", "id": rid, "method": method, "path": path}
        if body is not None:
            frame["body"] = body
        if headers is not None:
            frame["headers"] = headers
        await self.send(frame)

    async def answer(self, rid: str, timeout_s: float = 30) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The stream frames and the final frame (response or error) of ``rid``; frames of other
        ids are kept in ``self.other``."""
        streamed: list[dict[str, Any]] = []
        while True:
            frame = await self.frame(timeout_s)
            if frame.get("id") != rid:
                self.other.append(frame)
            elif frame["type"] == "stream":
                streamed.append(frame)
            else:
                return streamed, frame

    async def call(self, rid: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
        await self.request(rid, method, path, body)
        _, final = await self.answer(rid)
        return final

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.writer.transport.abort()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(self.ws.send(CloseConnection(1000)))
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def events_of(streamed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of ``stream`` frames (their data is the JSON text of one event)."""
    return [json.loads(frame["data"]) for frame in streamed]


async def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, every: float = 0.02) -> Any:
    """Poll an async or plain predicate until it returns something true."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MB (10^6 bytes)."""
    return status_kib(pid, "VmRSS") * 1024 / 1e6
