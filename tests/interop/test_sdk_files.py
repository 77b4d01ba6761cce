"""The official @cloudflare/sandbox client's file operations (http transport) against our server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox_core.testing import ServerProcess

Run = Callable[..., dict[str, Any]]


def scenario(node_runner: Run, server: ServerProcess, name: str, *args: str) -> Any:
    out = node_runner("sdk_http.mjs", server.url, name, *args)
    assert out["returncode"] == 0, out
    return out["result"]


def test_files_basic(node_runner: Run, sandbox_server: ServerProcess, tmp_path: Path) -> None:
    root = str(tmp_path)
    result = scenario(node_runner, sandbox_server, "files_basic", root)
    assert result["mkdir"]["success"] is True and result["mkdir"]["recursive"] is True
    assert result["writeText"]["success"] is True and result["writeText"]["path"] == f"{root}/a.txt"
    text = result["readText"]
    assert (text["content"], text["encoding"], text["isBinary"], text["mimeType"], text["size"]) == (
        "héllo ✓",
        "utf-8",
        False,
        "text/plain",
        len("héllo ✓".encode()),
    )
    assert result["binaryMatches"] is True
    assert (result["readBinary"]["encoding"], result["readBinary"]["isBinary"], result["readBinary"]["size"]) == (
        "base64",
        True,
        300,
    )
    assert result["asBase64"]["encoding"] == "base64" and result["asBase64"]["decoded"] == "héllo ✓"

    assert [f["name"] for f in result["list"]["files"]] == ["a.txt", "b.bin", "sub"]
    assert result["list"]["count"] == 3
    assert [f["relativePath"] for f in result["listAll"]["files"]] == ["a.txt", "b.bin", "sub", "sub/deep"]
    # JavaScript's Date reads our ISO 8601 with a zone, for every entry listed
    assert result["modifiedAtParses"] == [True] * len(result["listAll"]["files"])
    a = result["listAll"]["files"][0]
    assert (a["type"], a["absolutePath"], a["size"]) == ("file", f"{root}/a.txt", len("héllo ✓".encode()))

    assert result["existsYes"]["exists"] is True and result["existsNo"]["exists"] is False
    assert (result["rename"]["path"], result["rename"]["newPath"]) == (f"{root}/a.txt", f"{root}/c.txt")
    assert (result["move"]["path"], result["move"]["newPath"]) == (f"{root}/c.txt", f"{root}/sub/c.txt")
    deleted = result["deleted"]
    assert set(deleted) == {"success", "path", "timestamp"} and deleted["timestamp"].endswith("Z")
    assert (deleted["success"], deleted["path"]) == (True, f"{root}/b.bin")
    assert [f["relativePath"] for f in result["after"]["files"]] == ["sub", "sub/c.txt", "sub/deep"]
    assert (tmp_path / "sub" / "c.txt").read_text() == "héllo ✓"


def test_files_stream(node_runner: Run, sandbox_server: ServerProcess, tmp_path: Path) -> None:
    result = scenario(node_runner, sandbox_server, "files_stream", str(tmp_path))
    assert result["types"] == ["metadata", "chunk", "chunk", "chunk", "complete"]
    assert result["metadata"] == {
        "type": "metadata",
        "mimeType": "application/octet-stream",
        "size": 150000,
        "isBinary": True,
        "encoding": "base64",
    }
    assert result["chunkLengths"] == [87380, 87380, 25240]
    assert result["complete"] == {"type": "complete", "bytesRead": 150000}
    assert result["matches"] is True
    assert result["collectedBinary"]["matches"] is True  # the SDK's own collectFile()
    assert result["collectedBinary"]["metadata"]["isBinary"] is True
    assert result["collectedText"]["matches"] is True
    assert result["collectedText"]["metadata"]["encoding"] == "utf-8"
    assert [e["type"] for e in result["missing"]] == ["error"]
    assert result["missing"][0]["error"] == f"File not found: {tmp_path}/missing"
    failed = result["missingCollected"]
    assert failed["ok"] is False and "File not found" in failed["error"]["message"]
    expected = bytes((i * 7919) % 251 for i in range(150000))
    assert (tmp_path / "s.bin").read_bytes() == expected  # what the SDK's base64 write put on disk


def test_files_errors(node_runner: Run, sandbox_server: ServerProcess, tmp_path: Path) -> None:
    result = scenario(node_runner, sandbox_server, "files_errors", str(tmp_path))
    expected = {
        "readMissing": ("FileNotFoundError", "FILE_NOT_FOUND", 404),
        "deleteDir": ("FileSystemError", "IS_DIRECTORY", 400),
        "listFile": ("FileSystemError", "NOT_DIRECTORY", 400),
        "listMissing": ("FileNotFoundError", "FILE_NOT_FOUND", 404),
        "mkdirNoParent": ("FileSystemError", "FILESYSTEM_ERROR", 500),
        "mkdirExists": ("FileExistsError", "FILE_EXISTS", 409),
        "renameMissing": ("FileNotFoundError", "FILE_NOT_FOUND", 404),
        "moveMissing": ("FileNotFoundError", "FILE_NOT_FOUND", 404),
        "badBase64": ("ValidationFailedError", "VALIDATION_FAILED", 400),
        "nulPath": ("ValidationFailedError", "VALIDATION_FAILED", 400),
    }
    for step, (name, code, status) in expected.items():
        outcome = result[step]
        assert outcome["ok"] is False, (step, outcome)
        error = outcome["error"]
        assert (error["name"], error["code"], error["httpStatus"]) == (name, code, status), (step, error)
    assert result["readMissing"]["error"]["context"] == {"path": f"{tmp_path}/missing.txt", "operation": "file.read"}
    assert result["badBase64"]["error"]["context"]["field"] == "content"
