"""The files routes on the wire: bodies, result shapes, SSE framing of the read stream, errors."""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from sandbox_core.testing import assert_error


@pytest.fixture
def scratch() -> Iterator[str]:
    """A fresh directory (the server runs on this host)."""
    path = f"/tmp/http-files-{uuid.uuid4().hex}"
    os.makedirs(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    frames = [f for f in raw.decode().split("\n\n") if f]
    assert all(f.startswith("data: ") and "\n" not in f for f in frames), frames[:3]
    return [json.loads(f[len("data: ") :]) for f in frames]


async def test_write_and_read_shapes(http: httpx.AsyncClient, scratch: str) -> None:
    path = f"{scratch}/hello.txt"
    written = (await http.post("/api/write", json={"path": path, "content": "héllo"})).json()
    assert set(written) == {"success", "path", "timestamp", "bytesWritten"}
    assert (written["success"], written["path"], written["bytesWritten"]) == (True, path, 6)
    read = await http.post("/api/read", json={"path": path})
    assert read.status_code == 200
    body = read.json()
    assert set(body) == {"success", "path", "content", "timestamp", "encoding", "isBinary", "mimeType", "size"}
    assert {k: body[k] for k in ("success", "path", "content", "encoding", "isBinary", "mimeType", "size")} == {
        "success": True,
        "path": path,
        "content": "héllo",
        "encoding": "utf-8",
        "isBinary": False,
        "mimeType": "text/plain",
        "size": 6,
    }

    data = bytes(range(256))
    await http.post(
        "/api/write",
        json={"path": f"{scratch}/b.png", "content": base64.b64encode(data).decode(), "encoding": "base64"},
    )
    binary = (await http.post("/api/read", json={"path": f"{scratch}/b.png"})).json()
    assert (binary["encoding"], binary["isBinary"], binary["mimeType"], binary["size"]) == (
        "base64",
        True,
        "image/png",
        256,
    )
    assert base64.b64decode(binary["content"]) == data
    as_text = (await http.post("/api/read", json={"path": path, "encoding": "utf8"})).json()
    assert (as_text["encoding"], as_text["content"]) == ("utf-8", "héllo")


async def test_other_route_shapes(http: httpx.AsyncClient, scratch: str) -> None:
    made = (await http.post("/api/mkdir", json={"path": f"{scratch}/d"})).json()
    assert set(made) == {"success", "path", "recursive", "timestamp"} and made["recursive"] is False
    deep = (await http.post("/api/mkdir", json={"path": f"{scratch}/x/y", "recursive": True})).json()
    assert deep["recursive"] is True
    await http.post("/api/write", json={"path": f"{scratch}/a.txt", "content": "a"})

    exists = (await http.post("/api/exists", json={"path": f"{scratch}/a.txt"})).json()
    assert set(exists) == {"success", "path", "exists", "timestamp"} and exists["exists"] is True
    assert (await http.post("/api/exists", json={"path": f"{scratch}/zz"})).json()["exists"] is False

    renamed = (
        await http.post("/api/rename", json={"oldPath": f"{scratch}/a.txt", "newPath": f"{scratch}/b.txt"})
    ).json()
    assert renamed == {
        "success": True,
        "path": f"{scratch}/a.txt",
        "newPath": f"{scratch}/b.txt",
        "oldPath": f"{scratch}/a.txt",
        "timestamp": renamed["timestamp"],
    }
    moved = (
        await http.post("/api/move", json={"sourcePath": f"{scratch}/b.txt", "destinationPath": f"{scratch}/d"})
    ).json()
    assert moved == {
        "success": True,
        "path": f"{scratch}/b.txt",
        "newPath": f"{scratch}/d",
        "timestamp": moved["timestamp"],
    }
    assert await anyio.Path(f"{scratch}/d/b.txt").is_file()

    listing = (await http.post("/api/list-files", json={"path": scratch, "options": {}})).json()
    assert set(listing) == {"success", "path", "files", "count", "timestamp"}
    assert listing["count"] == 2 and [f["name"] for f in listing["files"]] == ["d", "x"]
    entry = listing["files"][0]
    assert set(entry) == {"name", "absolutePath", "relativePath", "type", "size", "modifiedAt", "mode", "permissions"}
    assert (entry["absolutePath"], entry["relativePath"], entry["type"]) == (f"{scratch}/d", "d", "directory")
    assert entry["modifiedAt"].endswith("Z") and set(entry["permissions"]) == {"readable", "writable", "executable"}
    tree = (await http.post("/api/list-files", json={"path": scratch, "options": {"recursive": True}})).json()
    assert [f["relativePath"] for f in tree["files"]] == ["d", "d/b.txt", "x", "x/y"]
    no_options = (await http.post("/api/list-files", json={"path": scratch})).json()
    assert no_options["count"] == 2

    deleted = (await http.post("/api/delete", json={"path": f"{scratch}/d/b.txt"})).json()
    assert deleted == {"success": True, "path": f"{scratch}/d/b.txt", "timestamp": deleted["timestamp"]}


async def test_session_id_comes_from_the_body_only(http: httpx.AsyncClient, scratch: str) -> None:
    s = f"files-{uuid.uuid4().hex[:8]}"
    await http.post("/api/execute", json={"command": f"cd {scratch}", "sessionId": s})
    name = f"rel-{uuid.uuid4().hex}.txt"
    await http.post("/api/write", json={"path": name, "content": "in body session", "sessionId": s})
    assert await anyio.Path(f"{scratch}/{name}").is_file()
    # the contract's file handlers ignore X-Session-Id / Authorization / ?session=
    headers = {"X-Session-Id": s, "Authorization": f"Bearer {s}"}
    found = await http.post("/api/exists", json={"path": name}, headers=headers, params={"session": s})
    assert found.json()["exists"] is False
    assert (await http.post("/api/exists", json={"path": name, "sessionId": s})).json()["exists"] is True


async def test_read_stream_framing_text(http: httpx.AsyncClient, scratch: str) -> None:
    path = f"{scratch}/lines.txt"
    await anyio.Path(path).write_text("line1\nline2\n")
    async with http.stream("POST", "/api/read/stream", json={"path": path}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers.get_list("access-control-allow-origin") == ["*"]
        events = sse_events(await response.aread())
    assert events == [
        {"type": "metadata", "mimeType": "text/plain", "size": 12, "isBinary": False, "encoding": "utf-8"},
        {"type": "chunk", "data": "line1\nline2\n"},
        {"type": "complete", "bytesRead": 12},
    ]


async def test_ranged_and_tail_reads_on_the_wire(http: httpx.AsyncClient, scratch: str) -> None:
    """Ours: ``offset``/``length``/``tailLines`` in the body; a ranged answer adds ``offset``,
    ``length`` and ``totalSize`` (a whole read keeps the contract's keys, see above)."""
    path = f"{scratch}/lines.txt"
    await anyio.Path(path).write_text("line1\nline2\nline3\n")
    body = (await http.post("/api/read", json={"path": path, "offset": -6, "length": 5})).json()
    assert {k: body[k] for k in ("content", "offset", "length", "totalSize", "size")} == {
        "content": "line3",
        "offset": 12,
        "length": 5,
        "totalSize": 18,
        "size": 5,
    }
    async with http.stream("POST", "/api/read/stream", json={"path": path, "tailLines": 2}) as response:
        assert response.status_code == 200
        events = sse_events(await response.aread())
    assert events == [
        {
            "type": "metadata",
            "mimeType": "text/plain",
            "size": 18,
            "isBinary": False,
            "encoding": "utf-8",
            "offset": 6,
            "length": 12,
            "totalSize": 18,
        },
        {"type": "chunk", "data": "line2\nline3\n"},
        {"type": "complete", "bytesRead": 12},
    ]
    for route in ("/api/read", "/api/read/stream"):  # refused before any event: a 400, not in-band
        error = assert_error(await http.post(route, json={"path": path, "offset": 19}), 400, "VALIDATION_FAILED")
        assert (error["context"]["field"], error["context"]["totalSize"]) == ("offset", 18)


async def test_read_stream_binary_chunk_sizes(http: httpx.AsyncClient, scratch: str) -> None:
    data = os.urandom(150_000)
    path = f"{scratch}/blob.bin"
    await anyio.Path(path).write_bytes(data)
    async with http.stream("POST", "/api/read/stream", json={"path": path}) as response:
        events = sse_events(await response.aread())
    assert events[0] == {
        "type": "metadata",
        "mimeType": "application/octet-stream",
        "size": 150_000,
        "isBinary": True,
        "encoding": "base64",
    }
    chunks = [e["data"] for e in events[1:-1]]
    assert [len(c) for c in chunks] == [87380, 87380, 25240]
    assert all(e["type"] == "chunk" for e in events[1:-1])
    assert b"".join(base64.b64decode(c) for c in chunks) == data
    assert events[-1] == {"type": "complete", "bytesRead": 150_000}


async def test_read_stream_error_is_in_band(http: httpx.AsyncClient, scratch: str) -> None:
    async with http.stream("POST", "/api/read/stream", json={"path": f"{scratch}/missing"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(await response.aread())
    assert len(events) == 1
    assert events[0]["type"] == "error" and events[0]["error"] == f"File not found: {scratch}/missing"


async def test_error_bodies(http: httpx.AsyncClient, scratch: str) -> None:
    missing = assert_error(await http.post("/api/read", json={"path": f"{scratch}/nope"}), 404, "FILE_NOT_FOUND")
    assert missing["context"] == {"path": f"{scratch}/nope", "operation": "file.read"}
    assert missing["operation"] == "file.read" and missing["message"] == f"File not found: {scratch}/nope"
    os.makedirs(f"{scratch}/dir")
    assert_error(await http.post("/api/delete", json={"path": f"{scratch}/dir"}), 400, "IS_DIRECTORY")
    await anyio.Path(f"{scratch}/f").write_text("f")
    assert_error(await http.post("/api/list-files", json={"path": f"{scratch}/f", "options": {}}), 400, "NOT_DIRECTORY")
    assert_error(
        await http.post("/api/list-files", json={"path": f"{scratch}/nope", "options": {}}), 404, "FILE_NOT_FOUND"
    )
    assert_error(await http.post("/api/mkdir", json={"path": f"{scratch}/dir"}), 409, "FILE_EXISTS")
    mkdir = assert_error(await http.post("/api/mkdir", json={"path": f"{scratch}/a/b"}), 500, "FILESYSTEM_ERROR")
    assert mkdir["context"]["path"] == f"{scratch}/a/b" and mkdir["operation"] == "directory.create"
    assert_error(
        await http.post("/api/rename", json={"oldPath": f"{scratch}/nope", "newPath": f"{scratch}/x"}),
        404,
        "FILE_NOT_FOUND",
    )
    assert_error(
        await http.post("/api/move", json={"sourcePath": f"{scratch}/nope", "destinationPath": f"{scratch}/x"}),
        404,
        "FILE_NOT_FOUND",
    )
    big = f"{scratch}/big"
    async with await anyio.open_file(big, "wb") as fh:
        await fh.truncate(32 * 1024 * 1024 + 1)
    too_large = assert_error(await http.post("/api/read", json={"path": big}), 413, "FILE_TOO_LARGE")
    assert too_large["context"]["path"] == big


@pytest.mark.parametrize(
    "route,body,field",
    [
        ("/api/read", {}, "path"),
        ("/api/read", {"path": 5}, "path"),
        ("/api/read", {"path": "/tmp/a\u0000b"}, "path"),
        ("/api/read", {"path": "/tmp/" + "a/" * 2046}, "path"),  # 4097 bytes
        ("/api/read", {"path": "/tmp/x", "encoding": "latin1"}, "encoding"),
        ("/api/read/stream", {"path": "/tmp/a\u0000b"}, "path"),
        ("/api/read/stream", {"path": "é" * 2049}, "path"),  # 4098 bytes in UTF-8
        ("/api/write", {"path": "/tmp/x"}, "content"),
        ("/api/write", {"path": "/tmp/a\u0000", "content": "x"}, "path"),
        ("/api/write", {"path": "/tmp/http-files-b64", "content": "a b", "encoding": "base64"}, "content"),
        ("/api/write", {"path": "", "content": "x"}, "path"),
        ("/api/delete", {"path": None}, "path"),
        ("/api/rename", {"oldPath": "/tmp/a"}, "newPath"),
        ("/api/rename", {"oldPath": "/tmp/a", "newPath": "/tmp/\u0000"}, "newPath"),
        ("/api/move", {"sourcePath": "/tmp/\u0000", "destinationPath": "/tmp/b"}, "sourcePath"),
        ("/api/move", {"sourcePath": "/tmp/a", "destinationPath": ["x"]}, "destinationPath"),
        ("/api/mkdir", {"path": "/tmp/x", "recursive": "yes"}, "recursive"),
        ("/api/list-files", {"path": "/tmp", "options": {"recursive": 1}}, "options.recursive"),
        ("/api/list-files", {"path": "/tmp", "options": []}, "options"),
        ("/api/exists", {"path": "/tmp", "sessionId": "  "}, "sessionId"),
        ("/api/read", {"path": "/tmp/x", "offset": "1"}, "offset"),
        ("/api/read", {"path": "/tmp/x", "length": 1.5}, "length"),
        ("/api/read", {"path": "/tmp/x", "tailLines": -1}, "tailLines"),
        ("/api/read/stream", {"path": "/tmp/x", "tailLines": 1, "offset": 0}, "offset"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(
    http: httpx.AsyncClient, route: str, body: dict[str, Any], field: str
) -> None:
    error = assert_error(await http.post(route, json=body), 400, "VALIDATION_FAILED")
    assert error["context"]["field"] == field


async def test_path_limit_is_4096_bytes(http: httpx.AsyncClient) -> None:
    longest = "/tmp/" + "a" * 200 + ("/" + "b" * 200) * 19 + "/" + "c" * 71
    assert len(longest.encode()) == 4096
    ok = await http.post("/api/exists", json={"path": longest})
    assert ok.status_code == 200 and ok.json()["exists"] is False
    assert_error(await http.post("/api/exists", json={"path": longest + "c"}), 400, "VALIDATION_FAILED")


async def test_bad_json_and_generic_stream_operations(http: httpx.AsyncClient) -> None:
    assert_error(
        await http.post("/api/write", content=b"{nope", headers={"content-type": "application/json"}),
        400,
        "VALIDATION_FAILED",
    )
    # an operation that takes a byte stream cannot be fed from a JSON body: 400, never 500
    error = assert_error(
        await http.post("/api/files/write_file_stream", json={"path": "/tmp/x", "data": "abc"}),
        400,
        "VALIDATION_FAILED",
    )
    assert error["context"]["field"] == "data"
