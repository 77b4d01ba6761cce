"""Directory listings are capped at ``[services.files] max_list_entries``, marked ``truncated``,
and walked in a worker thread (a listing of ``/`` once built 351k entries and stalled the server)."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox_core import Sandbox
from sandbox_core.plugins import Hooks, make_plugin_manager
from sandbox_core.registry import ServiceRegistry
from sandbox_core.testing import ServerProcess
from sandbox_services.files import listing, service
from sandbox_services.files.listing import list_tree


def make_tree(root: Path) -> list[str]:
    """a/, a/x, a/y/, a/y/z, b, c/ (empty), d, .hidden/, .hidden/h: the relative paths of the
    recursive listing without hidden entries, in its order (by name, depth first)."""
    for d in ("a/y", "c", ".hidden"):
        (root / d).mkdir(parents=True)
    for f in ("a/x", "a/y/z", "b", "d", ".hidden/h"):
        (root / f).write_text(f)
    return ["a", "a/x", "a/y", "a/y/z", "b", "c", "d"]


def relative(files: list[Any]) -> list[str]:
    return [f.relative_path for f in files]


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 6])
def test_recursive_listing_stops_at_the_limit(tmp_path: Path, limit: int) -> None:
    order = make_tree(tmp_path)
    files, truncated = list_tree(str(tmp_path), True, False, limit)
    assert relative(files) == order[:limit]
    assert truncated


@pytest.mark.parametrize("limit", [7, 8, 100])
def test_a_listing_within_the_limit_is_whole(tmp_path: Path, limit: int) -> None:
    order = make_tree(tmp_path)
    assert list_tree(str(tmp_path), True, False, limit) == (list_tree(str(tmp_path), True, False, 10**9)[0], False)
    assert relative(list_tree(str(tmp_path), True, False, limit)[0]) == order


def test_a_last_directory_with_entries_past_the_limit_is_truncated(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "inside").write_text("x")
    assert relative(list_tree(str(tmp_path), True, False, 1)[0]) == ["only"]
    assert list_tree(str(tmp_path), True, False, 1)[1] is True
    assert list_tree(str(tmp_path), False, False, 1)[1] is False  # not recursive: "only" is all there is


def test_a_huge_directory_keeps_only_its_first_names(tmp_path: Path) -> None:
    names = [f"f{i:05d}" for i in range(3000)]
    for name in reversed(names):
        (tmp_path / name).write_text("")
    files, truncated = list_tree(str(tmp_path), False, False, 10)
    assert (relative(files), truncated) == (names[:10], True)
    files, truncated = list_tree(str(tmp_path), True, True, 3000)
    assert (relative(files), truncated) == (names, False)


async def test_the_walk_and_its_entries_are_made_off_the_event_loop(tmp_path: Path, monkeypatch: Any) -> None:
    make_tree(tmp_path)
    threads: list[threading.Thread] = []

    def info(*args: Any) -> Any:
        threads.append(threading.current_thread())
        return real_info(*args)

    real_info = listing._info
    monkeypatch.setattr(listing, "_info", info)
    # the files service alone: it requires the sessions service (for relative paths), left out here
    files = dataclasses.replace(Hooks(make_plugin_manager()).services()["files"], requires=())
    registry = ServiceRegistry({"files": files}, settings={}, workspace=str(tmp_path))
    await registry.start()
    try:
        result = await registry.call("files", "list_files", {"path": str(tmp_path), "options": {"recursive": True}})
    finally:
        await registry.aclose()
    assert isinstance(result, service.ListFilesResult) and result.count == 7
    assert len(threads) == 7 and threading.main_thread() not in threads


def test_max_list_entries_setting(sandbox_server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """Over http: the first entries and ``truncated: true``; a whole listing has no ``truncated``."""
    server = sandbox_server_factory(config={"services": {"files": {"max_list_entries": 3}}})
    order = make_tree(tmp_path)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        body = {"path": str(tmp_path), "options": {"recursive": True}}
        capped = client.post("/api/list-files", json=body).json()
        assert capped["success"] is True and capped["truncated"] is True
        assert (capped["count"], [f["relativePath"] for f in capped["files"]]) == (3, order[:3])
        whole = client.post("/api/list-files", json={"path": str(tmp_path / "a")}).json()
        assert whole["count"] == 2 and "truncated" not in whole


async def test_the_client_sees_truncated(sandbox_server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = sandbox_server_factory(config={"services": {"files": {"max_list_entries": 2}}})
    make_tree(tmp_path)
    async with Sandbox(server.url) as sb:
        capped = await sb.files.list(str(tmp_path), recursive=True)
        whole = await sb.files.list(os.path.join(tmp_path, "a", "y"))
    assert (capped.count, capped.truncated) == (2, True)
    assert (whole.count, whole.truncated) == (1, False)


def test_max_list_entries_must_be_positive(tmp_path: Path) -> None:
    server = ServerProcess(config={"services": {"files": {"max_list_entries": 0}}})
    with pytest.raises(RuntimeError, match="max_list_entries"):
        server.start()
