"""Service registries these tests start in their own process.

:func:`files_registry` is the files service alone: absolute paths need no session, and leaving the
sessions service out keeps this process from becoming a subreaper. :func:`services_registry` is
every installed service, for tests that need sessions or processes. Its sessions service makes
this process a child subreaper and, when it stops, ends every child of the process that the
services did not start themselves: a test server started as a subprocess (ServerProcess) and still
running then would be ended too. Use it only where no such server outlives the test
(see tests/core/helpers_inprocess.py)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sandbox_core.plugins import Hooks, make_plugin_manager
from sandbox_core.registry import ServiceRegistry
from sandbox_services.files import FilesSettings


async def files_registry(workspace: str | os.PathLike[str], **settings: Any) -> ServiceRegistry:
    """A started registry of the files service alone (``settings``: its FilesSettings)."""
    # the files service requires the sessions service (for relative paths): left out here
    files = dataclasses.replace(Hooks(make_plugin_manager()).services()["files"], requires=())
    reg = ServiceRegistry({"files": files}, settings={"files": FilesSettings(**settings)}, workspace=str(workspace))
    await reg.start()
    return reg


@asynccontextmanager
async def services_registry(workspace: str | os.PathLike[str]) -> AsyncIterator[ServiceRegistry]:
    """A started registry of every installed service, closed at the end of the block."""
    reg = ServiceRegistry(Hooks(make_plugin_manager()).services(), settings={}, workspace=str(workspace))
    await reg.start()
    try:
        yield reg
    finally:
        await reg.aclose()
