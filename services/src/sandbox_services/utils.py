"""Utilities: ping and version."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

from sandbox_core.clock import now_iso
from sandbox_core.contract.models import Pong, VersionInfo
from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceContext, ServiceSpec, operation


def _version() -> str:
    env = os.environ.get("SANDBOX_VERSION")
    if env:
        return env
    try:
        return dist_version("sandbox-services")
    except PackageNotFoundError:
        return "unknown"


class UtilsService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._version = _version()

    @operation
    async def ping(self) -> Pong:
        """Liveness: always healthy while the server answers."""
        return Pong(success=True, status="healthy", message="pong", timestamp=now_iso())

    @operation
    async def version(self) -> VersionInfo:
        """The server's version (``SANDBOX_VERSION`` when set)."""
        return VersionInfo(success=True, version=self._version, timestamp=now_iso())


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``utils`` plugin (entry point): this service alone."""
    register(ServiceSpec("utils", UtilsService, None, "ping and version"))
