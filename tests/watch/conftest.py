"""Fixtures of the watch service tests: the service in this process, on a temporary workspace.

Only the watch service runs here (no sessions service, whose closing ends this process's
children), so these tests may share pytest's process with the others. The tests that need the
real server start their own (``test_watch_server.py``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from sandbox_core.registry import ServiceRegistry, ServiceSpec
from sandbox_services.watch import WatchService, WatchSettings

Factory = Callable[..., AbstractAsyncContextManager[ServiceRegistry]]


@pytest.fixture
def workspace(tmp_path: Path) -> str:
    path = tmp_path / "workspace"
    path.mkdir()
    return os.path.realpath(path)


@pytest.fixture
def watch_service(workspace: str) -> Factory:
    """``async with watch_service(**settings) as registry``: the watch service, started."""

    @asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[ServiceRegistry]:
        spec = ServiceSpec("watch", WatchService, WatchSettings)
        registry = ServiceRegistry({"watch": spec}, settings={"watch": WatchSettings(**settings)}, workspace=workspace)
        await registry.start()
        try:
            yield registry
        finally:
            await registry.aclose()

    return start
