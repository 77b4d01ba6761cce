"""Fixtures of the backup tests: the service in this process on a real registry, with a
temporary archive root and a temporary allowed directory root (never /var/backups)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_backup import Backups, MakeBackups

from sandbox_core.registry import ServiceRegistry, ServiceSpec
from sandbox_services.backup import BackupService, BackupSettings

#: Without squashfs-tools only the tests that need no tool run (the patterns).
collect_ignore = (
    ["test_backup_service.py", "test_backup_http.py"]
    if shutil.which("mksquashfs") is None or shutil.which("unsquashfs") is None
    else []
)


@pytest.fixture
def unfreeze(tmp_path: Path) -> Iterator[None]:
    """After the test, clear any immutable flag a test set, so tmp_path can be removed."""
    yield
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-R", "-i", str(tmp_path)], capture_output=True, check=False, timeout=60)


@pytest.fixture
async def make_backups(tmp_path: Path, unfreeze: None) -> AsyncIterator[MakeBackups]:
    """Start a backup service with settings (``archive_root`` and ``allowed_dirs`` default to
    ``tmp_path/archives`` and ``tmp_path/data``); each call starts one more, sharing the roots."""
    started: list[ServiceRegistry] = []
    data, archives = tmp_path / "data", tmp_path / "archives"
    data.mkdir(exist_ok=True)

    async def make(**settings: Any) -> Backups:
        settings.setdefault("archive_root", str(archives))
        settings.setdefault("allowed_dirs", [str(data)])
        registry = ServiceRegistry(
            {"backup": ServiceSpec("backup", BackupService, BackupSettings)},
            settings={"backup": BackupSettings(**settings)},
            workspace=str(data),
        )
        await registry.start()
        started.append(registry)
        return Backups(registry, data, archives)

    try:
        yield make
    finally:
        for registry in started:
            await registry.aclose()


@pytest.fixture
async def backups(make_backups: MakeBackups) -> Backups:
    return await make_backups()
