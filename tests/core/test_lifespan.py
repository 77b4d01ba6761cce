"""The server's lifecycle seam: a transport with a listener of its own (``ServerMount.lifespan``)
starts with the server and stops with it, and services declare ``startup()``/``aclose()``.

The server runs in this process (``sandbox_core.server.serve``, the real one, on a free
loopback port) with one more plugin registered beside the http transport and the utils service
(``helpers_inprocess``): a transport ``lifetest`` whose lifespan opens a TCP listener of its own
(it greets and hangs up) and a service ``lifelog`` that records its start and stop, both writing to one journal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from helpers_inprocess import in_process_plugins

from sandbox_core.config import Config
from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceContext, ServiceRegistry, ServiceSpec, operation
from sandbox_core.server import serve
from sandbox_core.transport import ServerContext, ServerMount, TransportSpec

GREETING = b"lifetest\n"


class LifeTest:
    """The in-test plugin: a transport with its own listener and a service, one journal."""

    def __init__(self, *, fail_entering: bool = False) -> None:
        self.journal: list[str] = []
        self.port: int | None = None
        self.fail_entering = fail_entering

    @contextlib.asynccontextmanager
    async def own_listener(self) -> AsyncIterator[None]:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(GREETING)
            await writer.drain()
            writer.close()

        if self.fail_entering:
            self.journal.append("listener failed")
            raise RuntimeError("the listener cannot start")
        listener = await asyncio.start_server(greet, "127.0.0.1", 0)
        self.port = listener.sockets[0].getsockname()[1]
        self.journal.append("listener started")
        try:
            yield
        finally:
            listener.close()
            await listener.wait_closed()
            self.journal.append("listener stopped")

    def server(self, ctx: ServerContext) -> ServerMount:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            raise AssertionError("nothing is routed to this transport's app")

        async def aclose() -> None:
            self.journal.append("mount aclose")

        return ServerMount(app=app, aclose=aclose, lifespan=self.own_listener())

    def service(self, ctx: ServiceContext) -> object:
        journal = self.journal

        class LifeLog:
            async def startup(self) -> None:
                journal.append("service startup")

            async def aclose(self) -> None:
                journal.append("service aclose")

            @operation
            async def journal(self) -> list[str]:
                return list(journal)

        return LifeLog()

    @hookimpl
    def sandbox_register_transports(self, register: Callable[[TransportSpec], None]) -> None:
        register(TransportSpec("lifetest", server=self.server, description="own listener (tests)"))

    @hookimpl
    def sandbox_register_services(self, register: Callable[[ServiceSpec], None]) -> None:
        register(ServiceSpec("lifelog", self.service))


def _config(workspace: Path) -> Config:
    config = Config()
    config.server.host = "127.0.0.1"
    config.server.port = 0
    config.server.workspace = str(workspace)
    config.server.transports = ["http", "lifetest"]
    config.server.shutdown_timeout = 2.0
    return config


async def _get(url: str, path: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_a_transport_listener_starts_and_stops_with_the_server(tmp_path: Path) -> None:
    plugin = LifeTest()
    started = asyncio.Event()
    url = ""
    seen: dict[str, Any] = {}

    def on_started(bound: str) -> None:
        nonlocal url
        url = bound
        started.set()

    async def use_then_stop() -> None:
        await asyncio.wait_for(started.wait(), 30)
        seen["journal at start"] = list(plugin.journal)
        assert plugin.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", plugin.port)
        seen["greeting"] = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        seen["ping"] = await asyncio.wait_for(_get(url, "/api/ping"), 10)

    pm = in_process_plugins(("lifetest", plugin))
    await asyncio.wait_for(serve(_config(tmp_path), shutdown_trigger=use_then_stop, on_started=on_started, pm=pm), 60)

    # started before the server said it serves, with the services already up
    assert seen["journal at start"] == ["service startup", "listener started"]
    assert seen["greeting"] == GREETING
    assert seen["ping"].startswith(b"HTTP/1.1 200")
    # stopped after the transports' aclose and before the services
    assert plugin.journal == [
        "service startup",
        "listener started",
        "mount aclose",
        "listener stopped",
        "service aclose",
    ]
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", plugin.port), 10)


async def test_a_lifespan_that_fails_to_start_stops_the_server_cleanly(tmp_path: Path) -> None:
    plugin = LifeTest(fail_entering=True)
    started: list[str] = []

    async def never() -> None:
        await asyncio.Event().wait()

    pm = in_process_plugins(("lifetest", plugin))
    with pytest.raises(RuntimeError, match="the listener cannot start"):
        await asyncio.wait_for(serve(_config(tmp_path), shutdown_trigger=never, on_started=started.append, pm=pm), 60)
    assert started == []  # it never served
    assert plugin.journal == ["service startup", "listener failed", "service aclose"]


async def test_the_registry_runs_the_declared_lifecycle(tmp_path: Path) -> None:
    from sandbox_core.registry import Service, SupportsAclose

    calls: list[str] = []

    class Full:
        async def startup(self) -> None:
            calls.append("full startup")

        async def aclose(self) -> None:
            calls.append("full aclose")

    class Bare:  # neither: a service needs no lifecycle
        pass

    class Broken:
        async def aclose(self) -> None:
            raise RuntimeError("cannot close")

    assert isinstance(Full(), Service)
    assert isinstance(Broken(), SupportsAclose) and not isinstance(Broken(), Service)
    assert not isinstance(Bare(), SupportsAclose)
    specs = {
        name: ServiceSpec(name, lambda ctx, kind=kind: kind())
        for name, kind in (("full", Full), ("bare", Bare), ("broken", Broken))
    }
    registry = ServiceRegistry(specs, settings={}, workspace=str(tmp_path))
    await registry.start()
    assert calls == ["full startup"]
    await registry.aclose()  # the broken one's failure is logged and stops no other
    assert calls == ["full startup", "full aclose"]


class Reporting(LifeTest):
    """A transport whose lifespan enters with a value of the test's choosing."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value

    @contextlib.asynccontextmanager
    async def own_listener(self) -> AsyncIterator[Any]:  # type: ignore[override]
        self.journal.append("listener started")
        try:
            yield self.value
        finally:
            self.journal.append("listener stopped")


@pytest.mark.parametrize("value", [{"grpc": 9090}, {"": "tcp://x"}])
async def test_listeners_a_lifespan_reports_must_be_names_and_urls(tmp_path: Path, value: object) -> None:
    plugin = Reporting(value)

    async def never() -> None:
        await asyncio.Event().wait()

    pm = in_process_plugins(("lifetest", plugin))
    error = r"transport 'lifetest': the listeners a lifespan reports are \{name: url\} strings"
    with pytest.raises(TypeError, match=error):
        await asyncio.wait_for(serve(_config(tmp_path), shutdown_trigger=never, pm=pm), 60)
    # the lifespan it entered is exited, and the services stopped, as for any failure to start
    assert plugin.journal == ["service startup", "listener started", "listener stopped", "service aclose"]


async def test_a_lifespan_entered_with_anything_else_reports_no_listener(tmp_path: Path) -> None:
    plugin = Reporting(object())

    async def stop_at_once() -> None:
        return

    pm = in_process_plugins(("lifetest", plugin))
    with structlog.testing.capture_logs() as records:
        await asyncio.wait_for(serve(_config(tmp_path), shutdown_trigger=stop_at_once, pm=pm), 60)
    started = [r for r in records if r.get("event") == "server.started"]
    assert len(started) == 1 and started[0]["listeners"] == {}
    assert plugin.journal[-2:] == ["listener stopped", "service aclose"]
