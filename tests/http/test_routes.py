"""The http transport's wire: paths, envelopes, SSE framing, errors, CORS, bad input."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_core.testing import ServerProcess, assert_error


def sid() -> str:
    return f"h-{uuid.uuid4().hex[:10]}"


async def test_execute_envelope(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/execute", json={"command": "echo hi"})
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("success", "exitCode", "stdout", "stderr", "command")} == {
        "success": True,
        "exitCode": 0,
        "stdout": "hi",
        "stderr": "",
        "command": "echo hi",
    }
    assert "sessionId" not in body  # omitted when the request named none
    assert body["timestamp"].endswith("Z") and isinstance(body["duration"], (int, float))
    s = sid()
    with_session = (await http.post("/api/execute", json={"command": "true", "sessionId": s})).json()
    assert with_session["sessionId"] == s


@pytest.mark.parametrize("how", ["bearer", "header", "query-session", "query-sessionId"])
async def test_session_id_from_headers_and_query(http: httpx.AsyncClient, how: str) -> None:
    s = sid()
    await http.post("/api/execute", json={"command": "export FROM_HEADER=1", "sessionId": s})
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if how == "bearer":
        headers["Authorization"] = f"Bearer {s}"
    elif how == "header":
        headers["X-Session-Id"] = s
    else:
        params[how.split("-")[1]] = s
    response = await http.post(
        "/api/execute", json={"command": "echo ${FROM_HEADER:-no}"}, headers=headers, params=params
    )
    assert response.json()["stdout"] == "1"


async def test_sse_framing(http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/api/execute/stream", json={"command": "echo a; exit 3", "sessionId": sid()}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = (await r.aread()).decode()
    frames = [f for f in raw.split("\n\n") if f]
    assert all(f.startswith("data: ") and "\n" not in f for f in frames)
    events = [json.loads(f[len("data: ") :]) for f in frames]
    assert [e["type"] for e in events] == ["start", "stdout", "complete"]
    assert events[0]["command"] == "echo a; exit 3" and isinstance(events[0]["pid"], int)
    assert events[1]["data"] == "a\n"
    assert events[2]["exitCode"] == 3
    assert all(e["timestamp"].endswith("Z") for e in events)


async def test_stream_start_failure_is_json(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/execute/stream", json={"command": " "})
    assert_error(response, 400, "INVALID_COMMAND")


async def test_bad_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/execute", content=b"{bad", headers={"content-type": "application/json"})
    assert_error(response, 400, "VALIDATION_FAILED")


@pytest.mark.parametrize(
    "body,field",
    [
        ({"command": 1}, "command"),
        ({}, "command"),
        ({"command": "x", "timeoutMs": "5"}, "timeoutMs"),
        ({"command": "x", "timeoutMs": 0}, "timeoutMs"),
        ({"command": "x", "env": {"A": 1}}, "env[...]"),
        ({"command": "x", "env": {"1BAD": "v"}}, "env.1BAD"),
        ({"command": "x", "cwd": ["/"]}, "cwd"),
    ],
)
async def test_wrong_field_is_named(http: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    response = await http.post("/api/execute", json=body)
    error = assert_error(response, 400, "VALIDATION_FAILED")
    assert error["context"]["field"] == field


async def test_non_object_body(http: httpx.AsyncClient) -> None:
    assert_error(await http.post("/api/execute", json=[1, 2]), 400, "VALIDATION_FAILED")
    assert_error(await http.post("/api/execute", json="echo"), 400, "VALIDATION_FAILED")


async def test_unknown_route_and_method(http: httpx.AsyncClient) -> None:
    body = assert_error(await http.get("/api/does-not-exist"), 404, "UNKNOWN_ERROR")
    assert body["message"] == "The requested endpoint was not found"
    assert_error(await http.post("/api/nosuchservice/op", json={}), 404, "UNKNOWN_ERROR")
    assert_error(await http.post("/api/utils/nosuchop", json={}), 404, "UNKNOWN_ERROR")
    assert_error(await http.request("PATCH", "/api/execute", json={}), 405, "METHOD_NOT_ALLOWED")
    assert_error(await http.get("/api/execute"), 405, "METHOD_NOT_ALLOWED")


async def test_cors_headers_once_and_preflight(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/execute", json={"command": "true"})
    assert response.headers.get_list("access-control-allow-origin") == ["*"]
    preflight = await http.options("/api/execute", headers={"Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers.get_list("access-control-allow-origin") == ["*"]
    assert "POST" in preflight.headers["access-control-allow-methods"]
    error = await http.get("/api/nope")
    assert error.headers.get_list("access-control-allow-origin") == ["*"]


async def test_session_routes(http: httpx.AsyncClient) -> None:
    s = sid()
    created = await http.post("/api/session/create", json={"id": s, "cwd": "/tmp"})
    assert created.status_code == 200
    body = created.json()
    assert (body["success"], body["id"], body["message"]) == (True, s, f"Session {s} created")
    assert (body["data"]["id"], body["data"]["cwd"]) == (s, "/tmp")
    # the SDK's optional containerPlacementId (null or absent without CLOUDFLARE_PLACEMENT_ID): none here
    assert body.get("containerPlacementId") is None
    assert body["timestamp"].endswith("Z")
    duplicate = assert_error(await http.post("/api/session/create", json={"id": s}), 409, "SESSION_ALREADY_EXISTS")
    assert duplicate["context"]["sessionId"] == s
    listed = (await http.get("/api/session/list")).json()
    assert listed["success"] is True and s in listed["data"]
    deleted = (await http.post("/api/session/delete", json={"sessionId": s})).json()
    assert set(deleted) == {"success", "sessionId", "timestamp"}
    assert (deleted["success"], deleted["sessionId"]) == (True, s) and deleted["timestamp"].endswith("Z")
    assert_error(await http.post("/api/session/delete", json={"sessionId": s}), 404, "SESSION_NOT_FOUND")
    assert_error(await http.post("/api/session/delete", json={}), 400, "VALIDATION_FAILED")


async def test_terminated_session_error_body(http: httpx.AsyncClient) -> None:
    s = sid()
    body = assert_error(
        await http.post("/api/execute", json={"command": "exit 4", "sessionId": s}), 410, "SESSION_TERMINATED"
    )
    assert body["context"] == {"sessionId": s, "exitCode": 4}


async def test_ping_version_root(http: httpx.AsyncClient) -> None:
    ping = (await http.get("/api/ping")).json()
    assert ping["success"] is True and ping["status"] == "healthy"
    version = (await http.get("/api/version")).json()
    assert version["success"] is True and isinstance(version["version"], str)
    assert (await http.get("/")).status_code == 200


async def test_generic_route(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/commands/execute", json={"command": "echo generic", "sessionId": sid()})
    body = response.json()
    assert body["success"] is True and body["result"]["stdout"] == "generic"
    bad = await http.post("/api/commands/execute", json={"command": 5})
    assert_error(bad, 400, "VALIDATION_FAILED")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["command", "sessionId", "timeoutMs", "env", "cwd", "origin", "id", "commandTimeoutMs"])
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(fields, json_values, max_size=5).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(
        [
            "/api/execute",
            "/api/session/create",
            "/api/session/delete",
            "/api/execute/stream",
            "/api/commands/execute",
            "/api/sessions/create",
        ]
    ),
    body=bodies,
)
def test_arbitrary_bodies_never_500(sandbox_server: ServerProcess, path: str, body: bytes) -> None:
    # Random text is never run as a command (the server runs as root): a string "command" becomes a
    # harmless one, keeping blank ones to exercise the empty-command path; a timeout bounds it.
    with httpx.Client(base_url=sandbox_server.url, timeout=30) as client:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if isinstance(data.get("command"), str) and data["command"].strip():
                data["command"] = "echo fuzz"
            data.setdefault("timeoutMs", 2000)
            if "sessionId" not in data or not isinstance(data["sessionId"], str):
                data["sessionId"] = data.get("sessionId", sid())
            body = json.dumps(data).encode()
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code < 500 or response.json()["code"] in ("COMMAND_EXECUTION_ERROR",), response.text
        assert "Traceback" not in response.text
        if response.status_code >= 400:
            error = response.json()
            assert error["code"] and error["message"]
        assert client.get("/api/ping").status_code == 200


def test_silent_stream_gets_keep_alive_comments(sandbox_server_factory: Any) -> None:
    server = sandbox_server_factory(config={"transports": {"http": {"sse_heartbeat_s": 0.1}}})
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/api/execute/stream", json={"command": "sleep 0.5; echo done"}) as response,
    ):
        raw = response.read().decode()
    assert ": keep-alive\n\n" in raw
    assert raw.rstrip().endswith('"exitCode":0}')


async def test_client_disconnect_mid_stream_leaves_server_healthy(http: httpx.AsyncClient) -> None:
    for _ in range(3):
        async with http.stream("POST", "/api/execute/stream", json={"command": "yes | head -c 50000000"}) as response:
            async for _chunk in response.aiter_raw():
                break
    assert (await http.post("/api/execute", json={"command": "echo ok"})).json()["stdout"] == "ok"


def test_body_over_the_limit_is_413(sandbox_server_factory: Any) -> None:
    server = sandbox_server_factory(config={"transports": {"http": {"max_body_bytes": 1000}}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/api/execute", json={"command": "echo " + "x" * 2000})
        assert response.status_code == 413 and response.json()["context"]["limit"] == 1000
        assert client.post("/api/execute", json={"command": "echo small"}).json()["stdout"] == "small"
