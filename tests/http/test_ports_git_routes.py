"""The http wire of port-watch (SSE) and git checkout: exact frames, envelopes and error bodies."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from sandbox_core.contract.conformance.ports import Listener, free_port, within
from sandbox_core.testing import ServerProcess, assert_error
from sandbox_core.testing.plugin import TEST_CONFIG


def sid() -> str:
    return f"h-{uuid.uuid4().hex[:10]}"


class SSE:
    """Reads an SSE response frame by frame, checking the framing of each."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.raw: list[str] = []

    async def next(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            frame: list[str] = []
            async for line in self.lines:
                if line == "":
                    if frame:
                        break
                    continue
                if line.startswith(":"):
                    continue  # keep-alive comment
                frame.append(line)
            assert len(frame) == 1 and frame[0].startswith("data: "), frame
            self.raw.append(frame[0])
            return json.loads(frame[0][len("data: ") :])  # type: ignore[no-any-return]

        return await within(read())


async def read_all(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    async with http.stream("POST", "/api/port-watch", json=body) as response:
        raw = (await within(response.aread())).decode()
    return response, [f for f in raw.split("\n\n") if f]


# ---- port-watch -------------------------------------------------------------------------------------


async def test_port_watch_tcp_frames(http: httpx.AsyncClient) -> None:
    async with Listener("close") as listener:
        response, frames = await read_all(http, {"port": listener.port, "mode": "tcp"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers.get_list("access-control-allow-origin") == ["*"]
    p = listener.port
    assert frames == [f'data: {{"type":"watching","port":{p}}}', f'data: {{"type":"ready","port":{p}}}']


async def test_port_watch_http_frames(http: httpx.AsyncClient) -> None:
    async with Listener(200) as listener:
        _, frames = await read_all(
            http,
            {"port": listener.port, "mode": "http", "path": "/up", "statusMin": 200, "statusMax": 299, "interval": 100},
        )
    p = listener.port
    assert frames == [
        f'data: {{"type":"watching","port":{p}}}',
        f'data: {{"type":"ready","port":{p},"statusCode":200}}',
    ]
    assert listener.requests == ["GET /up HTTP/1.1"]


async def test_port_watch_unknown_process_frames(http: httpx.AsyncClient) -> None:
    port = free_port()
    _, frames = await read_all(http, {"port": port, "mode": "tcp", "processId": "no-such-process"})
    assert frames == [
        f'data: {{"type":"watching","port":{port}}}',
        f'data: {{"type":"error","port":{port},"error":"Process not found"}}',
    ]


async def test_port_watch_process_exited(http: httpx.AsyncClient) -> None:
    port = free_port()
    name = f"pw-{uuid.uuid4().hex[:10]}"
    flag = f"/tmp/http-portwatch-{uuid.uuid4().hex}"
    started = await http.post(
        "/api/process/start",
        json={"command": f"while [ ! -e {flag} ]; do sleep 0.01; done; rm -f {flag}; exit 3", "processId": name},
    )
    assert started.status_code == 200, started.text
    assert started.json()["processId"] == name
    async with http.stream("POST", "/api/port-watch", json={"port": port, "mode": "tcp", "processId": name}) as r:
        sse = SSE(r)
        assert await sse.next() == {"type": "watching", "port": port}
        touched = await http.post("/api/execute", json={"command": f"touch {flag}", "sessionId": sid()})
        assert touched.json()["exitCode"] == 0
        assert await sse.next() == {"type": "process_exited", "port": port, "exitCode": 3}
        assert [line async for line in sse.lines if line] == []  # and the stream ends


async def test_port_watch_status_change(http: httpx.AsyncClient) -> None:
    async with (
        Listener(500) as listener,
        http.stream("POST", "/api/port-watch", json={"port": listener.port, "mode": "http", "interval": 100}) as r,
    ):
        sse = SSE(r)
        assert (await sse.next())["type"] == "watching"
        await listener.wait_hits(2)
        listener.answer = 200
        assert await sse.next() == {"type": "ready", "port": listener.port, "statusCode": 200}


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"port": 70000, "mode": "tcp"}, 400, "INVALID_PORT_NUMBER", "port"),
        ({"port": 0, "mode": "http"}, 400, "INVALID_PORT_NUMBER", "port"),
        ({"mode": "tcp"}, 400, "VALIDATION_FAILED", "port"),
        ({"port": "8080", "mode": "tcp"}, 400, "VALIDATION_FAILED", "port"),
        ({"port": 8080}, 400, "VALIDATION_FAILED", "mode"),
        ({"port": 8080, "mode": "udp"}, 400, "VALIDATION_FAILED", "mode"),
        ({"port": 8080, "mode": "http", "interval": "fast"}, 400, "VALIDATION_FAILED", "interval"),
        ({"port": 8080, "mode": "http", "statusMin": 2.5}, 400, "VALIDATION_FAILED", "statusMin"),
    ],
)
async def test_port_watch_bad_requests(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    response = await http.post("/api/port-watch", json=body)
    error = assert_error(response, status, code)
    assert error["context"]["field"] == field


async def test_port_watch_probe_timeout_is_configurable(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    config = {**TEST_CONFIG, "services": {**TEST_CONFIG["services"], "ports": {"probe_timeout_ms": 200}}}
    server = sandbox_server_factory(config=config)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=60) as client,
        Listener("stall") as listener,
        client.stream("POST", "/api/port-watch", json={"port": listener.port, "mode": "http", "interval": 100}) as r,
    ):
        sse = SSE(r)
        assert (await sse.next())["type"] == "watching"
        await listener.wait_hits(2)  # the first probe gave up on the silent server and polled again
        listener.answer = 204
        assert await sse.next() == {"type": "ready", "port": listener.port, "statusCode": 204}


