"""Conformance of the ports service: port-watch streams (tcp, http, status ranges, processes).

The ports are served by listeners in the test process on 127.0.0.1 (port 0), so the tests
assume the server runs on the same host (as every fixture of this package does). Nothing
here asserts a duration: where a test needs the server to have polled, it waits for the
listener to see the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import collect, sid
from sandbox_core.contract.models.ports import PortErrorEvent, PortProcessExitedEvent, PortReadyEvent, PortWatchingEvent
from sandbox_core.errors import SandboxError, ValidationFailed

T = TypeVar("T")

#: A bound on waiting for something that must happen (a safety net, never an assertion on time).
SAFETY_S = 60.0


async def within(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, SAFETY_S)


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Listener:
    """A tiny loopback server in the test process whose answer can change while it runs.

    ``answer`` is an HTTP status (int), ``"garbage"`` (a line that is not HTTP), ``"close"``
    (accept, then close without a word) or ``"stall"`` (accept, read, never answer). Every
    connection counts as a hit; request lines are recorded in ``requests``.
    """

    def __init__(
        self,
        answer: int | str = 200,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        body: bytes = b"",
        content_type: str = "text/plain",
    ) -> None:
        self.answer = answer
        self.host = host
        self.port = port
        self.body = body
        self.content_type = content_type
        self.hits = 0
        self.requests: list[str] = []
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connections; then end the open ones (wait_closed may wait for them)
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
        if server is not None:
            await server.wait_closed()

    async def wait_hits(self, count: int) -> None:
        """Return once ``count`` connections have been seen (in all)."""
        if self.hits >= count:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, fut))
        await within(fut)

    def _hit(self) -> None:
        self.hits += 1
        for count, fut in list(self._waiters):
            if self.hits >= count and not fut.done():
                fut.set_result(None)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            answer = self.answer
            self._hit()
            if answer == "close":
                return
            line = await reader.readline()
            if line:
                self.requests.append(line.decode("latin-1").rstrip("\r\n"))
                while (await reader.readline()).strip():
                    pass
            if answer == "stall":
                await reader.read()  # until the peer gives up
                return
            if answer == "garbage":
                writer.write(b"this is not http\r\n\r\n")
            else:
                writer.write(
                    f"HTTP/1.1 {answer} Status\r\nContent-Type: {self.content_type}\r\n"
                    f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n".encode()
                    + self.body
                )
            await writer.drain()
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class PortsSuite:
    async def test_port_watch_tcp_ready(self, sandbox: Sandbox) -> None:
        async with Listener("close") as listener:
            events = await within(collect(sandbox.ports.watch(listener.port, mode="tcp")))
        assert events == [PortWatchingEvent(port=listener.port), PortReadyEvent(port=listener.port)]

    async def test_port_watch_http_ready_with_status_and_path(self, sandbox: Sandbox) -> None:
        async with Listener(204) as listener:
            events = await within(collect(sandbox.ports.watch(listener.port, path="/health?probe=1")))
        assert events == [PortWatchingEvent(port=listener.port), PortReadyEvent(port=listener.port, status_code=204)]
        assert listener.requests[0] == "GET /health?probe=1 HTTP/1.1"

    async def test_port_watch_path_without_slash_and_custom_range(self, sandbox: Sandbox) -> None:
        async with Listener(404) as listener:
            events = await within(
                collect(sandbox.ports.watch(listener.port, path="missing", status_min=404, status_max=404))
            )
        assert events[-1] == PortReadyEvent(port=listener.port, status_code=404)
        assert listener.requests[0] == "GET /missing HTTP/1.1"

    async def test_port_watch_keeps_polling_until_status_is_in_range(self, sandbox: Sandbox) -> None:
        async with Listener(503) as listener:
            stream = sandbox.ports.watch(listener.port, interval_ms=100)
            try:
                assert await within(stream.__anext__()) == PortWatchingEvent(port=listener.port)
                await listener.wait_hits(2)  # two answers out of range and the watch goes on
                listener.answer = 200
                rest = await within(collect(stream))
            finally:
                await stream.aclose()
        assert rest == [PortReadyEvent(port=listener.port, status_code=200)]
        assert listener.hits >= 3

    async def test_port_watch_non_http_answer_is_not_ready(self, sandbox: Sandbox) -> None:
        async with Listener("garbage") as listener:
            stream = sandbox.ports.watch(listener.port, interval_ms=100)
            try:
                assert isinstance(await within(stream.__anext__()), PortWatchingEvent)
                await listener.wait_hits(2)
                listener.answer = 302  # 3xx is in the default range and is not followed
                rest = await within(collect(stream))
            finally:
                await stream.aclose()
        assert rest == [PortReadyEvent(port=listener.port, status_code=302)]

    async def test_port_watch_waits_for_the_port_to_open(self, sandbox: Sandbox) -> None:
        port = free_port()
        stream = sandbox.ports.watch(port, mode="tcp", interval_ms=100)
        try:
            assert await within(stream.__anext__()) == PortWatchingEvent(port=port)
            async with Listener("close", port=port) as listener:
                rest = await within(collect(stream))
                assert listener.hits >= 1
        finally:
            await stream.aclose()
        assert rest == [PortReadyEvent(port=port)]

    @pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
    async def test_port_watch_finds_a_server_on_ipv6_loopback(self, sandbox: Sandbox) -> None:
        async with Listener(200, host="::1") as listener:
            events = await within(collect(sandbox.ports.watch(listener.port)))
        assert events[-1] == PortReadyEvent(port=listener.port, status_code=200)

    @pytest.mark.parametrize("port", [0, -1, 65536, 1_000_000])
    async def test_port_watch_invalid_port(self, sandbox: Sandbox, port: int) -> None:
        with pytest.raises(SandboxError) as info:
            await collect(sandbox.ports.watch(port, mode="tcp"))
        assert (info.value.code, info.value.status) == ("INVALID_PORT_NUMBER", 400)

    async def test_port_watch_invalid_mode(self, sandbox: Sandbox) -> None:
        with pytest.raises(ValidationFailed) as info:
            await collect(sandbox.ports.watch(8080, mode="udp"))  # type: ignore[arg-type]
        assert info.value.details.get("field") == "mode"

    async def test_port_watch_unknown_process(self, sandbox: Sandbox) -> None:
        port = free_port()
        events = await within(collect(sandbox.ports.watch(port, mode="tcp", process_id=f"nope-{uuid.uuid4().hex}")))
        assert events == [PortWatchingEvent(port=port), PortErrorEvent(port=port, error="Process not found")]

    async def test_port_watch_process_exits_first(self, sandbox: Sandbox) -> None:
        port = free_port()
        name = f"pw-{uuid.uuid4().hex[:10]}"
        flag = f"/tmp/conformance-portwatch-{uuid.uuid4().hex}"
        await sandbox.processes.start(
            f"while [ ! -e {flag} ]; do sleep 0.01; done; rm -f {flag}; exit 3", process_id=name, session_id=sid()
        )
        stream = sandbox.ports.watch(port, mode="tcp", process_id=name)
        try:
            assert await within(stream.__anext__()) == PortWatchingEvent(port=port)
            await sandbox.exec(f"touch {flag}", session_id=sid())
            rest = await within(collect(stream))
        finally:
            await stream.aclose()
        assert rest == [PortProcessExitedEvent(port=port, exit_code=3)]

    async def test_port_watch_process_already_finished(self, sandbox: Sandbox) -> None:
        name = f"pw-{uuid.uuid4().hex[:10]}"
        await sandbox.processes.start("exit 4", process_id=name)
        async for _ in sandbox.processes.stream_logs(name):
            pass  # to its exit event
        async with Listener("close") as listener:
            events = await within(collect(sandbox.ports.watch(listener.port, mode="tcp", process_id=name)))
        p = listener.port
        assert events == [PortWatchingEvent(port=p), PortProcessExitedEvent(port=p, exit_code=4)]

    async def test_port_watch_ready_while_its_process_runs(self, sandbox: Sandbox) -> None:
        name = f"pw-{uuid.uuid4().hex[:10]}"
        await sandbox.processes.start("sleep 600", process_id=name)
        try:
            async with Listener(200) as listener:
                events = await within(collect(sandbox.ports.watch(listener.port, process_id=name)))
            assert events[-1] == PortReadyEvent(port=listener.port, status_code=200)
        finally:
            await sandbox.processes.kill(name)
