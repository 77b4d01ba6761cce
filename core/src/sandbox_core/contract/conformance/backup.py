"""Conformance of the backup service: a directory to a squashfs archive and back.

These tests need squashfs-tools in the sandbox, and an archive root a test may write to. The
shared server's archive root is the contract's /var/backups, which tests must not touch, so
the suite starts one server of its own per test class (every installed transport, the archive
root a fresh temporary directory) and connects to it over each transport in turn
(``backup_sandbox``). Trees are made and compared with shell commands in the sandbox.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import SESSIONLESS
from sandbox_core.errors import BackupError, SandboxError
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG

#: A tree with what a backup must keep: modes, symlinks (one dangling), an empty directory,
#: names with spaces and non-ASCII characters, a binary file.
MAKE_TREE = (
    "mkdir -p {d}/sub/deep '{d}/empty dir' '{d}/ünïcødé ✓' && printf 'hello\\n' > {d}/a.txt"
    " && printf x > {d}/sub/deep/b && head -c 200000 /dev/urandom > {d}/sub/bin.dat"
    " && printf '#!/bin/sh\\n' > {d}/run.sh && printf sp > '{d}/with space.txt'"
    " && printf u > '{d}/ünïcødé ✓/ファイル' && ln -s a.txt {d}/link && ln -s /nonexistent/x {d}/dangling"
    " && chmod 600 {d}/a.txt && chmod 755 {d}/run.sh && chmod 750 {d}/sub && chmod 711 {d}"
)

#: Every entry of a tree (path, type, mode, link target, size) and every file's checksum.
SNAPSHOT = (
    "cd {d} && stat -c 'root %a' . && find . -mindepth 1 -printf '%P|%y|%m|%l|%s\\n' | LC_ALL=C sort"
    " && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r md5sum"
)


async def sh(sandbox: Sandbox, command: str) -> str:
    result = await sandbox.exec(command, session_id=SESSIONLESS, timeout_ms=60_000)
    assert result.exit_code == 0, f"{command}: {result.stderr}"
    return result.stdout


async def snapshot(sandbox: Sandbox, d: str) -> str:
    return await sh(sandbox, SNAPSHOT.format(d=d))


class BackupSuite:
    @pytest.fixture(scope="class")
    @classmethod
    def backup_server(cls) -> Iterator[tuple[ServerProcess, str]]:
        """A server whose archive root is a fresh temporary directory: (server, archive root)."""
        if shutil.which("mksquashfs") is None or shutil.which("unsquashfs") is None:
            pytest.skip("squashfs-tools (mksquashfs, unsquashfs) are not installed")
        root = tempfile.mkdtemp(prefix="sandbox-conformance-backups-")
        services = {**TEST_CONFIG.get("services", {}), "backup": {"archive_root": root}}
        server = ServerProcess(config={**TEST_CONFIG, "services": services}).start()
        try:
            yield server, root
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)

    @pytest.fixture
    async def backup_sandbox(
        self, backup_server: tuple[ServerProcess, str], sandbox_transport: str
    ) -> AsyncIterator[Sandbox]:
        async with Sandbox(backup_server[0].url, transport=sandbox_transport) as sb:
            yield sb

    @pytest.fixture
    async def backup_paths(
        self, backup_server: tuple[ServerProcess, str], backup_sandbox: Sandbox
    ) -> AsyncIterator[tuple[str, str]]:
        """(a fresh directory in the workspace to put trees in, a fresh archive path)."""
        server, root = backup_server
        base = f"{server.workspace}/backup-{uuid.uuid4().hex[:10]}"
        await sh(backup_sandbox, f"mkdir -p {base}")
        try:
            yield base, f"{root}/{uuid.uuid4().hex[:10]}.sqsh"
        finally:
            await sh(backup_sandbox, f"chmod -R u+rwx {base} 2>/dev/null; rm -rf {base}")

    @pytest.mark.parametrize("compression", [None, "gzip", "lz4", "zstd"])
    async def test_backup_round_trip_keeps_the_tree(
        self, backup_sandbox: Sandbox, backup_paths: tuple[str, str], compression: str | None
    ) -> None:
        sb = backup_sandbox
        base, archive = backup_paths
        await sh(sb, MAKE_TREE.format(d=f"{base}/src"))
        created = await sb.backup.create_archive(f"{base}/src", archive, compression=compression, threads=2)
        assert created.success and created.archive_path == archive and created.size_bytes > 0
        size = await sh(sb, f"stat -c %s {archive}")
        assert int(size) == created.size_bytes
        restored = await sb.backup.restore_archive(f"{base}/dst", archive)
        assert restored.success and restored.dir == f"{base}/dst"
        assert await snapshot(sb, f"{base}/dst") == await snapshot(sb, f"{base}/src")

    async def test_backup_restore_replaces_what_was_there(
        self, backup_sandbox: Sandbox, backup_paths: tuple[str, str]
    ) -> None:
        sb = backup_sandbox
        base, archive = backup_paths
        await sh(sb, MAKE_TREE.format(d=f"{base}/src"))
        await sb.backup.create_archive(f"{base}/src", archive)
        await sh(sb, f"printf changed > {base}/src/a.txt && touch {base}/src/new && rm -r {base}/src/sub")
        await sb.backup.restore_archive(f"{base}/src", archive)
        await sb.backup.restore_archive(f"{base}/copy", archive)
        assert await sh(sb, f"cat {base}/src/a.txt; test -e {base}/src/new && echo new; ls {base}/src/sub") == (
            "hello\nbin.dat\ndeep\n"
        )
        assert await snapshot(sb, f"{base}/src") == await snapshot(sb, f"{base}/copy")
        leftovers = await sh(sb, f"ls -A {base}")
        assert sorted(leftovers.split()) == ["copy", "src"]  # no staging directory left behind

    async def test_backup_excludes(self, backup_sandbox: Sandbox, backup_paths: tuple[str, str]) -> None:
        sb = backup_sandbox
        base, archive = backup_paths
        d = f"{base}/src"
        await sh(
            sb,
            f"mkdir -p {d}/node_modules/x {d}/app/node_modules {d}/dist/a {d}/keep/dist2 {d}/logs"
            f" && touch {d}/node_modules/x/f {d}/app/node_modules/g {d}/dist/a/h {d}/keep/dist2/i"
            f" {d}/logs/a.log {d}/top.log {d}/keep.txt",
        )
        await sb.backup.create_archive(d, archive, excludes=["**/node_modules/**", "dist/", "*.log"])
        await sb.backup.restore_archive(f"{base}/dst", archive)
        listing = await sh(sb, f"cd {base}/dst && find . -mindepth 1 | LC_ALL=C sort")
        assert listing.split() == ["./app", "./keep", "./keep.txt", "./keep/dist2", "./keep/dist2/i", "./logs"]

    async def test_backup_gitignore(self, backup_sandbox: Sandbox, backup_paths: tuple[str, str]) -> None:
        sb = backup_sandbox
        base, archive = backup_paths
        d = f"{base}/repo"
        await sh(
            sb,
            f"mkdir -p {d}/build/deep {d}/src && cd {d} && git init -q ."
            " && printf 'build/\\n*.tmp\\n[ab]*.o\\nspecial\\\\*\\n' > .gitignore && touch build/deep/x src/main.c"
            " src/t.tmp 'src/with space.tmp' src/a1.o src/c.o 'src/*?.c' 'src/special*' src/special-kept",
        )
        await sb.backup.create_archive(d, archive, gitignore=True)
        await sb.backup.restore_archive(f"{base}/dst", archive)
        listing = await sh(sb, f"cd {base}/dst && find . -mindepth 1 -not -path './.git/*' | LC_ALL=C sort")
        assert listing.splitlines() == [
            "./.git",
            "./.gitignore",
            "./src",
            "./src/*?.c",
            "./src/c.o",
            "./src/main.c",
            "./src/special-kept",
        ]
        await sb.backup.create_archive(d, archive)  # without gitignore nothing is left out
        await sb.backup.restore_archive(f"{base}/all", archive)
        assert await sh(sb, f"cd {base}/all && ls build/deep/x 'src/special*'") == "build/deep/x\nsrc/special*\n"

    async def test_backup_archive_of_an_archive_path_replaced_whole(
        self, backup_sandbox: Sandbox, backup_paths: tuple[str, str]
    ) -> None:
        sb = backup_sandbox
        base, archive = backup_paths
        await sh(sb, f"mkdir -p {base}/one {base}/two && echo 1 > {base}/one/f && echo 2 > {base}/two/g")
        await sb.backup.create_archive(f"{base}/one", archive)
        await sb.backup.create_archive(f"{base}/two", archive)  # replaces, never appends
        await sb.backup.restore_archive(f"{base}/dst", archive)
        assert await sh(sb, f"ls {base}/dst") == "g\n"

    # ---- errors ---------------------------------------------------------------------------------

    async def test_backup_missing_archive_is_not_found(
        self, backup_sandbox: Sandbox, backup_paths: tuple[str, str]
    ) -> None:
        base, archive = backup_paths
        with pytest.raises(BackupError) as info:
            await backup_sandbox.backup.restore_archive(f"{base}/dst", archive)
        assert (info.value.code, info.value.status) == ("BACKUP_NOT_FOUND", 404)
        assert info.value.details["operation"] == "backup.restore"
        assert await sh(backup_sandbox, f"test -e {base}/dst && echo there || echo absent") == "absent\n"

    async def test_backup_corrupt_archive_leaves_the_target_as_it_was(
        self, backup_sandbox: Sandbox, backup_paths: tuple[str, str]
    ) -> None:
        sb = backup_sandbox
        base, archive = backup_paths
        await sh(sb, MAKE_TREE.format(d=f"{base}/src"))
        await sb.backup.create_archive(f"{base}/src", archive)
        await sh(sb, MAKE_TREE.format(d=f"{base}/target") + f" && echo mine > {base}/target/only-here")
        before = await snapshot(sb, f"{base}/target")
        for damage in (f"truncate -s 5000 {archive}", f"head -c 4096 /dev/urandom > {archive}"):
            await sh(sb, damage)
            with pytest.raises(BackupError) as info:
                await sb.backup.restore_archive(f"{base}/target", archive)
            assert (info.value.code, info.value.status) == ("BACKUP_RESTORE_FAILED", 500)
            assert "Failed to extract" in info.value.message and len(info.value.message) < 4000
            assert await snapshot(sb, f"{base}/target") == before
            assert sorted((await sh(sb, f"ls -A {base}")).split()) == ["src", "target"]

    async def test_backup_damaged_archive_is_refused_by_its_checksum(
        self, backup_sandbox: Sandbox, backup_paths: tuple[str, str]
    ) -> None:
        """One byte changed in a data block (which squashfs itself would extract as a wrong
        byte): the restore fails naming the archive, and the target is left as it was."""
        sb = backup_sandbox
        base, archive = backup_paths
        await sh(sb, MAKE_TREE.format(d=f"{base}/src"))
        await sb.backup.create_archive(f"{base}/src", archive)
        await sh(sb, MAKE_TREE.format(d=f"{base}/target"))
        before = await snapshot(sb, f"{base}/target")
        # bin.dat (200 kB of random bytes, stored as they are) has the archive's first data block
        # (the byte there plus one, so that it changes whatever the random byte was)
        await sh(
            sb,
            f"b=$(od -An -tu1 -j10000 -N1 {archive}); "
            f"printf \"$(printf '\\\\%03o' $(( (b + 1) % 256 )))\" "
            f"| dd of={archive} bs=1 seek=10000 conv=notrunc status=none",
        )
        with pytest.raises(BackupError) as info:
            await sb.backup.restore_archive(f"{base}/target", archive)
        assert (info.value.code, info.value.status) == ("BACKUP_RESTORE_FAILED", 500)
        assert archive in info.value.message and "checksum" in info.value.message
        assert info.value.details["archivePath"] == archive
        assert await snapshot(sb, f"{base}/target") == before
        assert sorted((await sh(sb, f"ls -A {base}")).split()) == ["src", "target"]

    async def test_backup_paths_the_filesystem_refuses_name_the_field(
        self, backup_sandbox: Sandbox, backup_paths: tuple[str, str]
    ) -> None:
        """A name longer than the filesystem allows (valid as a path) is 400 NAME_TOO_LONG naming
        the field, and a file where a directory must be 400 NOT_DIRECTORY: never a 500."""
        sb = backup_sandbox
        base, archive = backup_paths
        await sh(sb, f"mkdir -p {base}/src && touch {base}/file")
        long = "x" * 300
        root = archive.rsplit("/", 1)[0]
        for call, code, field in (
            (lambda: sb.backup.create_archive(f"{base}/src", f"{root}/{long}.sqsh"), "NAME_TOO_LONG", "archivePath"),
            (lambda: sb.backup.create_archive(f"{base}/{long}", archive), "NAME_TOO_LONG", "dir"),
            (lambda: sb.backup.create_archive(f"{base}/file/x", archive), "NOT_DIRECTORY", "dir"),
            (lambda: sb.backup.restore_archive(f"{base}/dst", f"{root}/{long}.sqsh"), "NAME_TOO_LONG", "archivePath"),
        ):
            with pytest.raises(SandboxError) as info:
                await call()
            assert (info.value.code, info.value.status, info.value.details.get("field")) == (code, 400, field)
        assert sorted((await sh(sb, f"ls -A {base}")).split()) == ["file", "src"]

    async def test_backup_source_must_exist(self, backup_sandbox: Sandbox, backup_paths: tuple[str, str]) -> None:
        base, archive = backup_paths
        with pytest.raises(BackupError) as info:
            await backup_sandbox.backup.create_archive(f"{base}/nothing", archive)
        assert (info.value.code, info.value.status) == ("BACKUP_CREATE_FAILED", 500)
        assert "does not exist" in info.value.message

    @pytest.mark.parametrize(
        ("dir", "archive", "field"),
        [
            ("relative/dir", None, "dir"),
            ("/etc", None, "dir"),
            ("/", None, "dir"),
            ("/tmp/../etc", None, "dir"),
            ("/tmp/a\x00b", None, "dir"),
            ("/tmp/" + "x" * 5000, None, "dir"),
            (None, "/etc/passwd.sqsh", "archivePath"),
            (None, "/var/backups-evil/x.sqsh", "archivePath"),
            (None, "ROOT/../x.sqsh", "archivePath"),
            (None, "ROOT", "archivePath"),
            (None, "relative.sqsh", "archivePath"),
        ],
    )
    async def test_backup_invalid_paths(
        self,
        backup_sandbox: Sandbox,
        backup_server: tuple[ServerProcess, str],
        backup_paths: tuple[str, str],
        dir: str | None,
        archive: str | None,
        field: str,
    ) -> None:
        base, good_archive = backup_paths
        root = backup_server[1]
        dir = dir or base
        archive = archive.replace("ROOT", root) if archive else good_archive
        for call, op in (
            (backup_sandbox.backup.create_archive(dir, archive), "backup.create"),
            (backup_sandbox.backup.restore_archive(dir, archive), "backup.restore"),
        ):
            with pytest.raises(SandboxError) as info:
                await call
            assert (info.value.code, info.value.status) == ("INVALID_BACKUP_CONFIG", 400), info.value
            assert info.value.details["field"] == field and info.value.details["operation"] == op

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"compression": "xz"}, "compression.format"),
            ({"compression": "gzip; rm -rf /"}, "compression.format"),
            ({"threads": 0}, "compression.threads"),
            ({"threads": -3}, "compression.threads"),
            ({"excludes": ["**"]}, "excludes[0]"),
            ({"excludes": ["ok", "/abs"]}, "excludes[1]"),
            ({"excludes": ["a/../b"]}, "excludes[0]"),
            ({"excludes": ["line\nbreak"]}, "excludes[0]"),
            ({"excludes": ["*"]}, "excludes[0]"),
        ],
    )
    async def test_backup_invalid_options(
        self, backup_sandbox: Sandbox, backup_paths: tuple[str, str], options: dict[str, Any], field: str
    ) -> None:
        base, archive = backup_paths
        with pytest.raises(SandboxError) as info:
            await backup_sandbox.backup.create_archive(base, archive, **options)
        assert (info.value.code, info.value.status) == ("INVALID_BACKUP_CONFIG", 400), info.value
        assert info.value.details["field"] == field
        assert await sh(backup_sandbox, f"test -e {archive} && echo there || echo absent") == "absent\n"
