"""Backups of directories as squashfs archives (contract section a8): see :mod:`.service`."""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceSpec

from .service import BackupService, BackupSettings

__all__ = ["BackupService", "BackupSettings"]


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``backup`` plugin (entry point): this service alone."""
    register(ServiceSpec("backup", BackupService, BackupSettings, "directories to squashfs archives and back"))
