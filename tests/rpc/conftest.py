"""Fixtures of the rpc transport tests.

Their server is their own, one per test module (``rpc_server``), not the suite's shared one, and
they use no transport-parametrised fixture, so pytest never moves them among other folders'
tests: a test elsewhere that runs the sessions service in the test process ends every child
process of it when the service closes (the sessions service is a child subreaper and ends what
it adopted), a server the test process started included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from capnweb import RpcStub, WebSocketClient
from sandbox_core import Sandbox
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG


@pytest.fixture(scope="module")
def rpc_server() -> Iterator[ServerProcess]:
    """A server with every installed transport (and the test-only greeter service), shared by
    the tests of one module."""
    server = ServerProcess(config=TEST_CONFIG, env={"SANDBOX_TEST_PLUGINS": "1"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(rpc_server: ServerProcess) -> AsyncIterator[RpcStub]:
    """The server's ``SandboxControlAPI``, over the engine's own WebSocket client (as a capnweb
    peer such as the official SDK sees it)."""
    client = WebSocketClient(rpc_server.ws_url + "/rpc")
    main = await client.connect()
    try:
        yield main
    finally:
        main.dispose()  # ends the session on both sides
        await client.aclose()


@pytest.fixture
async def sb(rpc_server: ServerProcess) -> AsyncIterator[Sandbox]:
    """The Python client over rpc on the module's server."""
    async with Sandbox(rpc_server.url, transport="rpc") as client:
        yield client
