"""``files.confine``: a path taken inside the workspace (sandboxd's rule), symlink-aware, 403 outside."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from helpers_registry import services_registry

from sandbox_core.errors import SandboxError
from sandbox_core.registry import ServiceRegistry


@pytest.fixture
async def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "in-link").symlink_to(root / "sub")
    (root / "out-link").symlink_to(tmp_path / "outside")
    (root / "out-file-link").symlink_to(tmp_path / "outside" / "secret")
    (root / "dangling-out").symlink_to(tmp_path / "nowhere" / "x")
    return root


@pytest.fixture
async def registry(workspace: Path) -> AsyncIterator[ServiceRegistry]:
    async with services_registry(workspace) as reg:
        yield reg


async def confine(registry: ServiceRegistry, path: str, **more: str) -> str:
    result = await registry.call("files", "confine", {"path": path, **more})
    assert result.path == path
    return str(result.resolved)


async def test_paths_inside_the_workspace(registry: ServiceRegistry, workspace: Path) -> None:
    root = str(workspace)
    cases = {
        "": root,
        "/": root,
        ".": root,
        "a.txt": f"{root}/a.txt",
        "sub/../b": f"{root}/b",
        f"{root}/sub/c": f"{root}/sub/c",  # an absolute path in the workspace keeps its meaning
        "/etc/passwd": f"{root}/etc/passwd",  # any other is re-rooted (sandboxd)
        "/../../x": f"{root}/x",
        "in-link/d": f"{root}/sub/d",  # a symlink inside, resolved
        "in-link": f"{root}/in-link",  # the last component as given: the link itself
        "new/dir/file": f"{root}/new/dir/file",  # need not exist
    }
    for path, want in cases.items():
        assert await confine(registry, path) == want, path


@pytest.mark.parametrize(
    "path",
    ["..", "../x", "sub/../../x", "out-link/secret", "out-link", "out-file-link", "dangling-out", "in-link/../../x"],
)
async def test_paths_that_resolve_outside_are_403_naming_the_path(registry: ServiceRegistry, path: str) -> None:
    with pytest.raises(SandboxError) as caught:
        await registry.call("files", "confine", {"path": path, "field": "cwd"})
    error = caught.value
    assert (error.code, error.status) == ("PERMISSION_DENIED", 403)
    assert error.details["path"] == path and error.details["field"] == "cwd"
    assert path in error.message


async def test_bad_input_names_the_field(registry: ServiceRegistry) -> None:
    for params, field in (({"path": "a\x00b"}, "path"), ({"path": "a", "field": "x y"}, "field"), ({}, "path")):
        with pytest.raises(SandboxError) as caught:
            await registry.call("files", "confine", params)
        assert (caught.value.code, caught.value.details.get("field")) == ("VALIDATION_FAILED", field), params


async def test_existing_operations_are_not_confined(registry: ServiceRegistry, tmp_path: Path) -> None:
    """Opt-in: the files operations keep their own rule (absolute paths anywhere)."""
    outside = tmp_path / "outside" / "o.txt"
    await registry.call("files", "write", {"path": str(outside), "content": msgspec.Raw(b'"x"')})
    assert outside.read_text() == "x" and os.path.isabs(str(outside))
