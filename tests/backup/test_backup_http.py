"""The backup routes on the wire (http): the contract's bodies, error bodies and session id."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox_core.testing import ServerProcess, assert_error
from sandbox_core.testing.plugin import TEST_CONFIG


@pytest.fixture(scope="module")
def backup_http_server() -> Iterator[tuple[ServerProcess, Path]]:
    with tempfile.TemporaryDirectory(prefix="sandbox-backup-http-") as tmp:
        root = Path(tmp) / "archives"
        services = {**TEST_CONFIG["services"], "backup": {"archive_root": str(root)}}
        server = ServerProcess(config={**TEST_CONFIG, "services": services}).start()
        try:
            yield server, root
        finally:
            server.stop()


@pytest.fixture
async def http(backup_http_server: tuple[ServerProcess, Path]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=backup_http_server[0].url, timeout=60) as client:
        yield client


@pytest.fixture
def paths(backup_http_server: tuple[ServerProcess, Path], tmp_path: Path) -> tuple[Path, str]:
    server, root = backup_http_server
    src = Path(server.workspace) / tmp_path.name
    src.mkdir()
    (src / "f.txt").write_text("hi")
    return src, f"{root}/{tmp_path.name}.sqsh"


async def test_backup_http_bodies(http: httpx.AsyncClient, paths: tuple[Path, str]) -> None:
    src, archive = paths
    r = await http.post(
        "/api/backup/create",
        json={"dir": str(src), "archivePath": archive, "compression": {"format": "zstd", "threads": 1}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"success", "sizeBytes", "archivePath"}  # no timestamp, as upstream
    assert body["success"] is True and body["archivePath"] == archive
    assert body["sizeBytes"] == os.stat(archive).st_size
    r = await http.post("/api/backup/restore", json={"dir": f"{src}-copy", "archivePath": archive})
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "dir": f"{src}-copy"}
    assert (Path(f"{src}-copy") / "f.txt").read_text() == "hi"


@pytest.mark.parametrize(
    ("route", "body", "status", "code", "operation"),
    [
        ("create", {"dir": "/etc", "archivePath": "ARCHIVE"}, 400, "INVALID_BACKUP_CONFIG", "backup.create"),
        ("restore", {"dir": "SRC", "archivePath": "/etc/x.sqsh"}, 400, "INVALID_BACKUP_CONFIG", "backup.restore"),
        ("restore", {"dir": "SRC", "archivePath": "ARCHIVE"}, 404, "BACKUP_NOT_FOUND", "backup.restore"),
        ("create", {"dir": "SRC/none", "archivePath": "ARCHIVE"}, 500, "BACKUP_CREATE_FAILED", "backup.create"),
        ("create", {"dir": "SRC", "archivePath": "ARCHIVE", "excludes": "x"}, 400, "VALIDATION_FAILED", None),
        ("create", {"dir": "SRC", "archivePath": "ARCHIVE", "compression": {"threads": "8"}}, 400,
         "VALIDATION_FAILED", None),
        ("create", {"archivePath": "ARCHIVE"}, 400, "VALIDATION_FAILED", None),
        ("restore", {"dir": "SRC", "archivePath": "ARCHIVE", "sessionId": "  "}, 400, "VALIDATION_FAILED", None),
    ],
)  # fmt: skip
async def test_backup_http_errors(
    http: httpx.AsyncClient,
    paths: tuple[Path, str],
    route: str,
    body: dict[str, Any],
    status: int,
    code: str,
    operation: str | None,
) -> None:
    src, archive = paths
    body = {
        k: v.replace("SRC", str(src)).replace("ARCHIVE", archive) if isinstance(v, str) else v for k, v in body.items()
    }
    answer = assert_error(await http.post(f"/api/backup/{route}", json=body), status, code)
    if operation is not None:
        assert answer["operation"] == operation and answer["context"]["operation"] == operation


async def test_backup_http_session_id_from_headers(http: httpx.AsyncClient, paths: tuple[Path, str]) -> None:
    src, archive = paths
    r = await http.post(
        "/api/backup/create", json={"dir": str(src), "archivePath": archive}, headers={"X-Session-Id": "backup-s"}
    )
    assert r.status_code == 200, r.text