# ---- git ----------------------------------------------------------------------------------------------


async def sh(http: httpx.AsyncClient, command: str, session_id: str | None = None) -> str:
    response = await http.post(
        "/api/execute",
        json={
            "command": command,
            "sessionId": session_id or sid(),
            "env": {
                "GIT_AUTHOR_NAME": "t",
                "GIT_AUTHOR_EMAIL": "t@e",
                "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@e",
            },
        },
    )
    body = response.json()
    assert body["exitCode"] == 0, body
    return str(body["stdout"])


@pytest.fixture
async def repo(http: httpx.AsyncClient) -> AsyncIterator[str]:
    root = await sh(http, "mktemp -d /tmp/http-git-XXXXXXXX")
    await sh(
        http,
        f"cd {root} && git init -q src && cd src && git symbolic-ref HEAD refs/heads/trunk"
        " && touch f && git add f && git commit -q -m one",
    )
    yield root
    await sh(http, f"rm -rf {root}")


async def test_git_checkout_envelope(http: httpx.AsyncClient, repo: str) -> None:
    response = await http.post(
        "/api/git/checkout",
        json={"repoUrl": f"{repo}/src", "targetDir": f"{repo}/out", "depth": 1, "timeoutMs": 60_000},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "repoUrl", "branch", "targetDir", "timestamp"}
    assert (body["success"], body["repoUrl"], body["branch"], body["targetDir"]) == (
        True,
        f"{repo}/src",
        "trunk",
        f"{repo}/out",
    )


