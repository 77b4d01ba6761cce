"""Backup parameters and results (contract section a8)."""

from __future__ import annotations

from sandbox_core.contract.models import Model


class BackupCompression(Model):
    """``compression`` of a create: the mksquashfs compressor and how many threads it uses."""

    format: str | None = None  # gzip | lz4 (default) | zstd
    threads: int | None = None  # at least 1 (default 8)


class BackupCreated(Model):
    """``create_archive``: the archive's size in bytes and its path (no timestamp, as upstream)."""

    success: bool
    size_bytes: int
    archive_path: str


class BackupRestored(Model):
    """``restore_archive``: the directory now holding the archive's tree."""

    success: bool
    dir: str
