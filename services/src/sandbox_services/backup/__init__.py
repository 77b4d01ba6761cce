"""Backups of directories as squashfs archives (contract section a8): see :mod:`.service`."""

from .service import BackupService, BackupSettings

__all__ = ["BackupService", "BackupSettings"]
