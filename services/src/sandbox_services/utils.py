"""Utilities: ping and version."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

from sandbox_core.clock import now_iso
from sandbox_core.contract.models import Pong, VersionInfo
from sandbox_core.hookspecs import hookimpl
from sandbox_core.metrics import BUILD_INFO
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
        self._runtime_id = ctx.registry.runtime_id
        ctx.registry.metrics.source(BUILD_INFO, lambda: [((self._version,), 1.0)])

    @operation
    async def ping(self) -> Pong:
        """Liveness: always healthy while the server answers. ``runtimeId`` (ours) names this run of
        the server: it changes when the server restarts, and with it every process id it knew."""
        return Pong(success=True, status="healthy", message="pong", timestamp=now_iso(), runtime_id=self._runtime_id)

    @operation
    async def version(self) -> VersionInfo:
        """The server's version (``SANDBOX_VERSION`` when set), and ``runtimeId`` as :meth:`ping`."""
        return VersionInfo(success=True, version=self._version, timestamp=now_iso(), runtime_id=self._runtime_id)


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``utils`` plugin (entry point): this service alone."""
    register(ServiceSpec("utils", UtilsService, None, "ping and version"))
