"""A service installed as its own distribution (tests/plugins/greeter) is reachable over http
through the generic mapping, without any transport or service code knowing of it."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from sandbox_core import Sandbox, SandboxError
from sandbox_core.plugins import make_plugin_manager, plugin_info
from sandbox_core.testing import ServerProcess


def test_the_plugin_is_installed_through_its_entry_point() -> None:
    infos = {info.name: info for info in plugin_info(make_plugin_manager())}
    assert infos["greeter"].distribution == "sandbox-test-greeter"


async def test_unary_operation_over_http(http: httpx.AsyncClient) -> None:
    body = (await http.post("/api/greeter/hello", json={"name": "ada", "excited": True})).json()
    assert body["success"] is True and body["result"] == {"greeting": "hello ada!"}
    assert body["timestamp"].endswith("Z")


async def test_validation_and_errors_over_http(http: httpx.AsyncClient) -> None:
    missing = await http.post("/api/greeter/hello", json={})
    assert missing.status_code == 400 and missing.json()["context"]["field"] == "name"
    wrong = await http.post("/api/greeter/count", json={"upto": 5000})
    assert wrong.status_code == 400 and wrong.json()["context"]["field"] == "upto"
    refused = await http.post("/api/greeter/refuse", json={"reason": "busy"})
    assert refused.status_code == 409
    assert refused.json()["code"] == "RESOURCE_BUSY" and refused.json()["context"] == {"reason": "busy"}
    assert (await http.get("/api/greeter/hello")).status_code == 404


async def test_streaming_operation_over_http(http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/api/greeter/count", json={"upto": 3}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    events = [json.loads(f[6:]) for f in raw.split("\n\n") if f.startswith("data: ")]
    assert [e["value"] for e in events] == [1, 2, 3]


async def test_through_the_client_facade(sandbox_server: ServerProcess, sandbox_transport: str) -> None:
    async with Sandbox(sandbox_server.url, transport=sandbox_transport) as sb:
        assert await sb.call("greeter", "hello", name="bob") == {"greeting": "hello bob"}
        assert [e["value"] async for e in sb.stream("greeter", "count", upto=2)] == [1, 2]
        with pytest.raises(SandboxError) as info:
            await sb.call("greeter", "refuse", reason="no")
        assert info.value.code == "RESOURCE_BUSY" and info.value.status == 409


def test_plugin_settings_come_from_its_config_table(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory(config={"services": {"greeter": {"greeting": "ahoy"}}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/api/greeter/hello", json={"name": "x"}).json()["result"] == {"greeting": "ahoy x"}
