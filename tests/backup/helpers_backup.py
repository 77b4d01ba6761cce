"""What the backup tests share: a running backup service and its roots."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox_core.registry import ServiceRegistry


@dataclass
class Backups:
    """A running backup service and its roots."""

    registry: ServiceRegistry
    data: Path  # the allowed root for ``dir``
    archives: Path  # the archive root

    async def create(self, dir: str | Path, archive: str | Path, **params: Any) -> Any:
        return await self.registry.call(
            "backup", "create_archive", {"dir": str(dir), "archivePath": str(archive), **params}
        )

    async def restore(self, dir: str | Path, archive: str | Path, **params: Any) -> Any:
        return await self.registry.call(
            "backup", "restore_archive", {"dir": str(dir), "archivePath": str(archive), **params}
        )


MakeBackups = Callable[..., Awaitable[Backups]]
