"""The files service alone in a registry of its own, in this process: absolute paths need no
session, and leaving the sessions service out keeps this process from becoming a subreaper that
would end the test servers other tests started (see tests/core/helpers_inprocess.py)."""

from __future__ import annotations

import dataclasses
import os
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
