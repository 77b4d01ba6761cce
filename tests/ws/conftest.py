"""Fixtures of the ws transport tests.

Their server is their own, one per test module (``ws_server``: the shipped
``sandbox_module_server``), not the suite's shared one, and
they use no transport-parametrised fixture, so pytest never moves them among other folders'
tests: a test elsewhere that runs the sessions service in the test process ends every child
process of it when the service closes (the sessions service is a child subreaper and ends what
it adopted), a server the test process started included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from helpers_ws import RawWs

from sandbox_core import Sandbox
from sandbox_core.testing import ServerProcess


@pytest.fixture(scope="module")
def ws_server(sandbox_module_server: ServerProcess) -> ServerProcess:
    """A server with every installed transport, shared by the tests of one module (the shipped
    ``sandbox_module_server``)."""
    return sandbox_module_server


@pytest.fixture
async def raw(ws_server: ServerProcess) -> AsyncIterator[RawWs]:
    """A raw WebSocket to ``/ws`` of the module's server."""
    ws = await RawWs.connect(ws_server.url)
    try:
        yield ws
    finally:
        await ws.aclose()


@pytest.fixture
async def sb(ws_server: ServerProcess) -> AsyncIterator[Sandbox]:
    """The Python client over ws on the module's server."""
    async with Sandbox(ws_server.url, transport="ws") as client:
        yield client
