"""A service installed as its own distribution (tests/plugins/greeter) is reachable over http
through the generic mapping, without any transport or service code knowing of it.

The greeter is a test-only plugin (entry-point group ``sandbox.testing``): only a server started
with ``SANDBOX_TEST_PLUGINS=1`` loads it, as the ones here are; the shared test server, like any
``sandbox serve`` of a development install, does not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from sandbox_core import Sandbox, SandboxError
from sandbox_core.plugins import TEST_ENTRY_POINT_GROUP, make_plugin_manager, plugin_info
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG

TEST_PLUGINS = {"SANDBOX_TEST_PLUGINS": "1"}


@pytest.fixture(scope="module")
def greeter_server() -> Iterator[ServerProcess]:
    """A server with the test-only plugins loaded."""
    server = ServerProcess(config=TEST_CONFIG, env=TEST_PLUGINS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def greeter_http(greeter_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=greeter_server.url, timeout=60) as client:
        yield client


def test_the_plugin_is_installed_through_its_test_only_entry_point() -> None:
    infos = {info.name: info for info in plugin_info(make_plugin_manager(test_plugins=True))}
    assert infos["greeter"].distribution == "sandbox-test-greeter"
    assert infos["greeter"].group == TEST_ENTRY_POINT_GROUP


async def test_a_server_not_asked_for_test_plugins_does_not_serve_it(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/greeter/hello", json={"name": "ada"})  # the shared test server
    assert response.status_code == 404 and response.json()["code"] == "UNKNOWN_ERROR"


async def test_unary_operation_over_http(greeter_http: httpx.AsyncClient) -> None:
    body = (await greeter_http.post("/api/greeter/hello", json={"name": "ada", "excited": True})).json()
    assert body["success"] is True and body["result"] == {"greeting": "hello ada!"}
    assert body["timestamp"].endswith("Z")


async def test_validation_and_errors_over_http(greeter_http: httpx.AsyncClient) -> None:
    missing = await greeter_http.post("/api/greeter/hello", json={})
    assert missing.status_code == 400 and missing.json()["context"]["field"] == "name"
    wrong = await greeter_http.post("/api/greeter/count", json={"upto": 5000})
    assert wrong.status_code == 400 and wrong.json()["context"]["field"] == "upto"
    refused = await greeter_http.post("/api/greeter/refuse", json={"reason": "busy"})
    assert refused.status_code == 409
    assert refused.json()["code"] == "RESOURCE_BUSY" and refused.json()["context"] == {"reason": "busy"}
    assert (await greeter_http.get("/api/greeter/hello")).status_code == 404


async def test_streaming_operation_over_http(greeter_http: httpx.AsyncClient) -> None:
    async with greeter_http.stream("POST", "/api/greeter/count", json={"upto": 3}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    events = [json.loads(f[6:]) for f in raw.split("\n\n") if f.startswith("data: ")]
    assert [e["value"] for e in events] == [1, 2, 3]


async def test_through_the_client_facade(greeter_server: ServerProcess, sandbox_transport: str) -> None:
    async with Sandbox(greeter_server.url, transport=sandbox_transport) as sb:
        assert await sb.call("greeter", "hello", name="bob") == {"greeting": "hello bob"}
        assert [e["value"] async for e in sb.stream("greeter", "count", upto=2)] == [1, 2]
        with pytest.raises(SandboxError) as info:
            await sb.call("greeter", "refuse", reason="no")
        assert info.value.code == "RESOURCE_BUSY" and info.value.status == 409


def test_plugin_settings_come_from_its_config_table(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory(config={"services": {"greeter": {"greeting": "ahoy"}}}, env=TEST_PLUGINS)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/api/greeter/hello", json={"name": "x"}).json()["result"] == {"greeting": "ahoy x"}
