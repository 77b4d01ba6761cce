"""Utilities: ping, version and metadata."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Annotated

from msgspec import Meta

from sandbox_core.clock import now_iso
from sandbox_core.config import user_environment
from sandbox_core.contract.models import MetadataResult, Pong, VersionInfo
from sandbox_core.hookspecs import hookimpl
from sandbox_core.metrics import BUILD_INFO
from sandbox_core.registry import ServiceContext, ServiceSpec, operation

#: A name containing one of these (in any case) is never sent by :meth:`UtilsService.metadata`.
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CRED", "KEY", "AUTH", "BEARER", "PRIVATE", "CERT")
#: The prefix of the variables :meth:`UtilsService.metadata` sends: letters, digits, ``_``.
EnvPrefix = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_]{0,128}$")]


def _secret_looking(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


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

    @operation
    async def metadata(self, prefix: EnvPrefix = "SANDBOX_") -> MetadataResult:
        """Ours: the environment variables of the sandbox whose names start with ``prefix``
        (default ``SANDBOX_``, case-sensitive; letters, digits and ``_``, empty for all), as
        agent-sandbox's ``GET /v1/metadata``. Never sent: a name containing TOKEN, SECRET,
        PASSWORD, PASSWD, CRED, KEY, AUTH, BEARER, PRIVATE or CERT (in any case), nor the
        server's own variables (its configuration and token, which user code never sees either)."""
        env = {
            name: value
            for name, value in sorted(user_environment().items())
            if name.startswith(prefix) and not _secret_looking(name)
        }
        return MetadataResult(success=True, prefix=prefix, env=env, timestamp=now_iso())


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``utils`` plugin (entry point): this service alone."""
    register(ServiceSpec("utils", UtilsService, None, "ping, version and metadata"))
