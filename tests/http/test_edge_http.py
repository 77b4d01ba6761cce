"""The edge over http: Host and browser Origin allow-lists, the optional token, and request
bodies (refused early when too large, bounded across requests)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sandbox_core import Sandbox
from sandbox_core.errors import AccessDenied
from sandbox_core.testing import ServerProcess, assert_error

ServerFactory = Callable[..., ServerProcess]


def raw_request(port: int, head: bytes, body: bytes = b"", *, read_timeout: float = 10.0) -> bytes:
    """Send ``head`` (and ``body``) on a fresh connection; what the server answers before it
    closes the connection or ``read_timeout`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(head + body)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and b"content-length: 0" in received.lower():
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return received


# web pages ----------------------------------------------------------------------------------


async def test_a_web_page_cannot_run_commands(http: httpx.AsyncClient, sandbox_server: ServerProcess) -> None:
    marker = os.path.join(sandbox_server.workspace, "pwned")
    # what a page's fetch(..., {mode: "no-cors", body: "..."}) sends: a simple request, no preflight
    page = await http.post(
        "/api/execute",
        content=f'{{"command":"touch {marker}"}}',
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
    )
    body = assert_error(page, 403, "ORIGIN_NOT_ALLOWED")
    assert body["context"]["origin"] == "https://evil.example"
    await asyncio.sleep(0.2)
    assert not await asyncio.to_thread(os.path.exists, marker)
    preflight = await http.options(
        "/api/execute", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 403
    # server-side clients send no Origin, as before
    assert (await http.post("/api/execute", json={"command": "echo ok"})).json()["stdout"] == "ok"


async def test_dns_rebinding_host_is_refused(http: httpx.AsyncClient, sandbox_server: ServerProcess) -> None:
    rebound = await http.post("/api/execute", json={"command": "true"}, headers={"Host": "attacker.example:3000"})
    assert assert_error(rebound, 403, "HOST_NOT_ALLOWED")["context"]["host"] == "attacker.example:3000"
    for host in (f"127.0.0.1:{sandbox_server.port}", f"localhost:{sandbox_server.port}", "localhost", "[::1]:3000"):
        assert (await http.post("/api/execute", json={"command": "true"}, headers={"Host": host})).status_code == 200


async def test_websocket_upgrade_from_a_page_is_refused(sandbox_server: ServerProcess) -> None:
    head = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Origin: https://evil.example\r\n\r\n"
    )
    answer = await asyncio.to_thread(raw_request, sandbox_server.port, head, read_timeout=5)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:100]


async def test_allowed_origins_and_hosts_are_configurable(sandbox_server_factory: ServerFactory) -> None:
    server = sandbox_server_factory(
        config={"server": {"allowed_origins": ["https://app.example"], "allowed_hosts": ["sandbox.internal"]}}
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        ok = await http.post(
            "/api/execute",
            json={"command": "echo hi"},
            headers={"Origin": "https://app.example", "Host": "sandbox.internal:8080"},
        )
        assert ok.status_code == 200 and ok.json()["stdout"] == "hi"
        # the configured list replaces the default one
        assert_error(await http.get("/api/ping"), 403, "HOST_NOT_ALLOWED")
        other = await http.get("/api/ping", headers={"Origin": "https://other.example", "Host": "sandbox.internal"})
        assert_error(other, 403, "ORIGIN_NOT_ALLOWED")


# token ----------------------------------------------------------------------------------------


async def test_token_is_required_on_every_route(sandbox_server_factory: ServerFactory) -> None:
    token = "s3cret-token-value"
    server = sandbox_server_factory(config={"server": {"token": token}})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for method, path, body in [
            ("POST", "/api/execute", {"command": "echo hi"}),
            ("GET", "/api/version", None),  # GET /api/ping and /api/ready are probes: tests/http/test_probes.py
            ("POST", "/api/execute/stream", {"command": "echo hi"}),
            ("GET", "/api/process/list", None),
            ("POST", "/api/utils/ping", {}),
            ("GET", "/", None),
        ]:
            for headers in ({}, {"Authorization": "Bearer wr0ng-value"}, {"Authorization": token}):
                refused = await http.request(method, path, json=body, headers=headers)
                payload = assert_error(refused, 401, "UNAUTHORIZED")
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert token not in refused.text and "wr0ng-value" not in refused.text
                assert payload["httpStatus"] == 401
        ok = await http.post("/api/execute", json={"command": "echo hi"}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["stdout"] == "hi"
        # with a token the header is a credential: it no longer names the session
        await http.post(
            "/api/execute", json={"command": "export WHERE=default"}, headers={"Authorization": f"Bearer {token}"}
        )
        where = await http.post(
            "/api/execute", json={"command": "echo $WHERE"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert where.json()["stdout"] == "default"
    assert all(token not in line for line in server.log)


async def test_python_client_sends_the_token(sandbox_server_factory: ServerFactory) -> None:
    server = sandbox_server_factory(config={"server": {"token": "tok-123"}}, env={"SANDBOX_TOKEN": ""})
    async with Sandbox(server.url, transport="http") as sb:
        with pytest.raises(AccessDenied) as refused:
            await sb.exec("echo hi")
        assert refused.value.code == "UNAUTHORIZED"
    async with Sandbox(server.url, transport="http", token="tok-123") as sb:
        assert (await sb.exec("echo hi")).stdout == "hi"
    os.environ["SANDBOX_TOKEN"] = "tok-123"
    try:
        async with Sandbox(server.url, transport="http") as sb:
            assert (await sb.exec("echo env")).stdout == "env"
    finally:
        del os.environ["SANDBOX_TOKEN"]


async def test_token_from_env_and_file(sandbox_server_factory: ServerFactory, tmp_path: Any) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    server = sandbox_server_factory(config={"server": {"token_file": str(token_file)}})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.get("/api/version", headers={"Authorization": "Bearer from-file"})).status_code == 200
        assert (await http.get("/api/version")).status_code == 401
    server = sandbox_server_factory(env={"SANDBOX_TOKEN": "from-env"})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.get("/api/version", headers={"Authorization": "Bearer from-env"})).status_code == 200
        assert (await http.get("/api/version")).status_code == 401


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"host": "0.0.0.0"}, "no token is set"),
        ({"host": "0.0.0.0"}, "server.allow_unauthenticated = true or SANDBOX_ALLOW_UNAUTHENTICATED=1"),
        ({"token": ""}, "server.token is empty"),
        ({"token": "a", "token_file": "/nonexistent"}, "both set"),
        ({"token_file": "/nonexistent/token"}, "cannot read"),
    ],
)
def test_unsafe_or_broken_token_config_refuses_to_start(server: dict[str, Any], message: str, tmp_path: Any) -> None:
    proc = ServerProcess(config={"server": server}, startup_timeout=20, env={"SANDBOX_TOKEN": ""})
    with pytest.raises(RuntimeError):
        proc.start()
    try:
        assert any(message in line for line in proc.log), list(proc.log)[-5:]
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("server", "env"),
    [
        ({"host": "0.0.0.0", "allow_unauthenticated": True}, {}),
        # SANDBOX_ALLOW_UNAUTHENTICATED=1 (the container's way) does what the setting does
        ({"host": "0.0.0.0"}, {"SANDBOX_TOKEN": "", "SANDBOX_ALLOW_UNAUTHENTICATED": "1"}),
    ],
    ids=["setting", "environment"],
)
def test_non_loopback_without_token_starts_when_allowed(server: dict[str, Any], env: dict[str, str]) -> None:
    proc = ServerProcess(config={"server": server}, startup_timeout=20, env=env)
    proc.start()
    try:
        answer = raw_request(proc.port, b"GET /api/ping HTTP/1.1\r\nHost: anything.example\r\n\r\n", read_timeout=2)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    finally:
        proc.stop()


def test_a_bad_allow_unauthenticated_variable_stops_start_up() -> None:
    """A value of SANDBOX_ALLOW_UNAUTHENTICATED that is not a yes or a no stops start-up naming it."""
    proc = ServerProcess(
        config={"server": {"host": "0.0.0.0"}},
        startup_timeout=20,
        env={"SANDBOX_TOKEN": "", "SANDBOX_ALLOW_UNAUTHENTICATED": "maybe"},
    )
    with pytest.raises(RuntimeError):
        proc.start()
    try:
        assert any("(from SANDBOX_ALLOW_UNAUTHENTICATED)" in line for line in proc.log), list(proc.log)[-5:]
    finally:
        proc.stop()


# bodies ---------------------------------------------------------------------------------------


async def test_oversized_content_length_is_refused_before_the_body(sandbox_server: ServerProcess) -> None:
    claimed = 1024**4  # a claimed 1 TB: answered at once, nothing of it read
    head = (
        b"POST /api/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % claimed
    )
    t0 = time.monotonic()
    answer = await asyncio.to_thread(
        raw_request, sandbox_server.port, head, b'{"path":"/tmp/x","content":"', read_timeout=5
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - t0 < 3
    assert b'"setting":"transports.http.max_body_bytes"' in answer


async def test_body_budget_bounds_bodies_held_at_once(sandbox_server_factory: ServerFactory) -> None:
    limit = 4 * 1024 * 1024
    server = sandbox_server_factory(
        config={"transports": {"http": {"max_body_bytes": limit, "max_body_bytes_total": limit, "body_wait_s": 0.5}}}
    )
    head = (
        b"POST /api/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (3 * 1024 * 1024)
    )
    # the first request holds 3 MiB of the 4 MiB budget and never finishes sending its body
    holder = socket.create_connection(("127.0.0.1", server.port))
    try:
        holder.sendall(head + b'{"path":"/tmp/held","content":"')
        await asyncio.sleep(0.3)
        waited = await asyncio.to_thread(raw_request, server.port, head, b"", read_timeout=5)
        assert waited.startswith(b"HTTP/1.1 503"), waited[:200]
        assert b"RESOURCE_BUSY" in waited and b"max_body_bytes_total" in waited
    finally:
        holder.close()
    await asyncio.sleep(0.3)  # the holder's bytes come back when its request ends
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        content = "y" * (3 * 1024 * 1024 - 100)
        written = await http.post("/api/write", json={"path": "/tmp/budget-ok", "content": content})
        assert written.status_code == 200, written.text[:200]


async def test_a_body_whose_bytes_stop_coming_is_given_up(sandbox_server_factory: ServerFactory) -> None:
    """An upload that begins, then sends nothing for ``[server] body_timeout`` (1 s here), is
    answered 408 and its share of the body budget comes back (the whole budget is then usable);
    it used to hold its request, and its budget, for as long as the client kept the connection."""
    limit = 4 * 1024 * 1024
    server = sandbox_server_factory(
        config={
            "server": {"body_timeout": 1.0, "max_body_bytes_total": limit, "body_wait_timeout": 0.5},
            "transports": {"http": {"max_body_bytes": limit}},
        }
    )
    head = (
        b"POST /api/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % limit
    )
    stalled = await asyncio.to_thread(
        raw_request, server.port, head, b'{"path":"/tmp/stalled","content":"', read_timeout=10
    )
    assert stalled.startswith(b"HTTP/1.1 408"), stalled[:200]
    assert b'"setting":"server.body_timeout"' in stalled and b"connection: close" in stalled.lower()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        content = "y" * (limit - 100)
        written = await http.post("/api/write", json={"path": "/tmp/after-stall", "content": content})
        assert written.status_code == 200, written.text[:200]


# large answers --------------------------------------------------------------------------------


async def test_long_lists_are_encoded_in_batches_to_the_same_json() -> None:
    import msgspec

    from sandbox_core.contract.models.files import FileInfo, ListFilesResult
    from sandbox_core.json_batches import BATCH_ITEMS
    from sandbox_transport_http.server import BatchedJSONResponse, json_response

    entry = {"name": "f", "absolutePath": "/t/f", "relativePath": "f", "type": "file", "size": 1}
    entry |= {"modifiedAt": "2026-01-01T00:00:00.000000Z", "mode": "rw-r--r--"}
    entry["permissions"] = {"readable": True, "writable": True, "executable": False}
    files = [msgspec.convert({**entry, "name": f"f{i}"}, FileInfo) for i in range(2 * BATCH_ITEMS + 7)]
    result = ListFilesResult(success=True, path="/t", files=files, count=len(files), timestamp="now")
    response = json_response(result)
    assert isinstance(response, BatchedJSONResponse)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response({}, None, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert body == msgspec.json.encode(result)
    assert len(sent) == 1 + 1 + 3 + 1 + 1  # start, head, three batches, tail, end of body
    assert [m.get("more_body", False) for m in sent[1:]] == [True] * 5 + [False]
    small = ListFilesResult(success=True, path="/t", files=files[:3], count=3, timestamp="now")
    assert not isinstance(json_response(small), BatchedJSONResponse)


async def test_an_early_answer_reaches_a_client_still_sending_its_body(sandbox_server_factory: ServerFactory) -> None:
    """httpx sends the whole body before it reads: without a lingering close, the unread body
    made the server's close reset the connection, and the client saw a read error, not the 413."""
    limit = 1024 * 1024
    server = sandbox_server_factory(
        config={"transports": {"http": {"max_body_bytes": limit, "max_body_bytes_total": 2 * limit}}}
    )
    body = b'{"path":"/tmp/too-big","content":"' + b"a" * (16 * limit) + b'"}'
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        refused = await http.post("/api/write", content=body, headers={"Content-Type": "application/json"})
        assert_error(refused, 413, "VALIDATION_FAILED")
        assert (await http.get("/api/ping")).status_code == 200  # a new connection, served as usual


async def test_an_answer_given_without_reading_the_body_closes_the_connection(http: httpx.AsyncClient) -> None:
    """A refusal does not read the request's body, so that connection cannot serve another
    request: it says so, and a client does not reuse it (reusing it raced its close)."""
    refused = await http.post("/api/execute", json={"command": "true"}, headers={"Host": "attacker.example:3000"})
    assert refused.status_code == 403 and refused.headers["connection"] == "close"
    bodiless = await http.get("/api/nowhere", headers={"Host": "attacker.example:3000"})
    assert bodiless.status_code == 403 and "connection" not in bodiless.headers
    for _ in range(20):  # the same client goes on working on fresh connections
        refused = await http.post("/api/execute", json={"command": "true"}, headers={"Host": "evil.example"})
        assert refused.status_code == 403
        assert (await http.post("/api/execute", json={"command": "true"})).status_code == 200


async def test_a_route_answer_without_reading_the_body_closes_the_connection(http: httpx.AsyncClient) -> None:
    """The same for the http transport's own early answers (a 405 on a known path, a 404)."""
    wrong_method = await http.post("/api/interpreter/health", content=b"\n")
    assert wrong_method.status_code == 405 and wrong_method.headers["connection"] == "close"
    read = await http.post("/api/execute", json={"command": "true"})
    assert read.status_code == 200 and "connection" not in read.headers
    for _ in range(20):  # the same client goes on working on fresh connections
        assert (await http.post("/api/ping", content=b"x")).status_code == 405
        assert (await http.get("/api/ping")).status_code == 200
