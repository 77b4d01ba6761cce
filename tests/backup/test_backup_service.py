"""The backup service in this process: failures that must leave things as they were (a restore
stopped between its steps, a timeout, a caller that goes away), missing tools, symlinks that
point out of the allowed roots, concurrent operations on one archive or one directory, and an
archive root inside the backed-up directory.

Failures are real: a directory made immutable (``chattr +i``, which stops even root from
renaming it) or read-only, a truncated archive, a timeout of 1 ms. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest
from helpers_backup import Backups, MakeBackups

from sandbox_core.errors import SandboxError
from sandbox_services.backup import BackupSettings
from sandbox_services.spawn import spawned


def make_tree(root: Path, marker: str = "") -> None:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text(f"hello{marker}")
    (root / "sub" / "deep" / "b").write_bytes(os.urandom(1000))
    (root / "ünï cødé").write_text("u")
    (root / "link").symlink_to("a.txt")
    (root / "a.txt").chmod(0o640)


def snapshot(root: Path) -> list[tuple[str, str, int, bytes | str]]:
    out: list[tuple[str, str, int, bytes | str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                out.append((str(p.relative_to(root)), "l", st.st_mode, os.readlink(p)))
            elif p.is_dir():
                out.append((str(p.relative_to(root)), "d", st.st_mode, ""))
            else:
                out.append((str(p.relative_to(root)), "f", st.st_mode, p.read_bytes()))
    return sorted(out)


def archive_listing(archive: Path) -> str:
    return subprocess.run(["unsquashfs", "-l", str(archive)], capture_output=True, text=True, check=True).stdout


def chattr(flag: str, path: Path) -> bool:
    """Set or clear the immutable flag (root on a filesystem that has it); whether it worked."""
    if shutil.which("chattr") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False).returncode == 0


async def test_backup_round_trip_in_process(backups: Backups) -> None:
    make_tree(backups.data / "src")
    created = await backups.create(backups.data / "src", backups.archives / "a.sqsh", compression={"threads": 1})
    assert created.size_bytes == (backups.archives / "a.sqsh").stat().st_size
    await backups.restore(backups.data / "dst", backups.archives / "a.sqsh")
    assert snapshot(backups.data / "dst") == snapshot(backups.data / "src")
    assert sorted(os.listdir(backups.archives)) == ["a.sqsh"]  # no temporary file left


async def test_backup_restore_failing_at_the_swap_leaves_the_target(backups: Backups) -> None:
    make_tree(backups.data / "src")
    await backups.create(backups.data / "src", backups.archives / "a.sqsh")
    target = backups.data / "target"
    make_tree(target, marker="-old")
    before = snapshot(target)
    if chattr("+i", target):  # extraction succeeds, then the target cannot be renamed
        step = "put the restored tree in place"
    else:
        backups.data.chmod(0o555)  # (not root) the staging directory cannot be made
        step = "prepare the restore"
        if os.access(backups.data, os.W_OK):
            pytest.skip("cannot make a directory unwritable here")
    try:
        with pytest.raises(SandboxError) as info:
            await backups.restore(target, backups.archives / "a.sqsh")
    finally:
        chattr("-i", target)
        backups.data.chmod(0o755)
    assert info.value.code == "BACKUP_RESTORE_FAILED" and step in info.value.message
    assert snapshot(target) == before
    assert sorted(os.listdir(backups.data)) == ["src", "target"]  # the staging directory is gone


async def test_backup_restore_into_an_allowed_root_swaps_its_contents(backups: Backups) -> None:
    """The root itself (like a volume mounted at /workspace) cannot be renamed: its entries move."""
    src = backups.data / "src"
    make_tree(src)
    await backups.create(src, backups.archives / "a.sqsh")
    expected = snapshot(src)
    shutil.rmtree(src)
    (backups.data / "stale").write_text("x")
    inode = backups.data.stat().st_ino
    await backups.restore(backups.data, backups.archives / "a.sqsh")
    assert backups.data.stat().st_ino == inode
    assert snapshot(backups.data) == expected


async def test_backup_in_place_failure_moves_everything_back(backups: Backups) -> None:
    make_tree(backups.data / "src")
    await backups.create(backups.data / "src", backups.archives / "a.sqsh")
    for name in ("a", "b", "m", "z"):
        (backups.data / name).write_text(name)
    stuck = backups.data / "n-stuck"
    stuck.mkdir()
    if not chattr("+i", stuck):
        pytest.skip("needs root and chattr to make an entry that cannot be moved")
    before = snapshot(backups.data)
    try:
        with pytest.raises(SandboxError) as info:
            await backups.restore(backups.data, backups.archives / "a.sqsh")
    finally:
        chattr("-i", stuck)
    assert info.value.code == "BACKUP_RESTORE_FAILED"
    assert snapshot(backups.data) == before


async def test_backup_truncated_archive_restore_fails_cleanly(backups: Backups) -> None:
    make_tree(backups.data / "src")
    (backups.data / "src" / "noise").write_bytes(os.urandom(300_000))  # incompressible: cut in half
    archive = backups.archives / "a.sqsh"
    await backups.create(backups.data / "src", archive)
    with archive.open("r+b") as fh:
        fh.truncate(archive.stat().st_size // 2)
    with pytest.raises(SandboxError) as info:
        await backups.restore(backups.data / "new", archive)
    assert info.value.code == "BACKUP_RESTORE_FAILED" and info.value.details["exitCode"] != 0
    assert sorted(os.listdir(backups.data)) == ["src"]


async def test_backup_timeouts_end_the_tool_and_keep_the_old_state(backups: Backups, make_backups: MakeBackups) -> None:
    src = backups.data / "src"
    make_tree(src)
    for i in range(200):
        (src / f"f{i}").write_bytes(os.urandom(20_000))
    archive = backups.archives / "a.sqsh"
    await backups.create(src, archive)
    old_archive = archive.read_bytes()
    hasty = await make_backups(timeout_ms=1, kill_grace_ms=100)
    with pytest.raises(SandboxError) as info:
        await hasty.create(src, archive, compression={"format": "gzip", "threads": 1})
    assert info.value.code == "BACKUP_CREATE_FAILED" and "timed out" in info.value.message
    assert archive.read_bytes() == old_archive and sorted(os.listdir(backups.archives)) == ["a.sqsh"]
    make_tree(target := backups.data / "target", marker="-old")
    before = snapshot(target)
    with pytest.raises(SandboxError) as info:
        await hasty.restore(target, archive)
    assert info.value.code == "BACKUP_RESTORE_FAILED" and "timed out" in info.value.message
    assert snapshot(target) == before and sorted(os.listdir(backups.data)) == ["src", "target"]
    assert not spawned()  # every tool this process started has ended


async def test_backup_caller_that_goes_away_ends_the_tool(backups: Backups) -> None:
    src = backups.data / "src"
    src.mkdir()
    for i in range(400):
        (src / f"f{i}").write_bytes(os.urandom(50_000))
    task = asyncio.create_task(backups.create(src, backups.archives / "a.sqsh", compression={"format": "gzip"}))
    for _ in range(2000):
        if spawned():
            break
        await asyncio.sleep(0.005)
    assert spawned(), "mksquashfs did not start"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not spawned()
    assert os.listdir(backups.archives) == []  # the partial archive is gone


async def test_backup_missing_tools_are_named(make_backups: MakeBackups, tmp_path: Path) -> None:
    backups = await make_backups(mksquashfs=str(tmp_path / "no" / "mksquashfs"), unsquashfs="no-such-unsquashfs")
    (backups.data / "src").mkdir()
    with pytest.raises(SandboxError) as info:
        await backups.create(backups.data / "src", backups.archives / "a.sqsh")
    assert info.value.code == "BACKUP_CREATE_FAILED"
    assert f"mksquashfs binary not found at {tmp_path}/no/mksquashfs" in info.value.message
    assert info.value.details["binaryPath"] == f"{tmp_path}/no/mksquashfs"
    backups.archives.mkdir()
    (backups.archives / "a.sqsh").write_bytes(b"x")
    with pytest.raises(SandboxError) as info:
        await backups.restore(backups.data / "dst", backups.archives / "a.sqsh")
    assert info.value.code == "BACKUP_RESTORE_FAILED" and "unsquashfs binary not found" in info.value.message


async def test_backup_symlinks_out_of_the_roots_are_refused(backups: Backups, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (backups.data / "escape").symlink_to(outside)
    backups.archives.mkdir()
    (backups.archives / "out").symlink_to(outside)
    (backups.data / "src").mkdir()
    for call in (
        backups.create(backups.data / "escape", backups.archives / "a.sqsh"),
        backups.restore(backups.data / "escape", backups.archives / "a.sqsh"),
        backups.create(backups.data / "src", backups.archives / "out" / "a.sqsh"),
    ):
        with pytest.raises(SandboxError) as info:
            await call
        assert info.value.code == "INVALID_BACKUP_CONFIG" and "resolves to" in info.value.message
    assert os.listdir(outside) == []


async def test_backup_archive_root_inside_the_source(make_backups: MakeBackups, tmp_path: Path) -> None:
    data = tmp_path / "data"
    backups = await make_backups(archive_root=str(data / "archives"))
    make_tree(data / "src")
    await backups.create(data, data / "archives" / "all.sqsh")
    await backups.create(data, data / "archives" / "all.sqsh")  # the earlier archive is not archived either
    listing = archive_listing(data / "archives" / "all.sqsh")
    assert "squashfs-root/src/a.txt" in listing and ".sqsh" not in listing
    with pytest.raises(SandboxError) as info:  # a restore there would swap the archives away
        await backups.restore(data, data / "archives" / "all.sqsh")
    assert info.value.code == "INVALID_BACKUP_CONFIG" and info.value.details["field"] == "dir"


async def test_backup_concurrent_creates_of_one_archive(backups: Backups) -> None:
    """They run one at a time: every call succeeds and the archive is one of them, whole."""
    sources = []
    for i in range(5):
        make_tree(src := backups.data / f"src{i}", marker=str(i))
        sources.append(src)
    archive = backups.archives / "a.sqsh"
    results = await asyncio.gather(*(backups.create(src, archive) for src in sources))
    assert all(r.success for r in results)
    await backups.restore(backups.data / "dst", archive)
    assert snapshot(backups.data / "dst") in [snapshot(src) for src in sources]
    assert os.listdir(backups.archives) == ["a.sqsh"]


async def test_backup_concurrent_restores_into_one_directory(backups: Backups) -> None:
    archives = []
    for i in range(4):
        make_tree(src := backups.data / f"src{i}", marker=str(i))
        await backups.create(src, archive := backups.archives / f"a{i}.sqsh")
        archives.append(archive)
    target = backups.data / "target"
    results = await asyncio.gather(*(backups.restore(target, a) for a in archives), return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results), results
    assert snapshot(target) in [snapshot(backups.data / f"src{i}") for i in range(4)]
    assert sorted(os.listdir(backups.data)) == ["src0", "src1", "src2", "src3", "target"]


async def test_backup_restore_into_a_file_fails(backups: Backups) -> None:
    make_tree(backups.data / "src")
    await backups.create(backups.data / "src", backups.archives / "a.sqsh")
    (backups.data / "file").write_text("keep")
    with pytest.raises(SandboxError) as info:
        await backups.restore(backups.data / "file", backups.archives / "a.sqsh")
    assert info.value.code == "BACKUP_RESTORE_FAILED" and "not a directory" in info.value.message
    assert (backups.data / "file").read_text() == "keep"


async def test_backup_archive_path_that_is_a_directory(backups: Backups) -> None:
    (backups.data / "src").mkdir()
    (backups.archives / "d.sqsh").mkdir(parents=True)
    with pytest.raises(SandboxError) as info:
        await backups.create(backups.data / "src", backups.archives / "d.sqsh")
    assert info.value.code == "BACKUP_CREATE_FAILED" and "is a directory" in info.value.message
    with pytest.raises(SandboxError) as info:
        await backups.restore(backups.data / "dst", backups.archives / "d.sqsh")
    assert info.value.code == "BACKUP_NOT_FOUND"


async def test_backup_default_roots_include_the_workspace(tmp_path: Path) -> None:
    from sandbox_core.registry import ServiceRegistry, ServiceSpec
    from sandbox_services.backup import BackupService

    registry = ServiceRegistry(
        {"backup": ServiceSpec("backup", BackupService, BackupSettings)},
        settings={"backup": BackupSettings(archive_root=str(tmp_path / "arch"))},
        workspace="/srv/my-workspace",
    )
    await registry.start()
    try:
        service = registry.get("backup", BackupService)
        assert service.roots == ("/workspace", "/home", "/tmp", "/var/tmp", "/app", "/srv/my-workspace")
    finally:
        await registry.aclose()


@pytest.mark.parametrize(
    "settings",
    [
        {"archive_root": "relative"},
        {"archive_root": "/var/../etc"},
        {"allowed_dirs": ["rel"]},
        {"tool_memory_mb": 8},
        {"timeout_ms": 0},
        {"unknown": 1},
    ],
)
def test_backup_settings_are_checked(settings: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(settings, BackupSettings)


def unsquashfs(archive: Path, into: Path) -> int:
    """Extract with unsquashfs alone; its exit code."""
    return subprocess.run(
        ["unsquashfs", "-d", str(into), "-no-progress", "-quiet", str(archive)], check=False
    ).returncode


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


async def test_backup_damaged_data_block_is_refused(backups: Backups, tmp_path: Path) -> None:
    """squashfs checks none of its data: a flipped byte in a file's block extracts as a wrong byte
    with exit code 0. The archive's checksum catches it: the restore fails naming the archive
    and the target is left as it was."""
    src = backups.data / "src"
    make_tree(src)
    (src / "noise").write_bytes(os.urandom(300_000))  # incompressible: stored as it is
    archive = backups.archives / "a.sqsh"
    await backups.create(src, archive)
    flip_byte(archive, 10_000)  # in the first data block (the superblock is the first 96 bytes)
    plain = tmp_path / "plain"
    assert unsquashfs(archive, plain) == 0
    assert (plain / "noise").read_bytes() != (src / "noise").read_bytes()  # what squashfs alone lets through
    target = backups.data / "target"
    make_tree(target, marker="-old")
    before = snapshot(target)
    with pytest.raises(SandboxError) as info:
        await backups.restore(target, archive)
    assert info.value.code == "BACKUP_RESTORE_FAILED" and info.value.status == 500
    assert str(archive) in info.value.message and "damaged" in info.value.message
    assert info.value.details["archivePath"] == str(archive) and info.value.details["operation"] == "backup.restore"
    assert info.value.details["expectedSha256"] != info.value.details["actualSha256"]
    assert snapshot(target) == before
    assert sorted(os.listdir(backups.data)) == ["src", "target"]  # nothing extracted, nothing staged


async def test_backup_archive_is_squashfs_with_a_checksum_trailer(backups: Backups, make_backups: MakeBackups) -> None:
    """The archive stays a squashfs file the tools read as it is; an archive without the trailer
    (made elsewhere) is restored unchecked, or refused with ``require_checksum``."""
    src = backups.data / "src"
    make_tree(src)
    archive = backups.archives / "a.sqsh"
    created = await backups.create(src, archive)
    assert "squashfs-root/sub/deep/b" in archive_listing(archive)
    assert archive.read_bytes()[-64:].startswith(b"sandbox-sqsh-sum") and created.size_bytes % 4096 == 64
    foreign = backups.archives / "foreign.sqsh"  # as mksquashfs alone makes it
    foreign.write_bytes(archive.read_bytes()[:-64])
    await backups.restore(backups.data / "copy", foreign)
    assert snapshot(backups.data / "copy") == snapshot(src)
    strict = await make_backups(require_checksum=True)
    with pytest.raises(SandboxError) as info:
        await strict.restore(backups.data / "strict", foreign)
    assert (info.value.code, info.value.status) == ("INVALID_BACKUP_CONFIG", 400)
    assert info.value.details["field"] == "archivePath" and "require_checksum" in info.value.message
    assert not (backups.data / "strict").exists()
    await strict.restore(backups.data / "strict", archive)  # one with its checksum is fine
    assert snapshot(backups.data / "strict") == snapshot(src)


async def test_backup_paths_the_filesystem_refuses_are_4xx_naming_the_field(backups: Backups) -> None:
    """A name too long, a loop of symbolic links, a file where a directory must be, an archive
    that is a FIFO: 4xx errors naming ``dir`` or ``archivePath``, never a 500 (or a hang)."""
    data, archives = backups.data, backups.archives
    make_tree(data / "src")
    await backups.create(data / "src", archives / "ok.sqsh")
    (data / "file").write_text("x")
    (archives / "afile").write_text("x")
    (data / "loop1").symlink_to("loop2")
    (data / "loop2").symlink_to("loop1")
    os.mkfifo(archives / "fifo.sqsh")
    long = "x" * 300
    create, restore = backups.create, backups.restore
    cases = [
        (create, data / "src", archives / f"{long}.sqsh", "NAME_TOO_LONG", "archivePath"),
        (create, data / "src", archives / long / "a.sqsh", "NAME_TOO_LONG", "archivePath"),
        (create, data / long, archives / "b.sqsh", "NAME_TOO_LONG", "dir"),
        (create, data / "loop1" / "x", archives / "b.sqsh", "TOO_MANY_LINKS", "dir"),
        (create, data / "file" / "x", archives / "b.sqsh", "NOT_DIRECTORY", "dir"),
        (create, data / "file", archives / "b.sqsh", "NOT_DIRECTORY", "dir"),
        (create, data / "src", archives / "afile" / "b.sqsh", "NOT_DIRECTORY", "archivePath"),
        (restore, data / "dst", archives / f"{long}.sqsh", "NAME_TOO_LONG", "archivePath"),
        (restore, data / "dst", archives / "afile" / "b.sqsh", "NOT_DIRECTORY", "archivePath"),
        (restore, data / "dst", archives / "fifo.sqsh", "VALIDATION_FAILED", "archivePath"),
        (restore, data / long, archives / "ok.sqsh", "NAME_TOO_LONG", "dir"),
        (restore, data / long / "x", archives / "ok.sqsh", "NAME_TOO_LONG", "dir"),
        (restore, data / "file" / "x", archives / "ok.sqsh", "NOT_DIRECTORY", "dir"),
        (restore, data / "loop1" / "x", archives / "ok.sqsh", "TOO_MANY_LINKS", "dir"),
    ]
    for call, dir, archive, code, field in cases:
        with pytest.raises(SandboxError) as info:
            await asyncio.wait_for(call(dir, archive), 30)
        error = info.value
        assert (error.code, error.details.get("field")) == (code, field), error
        assert 400 <= error.status < 500 and error.details["operation"].startswith("backup."), error
    assert sorted(os.listdir(archives)) == ["afile", "fifo.sqsh", "ok.sqsh"]  # no temporary file left
    assert sorted(os.listdir(data)) == ["file", "loop1", "loop2", "src"]


async def test_backup_names_as_long_as_allowed_work(backups: Backups) -> None:
    """An archive or a directory whose name has 250 bytes (the temporary entries beside them get
    short names when theirs would be too long)."""
    name = "n" * 250
    make_tree(backups.data / "src")
    created = await backups.create(backups.data / "src", backups.archives / name)
    assert created.size_bytes == (backups.archives / name).stat().st_size
    await backups.restore(backups.data / name, backups.archives / name)
    assert snapshot(backups.data / name) == snapshot(backups.data / "src")
    assert sorted(os.listdir(backups.archives)) == [name]
