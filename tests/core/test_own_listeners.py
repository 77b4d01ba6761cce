"""The seams core gives a transport that serves a listener of its own (a gRPC or REST server
beside the server's port), shown with a real server process that runs one more transport,
``listentest`` (``serve_with_listener.py``): its lifespan binds a TCP listener and reports it,
its mount declares a probe of its own, and it follows the server's bind rule and token.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_ws import aconnect_ws

from sandbox_core.config import ConfigError
from sandbox_core.edge import CREDENTIAL_HEADERS, PROBES, EdgePolicy, bind_refusal
from sandbox_core.server import EdgeApp
from sandbox_core.testing import ServerProcess, assert_error
from sandbox_core.testing.plugin import TEST_CONFIG
from sandbox_core.transport import ServerMount

SERVE_WITH_LISTENER = str(Path(__file__).with_name("serve_with_listener.py"))
TOKEN = "l1stener-token-value"
ServerFactory = Callable[..., ServerProcess]


class ListenerServer(ServerProcess):
    """A real server (subprocess, free port) serving http, ws and ``listentest``."""

    def __init__(self, **kwargs: Any) -> None:
        config = {key: dict(value) for key, value in (kwargs.pop("config", None) or TEST_CONFIG).items()}
        config["server"] = {**config.get("server", {}), "transports": ["http", "ws", "listentest"]}
        super().__init__(config=config, **kwargs)

    def command(self, ready_fd: int) -> list[str]:
        return [
            sys.executable,
            SERVE_WITH_LISTENER,
            "serve",
            "--config",
            str(self.config_path),
            "--ready-fd",
            str(ready_fd),
        ]


async def greeting(url: str) -> bytes:
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_the_listeners_a_lifespan_binds_are_logged_and_known_to_the_test(
    sandbox_server_factory: ServerFactory,
) -> None:
    server = sandbox_server_factory(ListenerServer)
    assert sorted(server.listeners) == ["listentest", "listentest-rest"]
    url = server.listeners["listentest"]
    assert url.startswith("tcp://127.0.0.1:") and not url.endswith(f":{server.port}")
    assert await greeting(url) == b"listentest\n"  # the very listener the lifespan bound
    rest = server.listeners["listentest-rest"]
    assert rest.startswith("http://127.0.0.1:") and not rest.endswith(f":{server.port}")
    async with httpx.AsyncClient(base_url=rest, timeout=30) as http:
        assert (await http.get("/v1/health")).status_code == 200


async def test_an_own_http_listener_gets_the_edge_and_the_hardening_of_the_server_port(
    sandbox_server_factory: ServerFactory,
) -> None:
    server = sandbox_server_factory(ListenerServer, config={"server": {"token": TOKEN}})
    rest = server.listeners["listentest-rest"]
    async with httpx.AsyncClient(base_url=rest, timeout=30) as http:
        # its own probe needs no token (and learns it was anonymous); the rest of it does
        health = await http.get("/v1/health")
        assert health.status_code == 200 and health.json()["anonymous"] is True
        assert "server" not in health.headers  # hypercorn as the server's port runs it
        assert_error(await http.get("/v1/files/x"), 401, "UNAUTHORIZED")
        assert_error(await http.get("/listentest/health"), 401, "UNAUTHORIZED")  # the port's probe is not this one's
        assert_error(await http.get("/v1/health", headers={"Host": "evil.example"}), 403, "HOST_NOT_ALLOWED")
        for credential in ({"Authorization": f"Bearer {TOKEN}"}, {"X-Forwarded-Authorization": f"Bearer {TOKEN}"}):
            seen = await http.get("/v1/files/x", headers=credential)
            assert seen.status_code == 200
            assert not set(seen.json()["headers"]) & {"authorization", "x-forwarded-authorization"}
    # h2c, off on the server (http2 = false), is refused on this listener as on the port
    host, port = rest.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 505"), answer[:100]
    # it stops with the server
    server.stop()
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)


async def test_a_mount_declares_its_own_probes_and_nothing_more_is_exempt(
    sandbox_server_factory: ServerFactory,
) -> None:
    server = sandbox_server_factory(ListenerServer, config={"server": {"token": TOKEN}})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer wr0ng"}):
            health = await http.get("/listentest/health", headers=headers)
            assert health.status_code == 200 and health.json()["anonymous"] is True
        authed = await http.get("/listentest/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert authed.status_code == 200 and authed.json()["anonymous"] is False
        # only the declared (method, path): another method, another path of the mount need the token
        assert_error(await http.post("/listentest/health", json={}), 401, "UNAUTHORIZED")
        assert_error(await http.get("/listentest/health/x"), 401, "UNAUTHORIZED")
        assert_error(await http.get("/listentest/other"), 401, "UNAUTHORIZED")
        # the server's own probes are still exempt, and the Host check still applies to a mount's probe
        assert (await http.get("/api/ready")).status_code == 200
        assert_error(await http.get("/listentest/health", headers={"Host": "evil.example"}), 403, "HOST_NOT_ALLOWED")


async def test_the_forwarded_authorization_header_carries_the_token_on_every_transport(
    sandbox_server_factory: ServerFactory,
) -> None:
    server = sandbox_server_factory(ListenerServer, config={"server": {"token": TOKEN}})
    forwarded = {"X-Forwarded-Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        # http (the contract's routes) and a third transport's routes
        ran = await http.post("/api/execute", json={"command": "echo hi"}, headers=forwarded)
        assert ran.status_code == 200 and ran.json()["stdout"].strip() == "hi"
        seen = await http.get("/listentest/echo", headers={**forwarded, "Authorization": "Bearer not-a-session"})
        assert seen.status_code == 200
        # both credential headers are taken away before a transport sees the request
        assert not set(seen.json()["headers"]) & {"authorization", "x-forwarded-authorization"}
        # a wrong or malformed one is refused like a wrong Authorization
        for value in ("Bearer wr0ng", TOKEN, ""):
            refused = await http.get("/listentest/echo", headers={"X-Forwarded-Authorization": value})
            assert_error(refused, 401, "UNAUTHORIZED")
        # the probes, given it, are answered in full (not anonymous)
        assert (await http.get("/listentest/health", headers=forwarded)).json()["anonymous"] is False
    # a WebSocket upgrade (ws transport) passes with it and is refused without it
    async with httpx.AsyncClient(timeout=30) as client:
        async with aconnect_ws(server.ws_url + "/ws", client, headers=forwarded) as ws:
            await ws.send_json({"type": "request", "id": "1", "method": "GET", "path": "/api/ping"})
            answer = await ws.receive_json(timeout=30)
            assert answer["id"] == "1" and answer["status"] == 200, answer
        refused = await client.get(
            server.url + "/ws",
            headers={
                "connection": "upgrade",
                "upgrade": "websocket",
                "sec-websocket-version": "13",
                "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert_error(refused, 401, "UNAUTHORIZED")


def test_a_transport_listener_follows_the_bind_rule_of_server_host(
    sandbox_server_factory: ServerFactory,
) -> None:
    wide = {"transports": {"listentest": {"host": "0.0.0.0"}}}
    with pytest.raises(RuntimeError) as info:
        sandbox_server_factory(ListenerServer, config=wide)
    assert "transports.listentest.host = '0.0.0.0' is reachable from other machines and no token is set" in str(
        info.value
    )
    # with a token it starts, bound where it was told
    server = sandbox_server_factory(ListenerServer, config={**wide, "server": {"token": TOKEN}})
    assert server.listeners["listentest"].startswith("tcp://0.0.0.0:")
    assert server.listeners["listentest-rest"].startswith("http://0.0.0.0:")


def test_the_bind_rule_is_one_function_for_the_server_and_transports() -> None:
    assert bind_refusal("127.0.0.1", token=False, allow_unauthenticated=False) is None
    assert bind_refusal("::1", token=False, allow_unauthenticated=False) is None
    assert bind_refusal("0.0.0.0", token=True, allow_unauthenticated=False) is None
    assert bind_refusal("10.1.2.3", token=False, allow_unauthenticated=True) is None
    refusal = bind_refusal("10.1.2.3", token=False, allow_unauthenticated=False, setting="transports.x.host")
    assert refusal is not None and refusal.startswith("transports.x.host = '10.1.2.3' is reachable")
    policy = EdgePolicy.build(bind_host="127.0.0.1", token=None, allowed_hosts=None, allowed_origins=[])
    with pytest.raises(ConfigError, match=r"^transports\.x\.host = '0\.0\.0\.0' is reachable"):
        policy.check_bind("0.0.0.0", "transports.x.host")
    policy.check_bind("127.0.0.1", "transports.x.host")  # loopback: fine
    allowed = EdgePolicy.build(
        bind_host="127.0.0.1", token=None, allowed_hosts=None, allowed_origins=[], allow_unauthenticated=True
    )
    allowed.check_bind("0.0.0.0", "transports.x.host")


def test_a_listener_policy_keeps_the_token_and_origins_with_the_host_list_of_its_address() -> None:
    policy = EdgePolicy.build(
        bind_host="127.0.0.1", token="t0k", allowed_hosts=None, allowed_origins=["https://app.example/"]
    )
    assert policy.allowed_hosts is not None and "10.0.0.5" not in policy.allowed_hosts
    own = policy.for_bind("10.0.0.5")
    assert own.token == "t0k" and own.allowed_origins == policy.allowed_origins
    assert own.allowed_hosts == frozenset({"localhost", "127.0.0.1", "::1", "10.0.0.5"})
    assert policy.for_bind("0.0.0.0").allowed_hosts is None  # a wildcard bind: any host (the token guards it)
    configured = EdgePolicy.build(bind_host="127.0.0.1", token=None, allowed_hosts=["a.example"], allowed_origins=[])
    assert configured.for_bind("10.0.0.5").allowed_hosts == frozenset({"a.example"})  # the configured list wins
    # one function for a credential that comes another way (gRPC metadata, say)
    assert policy.authorized(b"Bearer t0k") and not policy.authorized(b"Bearer nope")
    assert policy.authorized_headers([(b"X-Forwarded-Authorization", b"bearer t0k")])
    assert not policy.authorized_headers([(b"x-other", b"Bearer t0k")])
    assert CREDENTIAL_HEADERS == (b"authorization", b"x-forwarded-authorization")  # an explicit list


def test_the_token_exempt_requests_are_the_servers_probes_and_those_mounts_declare() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    mounts = {
        "a": ServerMount(app=app, http_paths=("/v1/",), probes=(("GET", "/v1/health"),)),
        "b": ServerMount(app=app, http_paths=("/b",)),
    }
    assert EdgeApp(mounts).probes == PROBES | {("GET", "/v1/health")}
    assert EdgeApp({"b": mounts["b"]}).probes == PROBES
    # a mount exempts only requests to its own paths, never another transport's
    stray = ServerMount(app=app, http_paths=("/v1/", "/api"), probes=(("POST", "/api/execute"),))
    with pytest.raises(ValueError, match=r"transport 'c': probe POST /api/execute is not on its own http paths"):
        EdgeApp({"c": stray})
