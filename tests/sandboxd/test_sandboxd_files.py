"""The REST files API (``/v1/files/{path}``) through the official SDK, and on the wire with httpx:
paths (``%2F``, re-rooted absolute paths, escapes), modes, multipart, deletes, errors."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers_sandboxd import rest_url
from k8s_agent_sandbox.exceptions import SandboxRequestError

from sandbox_core.testing import ServerProcess


@pytest.fixture
def rest(sandboxd_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rest_url(sandboxd_server), timeout=30) as client:
        yield client


def in_workspace(server: ServerProcess, *parts: str) -> str:
    return os.path.join(server.workspace, *parts)


# the SDK ------------------------------------------------------------------------------------


def test_sdk_writes_reads_lists_and_checks_files(sdk: Any, sandboxd_server: ServerProcess) -> None:
    sdk.files.write("sdk/dir/hello.txt", b"hello \x00\xff")
    sdk.files.write("sdk/.hidden", "text")
    assert sdk.files.read("sdk/dir/hello.txt") == b"hello \x00\xff"
    with open(in_workspace(sandboxd_server, "sdk", "dir", "hello.txt"), "rb") as fh:
        assert fh.read() == b"hello \x00\xff"
    entries = {e.name: e for e in sdk.files.list("sdk")}
    assert sorted(entries) == [".hidden", "dir"]  # hidden entries too
    assert (entries["dir"].type, entries[".hidden"].type, entries[".hidden"].size) == ("directory", "file", 4)
    assert entries[".hidden"].mode == "0644" and entries[".hidden"].modified.tzinfo is not None
    assert sdk.files.exists("sdk/dir/hello.txt") is True
    assert sdk.files.exists("sdk/dir") is True
    assert sdk.files.exists("sdk/nope") is False


def test_sdk_deletes_files_and_trees(sdk: Any, sandboxd_server: ServerProcess) -> None:
    sdk.files.write("del/a/b.txt", b"x")
    sdk.files.write("del/empty/f", b"x")
    sdk.files.delete("del/empty/f")
    sdk.files.delete("del/empty")  # an empty directory, not recursive
    assert not os.path.exists(in_workspace(sandboxd_server, "del", "empty"))
    with pytest.raises(SandboxRequestError) as refused:
        sdk.files.delete("del/a")  # not empty
    assert refused.value.status_code == 409
    assert os.path.exists(in_workspace(sandboxd_server, "del", "a", "b.txt"))
    sdk.files.delete("del", recursive=True)
    assert not os.path.exists(in_workspace(sandboxd_server, "del"))
    assert sdk.files.exists("del") is False


def test_sdk_traversal_is_refused(sdk: Any) -> None:
    with pytest.raises(ValueError):  # the SDK's own check
        sdk.files.read("../../etc/passwd")
    with pytest.raises(SandboxRequestError) as refused:  # past it: the server's
        sdk.files.read("../../etc/passwd", allow_unsafe_paths=True)
    assert refused.value.status_code == 403


# the wire -----------------------------------------------------------------------------------


def test_encoded_slashes_make_nested_paths(rest: httpx.Client, sandboxd_server: ServerProcess) -> None:
    assert rest.put("/v1/files/enc%2Fa%2Fb.txt", content=b"nested").status_code == 204
    with open(in_workspace(sandboxd_server, "enc", "a", "b.txt"), "rb") as fh:
        assert fh.read() == b"nested"
    response = rest.get("/v1/files/enc%2Fa%2Fb.txt")
    assert response.status_code == 200 and response.content == b"nested"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == "6"
    assert rest.get("/v1/files/enc/a/b.txt").content == b"nested"  # plain slashes too
    listing = rest.get("/v1/files/enc%2Fa").json()
    assert listing["path"] == "/enc/a"
    assert [(e["name"], e["type"], e["size"], e["mode"]) for e in listing["entries"]] == [("b.txt", "file", 6, "0644")]
    assert listing["entries"][0]["modified_at"].endswith("Z")


def test_root_listing_and_absolute_paths_rerooted(rest: httpx.Client, sandboxd_server: ServerProcess) -> None:
    assert rest.put("/v1/files/%2Fetc%2Fpasswd", content=b"mine").status_code == 204
    with open(in_workspace(sandboxd_server, "etc", "passwd"), "rb") as fh:
        assert fh.read() == b"mine"  # /etc/passwd is <workspace>/etc/passwd
    assert rest.get("/v1/files/%2Fetc%2Fpasswd").content == b"mine"
    for path in ("/v1/files/", "/v1/files"):
        root = rest.get(path).json()
        assert root["path"] == "/" and "etc" in [e["name"] for e in root["entries"]]
        names = [e["name"] for e in root["entries"]]
        assert names == sorted(names)


def test_escapes_are_permission_denied(rest: httpx.Client, sandboxd_server: ServerProcess) -> None:
    os.symlink("/etc", in_workspace(sandboxd_server, "out"))
    os.symlink("/etc/hostname", in_workspace(sandboxd_server, "outfile"))
    os.makedirs(in_workspace(sandboxd_server, "linkdir"))
    os.symlink("../enc", in_workspace(sandboxd_server, "linkdir", "inside"))
    os.symlink("nowhere", in_workspace(sandboxd_server, "linkdir", "broken"))
    os.symlink("/etc", in_workspace(sandboxd_server, "linkdir", "outside"))
    for method, path in (
        ("GET", "/v1/files/out%2Fhostname"),
        ("GET", "/v1/files/outfile"),
        ("GET", "/v1/files/..%2F..%2Fetc%2Fpasswd"),
        ("PUT", "/v1/files/out%2Fnew"),
        ("DELETE", "/v1/files/outfile"),
        ("HEAD", "/v1/files/out"),
    ):
        response = rest.request(method, path, content=b"x" if method == "PUT" else None)
        assert response.status_code == 403, (method, path, response.text)
        if method != "HEAD":
            assert response.json()["code"] == "PERMISSION_DENIED"
    assert os.path.exists(in_workspace(sandboxd_server, "outfile"))
    # a listing shows a symlink as what it points to, and leaves out escaping or broken ones
    rest.put("/v1/files/enc%2Fx", content=b"x")
    entries = rest.get("/v1/files/linkdir").json()["entries"]
    assert [(e["name"], e["type"]) for e in entries] == [("inside", "directory")]


def test_put_mode_is_applied_and_checked(rest: httpx.Client, sandboxd_server: ServerProcess) -> None:
    target = in_workspace(sandboxd_server, "mode.sh")
    assert rest.put("/v1/files/mode.sh?mode=0750", content=b"#!/bin/sh\n").status_code == 204
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o750
    modes = {e["name"]: e["mode"] for e in rest.get("/v1/files/").json()["entries"]}
    assert modes["mode.sh"] == "0750"
    assert rest.put("/v1/files/mode.sh", content=b"again").status_code == 204  # default 0644, on overwrite too
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    for bad in ("644", "0999", "07777", "abc", ""):
        response = rest.put("/v1/files/mode.sh", params={"mode": bad}, content=b"no")
        assert response.status_code == 400, bad
        body = response.json()
        assert body["code"] == "INVALID_ARGUMENT" and "mode" in body["message"]
    with open(target, "rb") as fh:
        assert fh.read() == b"again"


def test_put_multipart_takes_the_file_part(rest: httpx.Client, sandboxd_server: ServerProcess) -> None:
    files = {"note": ("n.txt", b"not this"), "file": ("up.bin", b"\x00multipart\xff" * 1000)}
    assert rest.put("/v1/files/mp%2Fup.bin", files=files).status_code == 204
    with open(in_workspace(sandboxd_server, "mp", "up.bin"), "rb") as fh:
        assert fh.read() == b"\x00multipart\xff" * 1000
    response = rest.put("/v1/files/mp%2Fnone.bin", files={"other": ("o", b"x")})
    assert response.status_code == 400 and "'file'" in response.json()["message"]
    assert os.listdir(in_workspace(sandboxd_server, "mp")) == ["up.bin"]  # no file, no temp file left


def test_put_on_a_directory_is_refused(rest: httpx.Client, sandboxd_server: ServerProcess) -> None:
    os.makedirs(in_workspace(sandboxd_server, "adir"), exist_ok=True)
    for path in ("/v1/files/adir", "/v1/files/"):
        response = rest.put(path, content=b"x")
        assert response.status_code == 400 and response.json()["code"] == "INVALID_ARGUMENT", path
    assert os.path.isdir(in_workspace(sandboxd_server, "adir"))


def test_delete_directories(rest: httpx.Client, sandboxd_server: ServerProcess) -> None:
    rest.put("/v1/files/tree%2Fsub%2Ff", content=b"x")
    response = rest.delete("/v1/files/tree")
    assert response.status_code == 409 and response.json()["code"] == "CONFLICT"
    assert rest.delete("/v1/files/tree", params={"recursive": "maybe"}).status_code == 400
    assert rest.delete("/v1/files/tree", params={"recursive": "true"}).status_code == 204
    assert not os.path.exists(in_workspace(sandboxd_server, "tree"))
    response = rest.delete("/v1/files/tree")
    assert response.status_code == 404 and response.json()["code"] == "NOT_FOUND"


def test_delete_a_symlink_deletes_the_link(rest: httpx.Client, sandboxd_server: ServerProcess) -> None:
    rest.put("/v1/files/target.txt", content=b"kept")
    os.symlink("target.txt", in_workspace(sandboxd_server, "link.txt"))
    assert rest.delete("/v1/files/link.txt").status_code == 204
    assert not os.path.lexists(in_workspace(sandboxd_server, "link.txt"))
    assert os.path.exists(in_workspace(sandboxd_server, "target.txt"))


def test_errors_have_the_spec_shape(rest: httpx.Client) -> None:
    response = rest.get("/v1/files/no%2Fsuch")
    assert response.status_code == 404
    assert set(response.json()) == {"code", "message"} and response.json()["code"] == "NOT_FOUND"
    head = rest.head("/v1/files/no%2Fsuch")
    assert head.status_code == 404 and head.content == b""
    assert rest.get("/v1/nothing").status_code == 404
    response = rest.post("/v1/files/x")
    assert response.status_code == 405 and set(response.headers["allow"].split(", ")) == {
        "GET",
        "HEAD",
        "PUT",
        "DELETE",
    }
    assert rest.delete("/v1/health").status_code == 405
    for path in ("/v1/files/%zz", "/v1/files/a%00b", "/v1/files/%ff%fe", "/v1/files/" + "a" * 20000):
        response = rest.get(path)
        assert response.status_code == 400, path
        assert response.json()["code"] == "INVALID_ARGUMENT"
    assert rest.get("/v1/health").status_code == 200  # still serving


def test_head_answers_without_a_body(rest: httpx.Client) -> None:
    rest.put("/v1/files/h.txt", content=b"12345")
    response = rest.head("/v1/files/h.txt")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == "5"
    assert rest.head("/v1/files/").status_code == 200


def test_root_delete(rest: httpx.Client, sandboxd_server: ServerProcess) -> None:
    rest.put("/v1/files/r%2Fa", content=b"x")
    response = rest.delete("/v1/files/")
    assert response.status_code == 409 and response.json()["code"] == "CONFLICT"
    assert os.path.exists(in_workspace(sandboxd_server, "r", "a"))
    assert rest.delete("/v1/files/", params={"recursive": "true"}).status_code == 204
    assert os.path.isdir(sandboxd_server.workspace) and os.listdir(sandboxd_server.workspace) == []
    assert rest.get("/v1/files/").json() == {"path": "/", "entries": []}


def test_get_serves_one_byte_range(rest: httpx.Client) -> None:
    """``Range: bytes=...`` as sandboxd's http.ServeContent serves it: 206 with Content-Range for
    one satisfiable range (first-last, first-, the last n), 416 past the end, the whole file for
    what it does not serve (several ranges, another unit, a malformed value)."""
    body = bytes(range(256)) * 40  # 10240 bytes
    assert rest.put("/v1/files/ranged.bin", content=body).status_code == 204
    whole = rest.get("/v1/files/ranged.bin")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes" and whole.content == body
    for value, start, end in (
        ("bytes=0-9", 0, 10),
        ("bytes=10000-", 10000, 10240),
        ("bytes=-100", 10140, 10240),
        ("bytes=100-99999", 100, 10240),
        ("bytes=-99999", 0, 10240),
        ("bytes=5-5", 5, 6),
    ):
        part = rest.get("/v1/files/ranged.bin", headers={"Range": value})
        assert part.status_code == 206, (value, part.text)
        assert part.content == body[start:end], value
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/10240", value
        assert part.headers["content-length"] == str(end - start)
    head = rest.head("/v1/files/ranged.bin", headers={"Range": "bytes=1-2"})
    assert head.status_code == 206 and head.headers["content-length"] == "2" and head.content == b""
    for value in ("bytes=10240-", "bytes=99999-100000", "bytes=-0"):
        refused = rest.get("/v1/files/ranged.bin", headers={"Range": value})
        assert refused.status_code == 416, value
        assert refused.headers["content-range"] == "bytes */10240" and refused.json()["code"] == "INVALID_ARGUMENT"
    for value in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=x-", "bytes=-"):
        ignored = rest.get("/v1/files/ranged.bin", headers={"Range": value})
        assert ignored.status_code == 200 and ignored.content == body, value
