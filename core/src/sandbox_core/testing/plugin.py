"""pytest plugin, opt-in (``pytest -p sandbox_core.testing.plugin``, or that in ``addopts``): fixtures
that start real servers, and the ``transports`` marker.

* ``sandbox_server``: one server per test session with every installed transport.
* ``sandbox_module_server``: one such server per test module (for tests that must not share a
  server with other modules' tests).
* ``sandbox_server_factory``: start servers with chosen transports and config; stopped after the
  test. ``sandbox_server_factory(MyServer, ...)`` starts a :class:`ServerProcess` subclass.
* ``sandbox_module_server_factory``: the same, its servers stopped after the test module.
* ``sandbox_transport``: parametrised over every installed transport with a client side.
* ``sandbox``: an open :class:`~sandbox_core.contract.client.Sandbox` on ``sandbox_server`` over ``sandbox_transport``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol, TypeVar, cast, overload

import pytest

from sandbox_core.contract.client import Sandbox

from . import ServerProcess, installed_transports

#: Server settings the shared test server uses: a short TERM-to-KILL grace keeps tests quick.
TEST_CONFIG: dict[str, Any] = {"services": {"sessions": {"kill_grace_ms": 500}}}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "transports(*names): the transports a server fixture starts with")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sandbox_transport" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("transports")
        names = list(marker.args) if marker is not None else installed_transports()
        metafunc.parametrize("sandbox_transport", names, scope="session")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The services and clients run on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[ServerProcess]:
    server = ServerProcess(config=TEST_CONFIG).start()
    try:
        yield server
    finally:
        server.stop()


ServerT = TypeVar("ServerT", bound=ServerProcess)


class ServerFactory(Protocol):
    """``factory(**kwargs)`` starts a :class:`ServerProcess` (``config`` defaults to
    :data:`TEST_CONFIG`; the other keyword arguments are the class's own);
    ``factory(server_class, **kwargs)`` starts an instance of that subclass the same way."""

    @overload
    def __call__(self, **kwargs: Any) -> ServerProcess: ...
    @overload
    def __call__(self, server_class: type[ServerT], /, **kwargs: Any) -> ServerT: ...


@contextlib.contextmanager
def _servers() -> Iterator[ServerFactory]:
    """A :class:`ServerFactory` whose servers are all stopped when the context ends."""
    started: list[ServerProcess] = []

    def start(server_class: type[ServerProcess] = ServerProcess, /, **kwargs: Any) -> ServerProcess:
        config = kwargs.pop("config", None) or TEST_CONFIG
        server = server_class(config=config, **kwargs)
        started.append(server)  # stopped at the end even if it fails to start
        return server.start()

    try:
        yield cast(ServerFactory, start)
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def sandbox_server_factory() -> Iterator[ServerFactory]:
    with _servers() as factory:
        yield factory


@pytest.fixture(scope="module")
def sandbox_module_server_factory() -> Iterator[ServerFactory]:
    with _servers() as factory:
        yield factory


@pytest.fixture(scope="module")
def sandbox_module_server(sandbox_module_server_factory: ServerFactory) -> ServerProcess:
    return sandbox_module_server_factory()


@pytest.fixture
async def sandbox(sandbox_server: ServerProcess, sandbox_transport: str) -> AsyncIterator[Sandbox]:
    async with Sandbox(sandbox_server.url, transport=sandbox_transport) as sb:
        yield sb