@pytest.mark.parametrize("how", ["body", "header", "bearer", "query"])
async def test_git_checkout_session_from_headers(http: httpx.AsyncClient, repo: str, how: str) -> None:
    s = sid()
    await sh(http, f"mkdir -p {repo}/cwd-{how} && cd {repo}/cwd-{how}", session_id=s)
    body: dict[str, Any] = {"repoUrl": f"{repo}/src", "targetDir": "clone"}
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if how == "body":
        body["sessionId"] = s
    elif how == "header":
        headers["X-Session-Id"] = s
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {s}"
    else:
        params["sessionId"] = s
    response = await http.post("/api/git/checkout", json=body, headers=headers, params=params)
    assert response.status_code == 200, response.text
    assert response.json()["targetDir"] == f"{repo}/cwd-{how}/clone"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "repoUrl"),
        ({"repoUrl": 5}, "repoUrl"),
        ({"repoUrl": "/x", "timeoutMs": 0}, "timeoutMs"),
        ({"repoUrl": "/x", "timeoutMs": -1}, "timeoutMs"),
        ({"repoUrl": "/x", "timeoutMs": 1.5}, "timeoutMs"),
        ({"repoUrl": "/x", "timeoutMs": "soon"}, "timeoutMs"),
        ({"repoUrl": "/x", "depth": 0}, "depth"),
        ({"repoUrl": "/x", "targetDir": "a\u0000b"}, "targetDir"),
        ({"repoUrl": "/x", "branch": 3}, "branch"),
    ],
)
async def test_git_checkout_validation(http: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    error = assert_error(await http.post("/api/git/checkout", json=body), 400, "VALIDATION_FAILED")
    assert error["context"]["field"] == field


@pytest.mark.parametrize("url", ["", "-c", "x" * 2049, "a\u0000b"])
async def test_git_checkout_invalid_url(http: httpx.AsyncClient, url: str) -> None:
    error = assert_error(await http.post("/api/git/checkout", json={"repoUrl": url}), 400, "INVALID_GIT_URL")
    assert error["context"]["field"] == "repoUrl"


async def test_git_error_bodies(http: httpx.AsyncClient, repo: str) -> None:
    missing = assert_error(
        await http.post("/api/git/checkout", json={"repoUrl": f"{repo}/missing", "targetDir": f"{repo}/o1"}),
        404,
        "GIT_REPOSITORY_NOT_FOUND",
    )
    assert missing["context"]["exitCode"] == 128 and missing["context"]["targetDir"] == f"{repo}/o1"
    assert missing["operation"] == "git.checkout"
    async with Listener(404, body=b"Repository not found.\n") as host:
        assert_error(
            await http.post(
                "/api/git/checkout", json={"repoUrl": f"http://127.0.0.1:{host.port}/x.git", "targetDir": f"{repo}/o2"}
            ),
            404,
            "GIT_REPOSITORY_NOT_FOUND",
        )
    async with Listener("stall") as host:
        slow = assert_error(
            await http.post(
                "/api/git/checkout",
                json={"repoUrl": f"http://127.0.0.1:{host.port}/x.git", "targetDir": f"{repo}/o3", "timeoutMs": 300},
            ),
            502,
            "GIT_NETWORK_ERROR",
        )
    assert slow["context"]["timeoutMs"] == 300


@pytest.mark.parametrize("answer", [401, 404, "stall"])
async def test_git_credentials_never_leave_the_server(
    http: httpx.AsyncClient, sandbox_server: ServerProcess, answer: Any
) -> None:
    secret = f"hunter{uuid.uuid4().hex}"
    async with Listener(answer, body=b"Repository not found.\n") as host:
        url = (
            f"https://bob:{secret}@127.0.0.1:{host.port}/p.git"
            if answer == "stall"
            else f"http://bob:{secret}@127.0.0.1:{host.port}/p.git"
        )
        response = await http.post(
            "/api/git/checkout",
            json={"repoUrl": url, "targetDir": f"/tmp/http-git-{uuid.uuid4().hex}", "timeoutMs": 500},
        )
    assert response.status_code >= 400
    assert secret not in response.text and "******@127.0.0.1" in response.text
    await http.get("/api/ping")  # the log lines of the call above are written by now
    assert not [line for line in sandbox_server.log if secret in line]
    assert any(f"******@127.0.0.1:{host.port}" in line for line in sandbox_server.log)  # it was logged, redacted
