"""The watch service behind the real server: the wire shapes over http (SSE) and rpc (SSE bytes in
a ReadableStream), errors in the contract's shape, confinement over rpc too (upstream skips it
there), a client that goes away, and version tokens across a server restart.

The test process and the server share the machine, so files are changed directly in the
server's workspace.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from helpers_watch import SAFETY_S, touch

from capnweb import ReadableStream, RpcError, RpcStub, WebSocketClient
from sandbox_core.testing import ServerProcess, assert_error
from sandbox_core.testing.plugin import TEST_CONFIG


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess(config=TEST_CONFIG).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=SAFETY_S) as client:
        yield client


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[RpcStub]:
    client = WebSocketClient(server.ws_url + "/rpc")
    main = await client.connect()
    try:
        yield main
    finally:
        main.dispose()
        await client.aclose()


@pytest.fixture
def tree(server: ServerProcess) -> str:
    """A fresh directory in the server's workspace (its name, relative to the workspace)."""
    name = f"w-{uuid.uuid4().hex[:10]}"
    os.mkdir(os.path.join(server.workspace, name))
    return name


async def active(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.post("/api/watch/list", json={})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and "result" not in body  # the list itself, not wrapped twice
    watches: list[dict[str, Any]] = body["watches"]
    return watches


async def gone(http: httpx.AsyncClient, watch_id: str) -> None:
    async def poll() -> None:
        while True:
            if all(w["id"] != watch_id for w in await active(http)):
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), SAFETY_S)


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    async for line in lines:
        assert not line.startswith("event:"), line  # http streams send no event lines
        if line.startswith("data: "):
            yield json.loads(line[6:])


async def test_http_stream_shape_and_client_leaving(server: ServerProcess, http: httpx.AsyncClient, tree: str) -> None:
    root = os.path.join(server.workspace, tree)
    async with http.stream("POST", "/api/watch", json={"path": tree}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.aiter_lines())
        first = await asyncio.wait_for(anext(events), SAFETY_S)
        assert first.keys() == {"type", "path", "watchId"} and (first["type"], first["path"]) == ("watching", root)
        touch(os.path.join(root, "a.txt"), "x")
        event = await asyncio.wait_for(anext(events), SAFETY_S)
        assert event.keys() == {"type", "eventType", "path", "isDirectory", "timestamp"}
        assert (event["type"], event["eventType"], event["path"], event["isDirectory"]) == (
            "event",
            "create",
            f"{root}/a.txt",
            False,
        )
        assert [w["subscribers"] for w in await active(http) if w["id"] == first["watchId"]] == [1]
    await gone(http, first["watchId"])  # the client closed its response: the watch ended


async def test_http_errors_in_the_contract_shape(server: ServerProcess, http: httpx.AsyncClient, tree: str) -> None:
    root = os.path.join(server.workspace, tree)
    os.symlink("/", os.path.join(root, "escape"))
    touch(os.path.join(root, "file"))
    cases = [
        ({"path": "/"}, 403, "PERMISSION_DENIED"),
        ({"path": "../.."}, 403, "PERMISSION_DENIED"),
        ({"path": f"{tree}/escape"}, 403, "PERMISSION_DENIED"),
        ({"path": f"{tree}/missing"}, 404, "FILE_NOT_FOUND"),
        ({"path": f"{tree}/file"}, 400, "NOT_DIRECTORY"),
        ({"path": tree, "include": ["*.{js,ts}"]}, 400, "VALIDATION_FAILED"),
        ({"path": tree, "include": ["a"], "exclude": ["b"]}, 400, "VALIDATION_FAILED"),
        ({"path": tree, "events": ["open"]}, 400, "VALIDATION_FAILED"),
        ({"path": tree, "recursive": "yes"}, 400, "VALIDATION_FAILED"),
        ({}, 400, "VALIDATION_FAILED"),
    ]
    for route in ("/api/watch", "/api/watch/check"):
        for body, status, code in cases:
            response = await http.post(route, json=body)
            assert_error(response, status, code)
        assert_error(await http.post(route, content=b"{not json"), 400, "VALIDATION_FAILED")
    body = assert_error(
        await http.post("/api/watch/check", json={"path": tree, "since": "junk"}), 400, "VALIDATION_FAILED"
    )
    assert body["context"]["field"] == "since"
    ok = (await http.post("/api/watch/check", json={"path": tree})).json()
    assert ok.keys() == {"success", "status", "version", "timestamp"} and ok["status"] == "unchanged"
    resync = (await http.post("/api/watch/check", json={"path": tree, "since": "watch-9-elsewhere:1"})).json()
    assert (resync["status"], resync["reason"]) == ("resync", "restarted")


async def test_rpc_confines_and_streams_sse_bytes(
    server: ServerProcess, api: RpcStub, http: httpx.AsyncClient, tree: str
) -> None:
    root = os.path.join(server.workspace, tree)
    for request in ({"path": "/"}, {"path": "/etc"}, {"path": "../"}):
        with pytest.raises(RpcError) as info:
            await asyncio.wait_for(api.watch.watch(request), SAFETY_S)
        assert info.value.props["code"] == "PERMISSION_DENIED", info.value
    with pytest.raises(RpcError) as info:
        await asyncio.wait_for(api.watch.checkChanges({"path": "/"}), SAFETY_S)
    assert info.value.props["code"] == "PERMISSION_DENIED"
    with pytest.raises(RpcError) as info:
        await asyncio.wait_for(api.watch.checkChanges({"path": tree, "since": "x"}), SAFETY_S)
    assert info.value.props["code"] == "VALIDATION_FAILED"
    checked = await asyncio.wait_for(api.watch.checkChanges({"path": tree, "events": ["create"]}), SAFETY_S)
    assert checked["status"] == "unchanged"

    stream = await asyncio.wait_for(api.watch.watch({"path": tree, "events": ["create"]}), SAFETY_S)
    assert isinstance(stream, ReadableStream)
    chunks = stream.__aiter__()
    first = await asyncio.wait_for(anext(chunks), SAFETY_S)
    assert first.startswith(b'data: {"type":"watching"') and first.endswith(b"\n\n"), first
    watch_id = json.loads(first[6:])["watchId"]
    assert checked["version"].startswith(watch_id + ":")  # the same options: one watcher
    touch(os.path.join(root, "n"))
    chunk = b""
    while b'"create"' not in chunk:
        chunk = await asyncio.wait_for(anext(chunks), SAFETY_S)  # skips heartbeats, if any
    assert json.loads(chunk[6:])["path"] == f"{root}/n"
    await stream.aclose()  # the reader cancels: the subscription ends (the check retains the watch)

    async def unsubscribed() -> None:
        while True:
            if [w["subscribers"] for w in await active(http) if w["id"] == watch_id] == [0]:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(unsubscribed(), SAFETY_S)


async def test_tokens_after_a_restart_ask_for_a_resync(tmp_path: Any) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    tokens = []
    for _ in range(2):
        with ServerProcess(config=TEST_CONFIG, workspace=workspace, transports=["http"]) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=SAFETY_S) as http:
                body = {"path": ".", **({"since": tokens[-1]} if tokens else {})}
                result = (await http.post("/api/watch/check", json=body)).json()
        tokens.append(result["version"])
    assert (result["status"], result["reason"]) == ("resync", "restarted")
    assert tokens[0] != tokens[1]
