"""``Sandbox.backup``: archive a directory in the sandbox to a squashfs file, and restore it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sandbox_core.contract.client import _params
from sandbox_core.contract.models.backup import BackupCreated, BackupRestored

if TYPE_CHECKING:
    from sandbox_core.contract.client import Sandbox


class BackupAPI:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    async def create_archive(
        self,
        dir: str,
        archive_path: str,
        *,
        gitignore: bool | None = None,
        excludes: Sequence[str] | None = None,
        compression: str | None = None,
        threads: int | None = None,
        session_id: str | None = None,
    ) -> BackupCreated:
        """Archive ``dir`` into ``archive_path`` (under the server's archive root), leaving out
        the ``excludes`` patterns and, with ``gitignore``, what git ignores there.
        ``compression`` is gzip, lz4 (the default) or zstd; ``threads`` the compressor's threads."""
        options = _params(format=compression, threads=threads)
        return await self._sb.call_as(
            BackupCreated,
            "backup",
            "create_archive",
            **_params(
                dir=dir,
                archivePath=archive_path,
                gitignore=gitignore,
                excludes=list(excludes) if excludes is not None else None,
                compression=options or None,
                sessionId=session_id,
            ),
        )

    async def restore_archive(self, dir: str, archive_path: str, *, session_id: str | None = None) -> BackupRestored:
        """Replace the contents of ``dir`` with the archive's tree (on failure ``dir`` is left as it was)."""
        return await self._sb.call_as(
            BackupRestored,
            "backup",
            "restore_archive",
            **_params(dir=dir, archivePath=archive_path, sessionId=session_id),
        )
