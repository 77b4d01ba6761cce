"""The Kubernetes manifests run the server with ``readOnlyRootFilesystem: true`` and writable
volumes at /workspace, /tmp, /var/backups and HOME. This runs the real server that way (in a
mount namespace of its own: the root filesystem read-only, /tmp and /var/backups writable, the
workspace and HOME in /tmp) and uses every service that writes something: commands, files,
background processes, Python and JavaScript contexts, git and backups. A service that starts
writing somewhere else fails here before it fails in a cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_core import Sandbox
from sandbox_core.testing import ServerProcess

#: The pod's writable volumes, as far as they are not the workspace or HOME (both put in /tmp
#: here, as the host has neither /workspace nor /home/sandbox): /tmp stays writable (a bind mount
#: of itself), /var/backups becomes an empty tmpfs; then the root filesystem is made read-only.
MOUNTS = """
set -e
mount --bind /tmp /tmp
mount -t tmpfs -o mode=0777 sandbox-backups /var/backups
mount -o remount,bind,ro /
exec "$@"
"""


def read_only_root() -> list[str]:
    """The command prefix that runs a command with that filesystem (root, or a user namespace)."""
    return ["unshare", "-m" if os.geteuid() == 0 else "-rm", "--propagation", "private", "sh", "-c", MOUNTS, "sh"]


def _unavailable() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare"
    if not os.path.isdir("/var/backups"):
        return "no /var/backups to mount a volume on"
    probe = subprocess.run(
        [*read_only_root(), "sh", "-c", "! touch /.sandbox-ro-probe 2>/dev/null && touch /tmp"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return None if probe.returncode == 0 else f"no mount namespace here: {probe.stderr.decode(errors='replace')}"


pytestmark = pytest.mark.skipif(bool(reason := _unavailable()), reason=reason or "")


class ReadOnlyRootServer(ServerProcess):
    def command(self, ready_fd: int) -> list[str]:
        return [*read_only_root(), *super().command(ready_fd)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ReadOnlyRootServer]:
    home = tmp_path / "home"
    home.mkdir()
    with ReadOnlyRootServer(env={"HOME": str(home)}, subreaper=True) as srv:
        yield srv


async def test_every_service_works_on_a_read_only_root(server: ReadOnlyRootServer) -> None:
    ws = server.workspace
    async with Sandbox(server.url, transport="http") as sb:
        probe = await sb.exec("touch /.sandbox-ro-probe")
        assert probe.exit_code != 0 and "Read-only file system" in probe.stderr, probe

        out = await sb.exec(f"echo hi > {ws}/a && cat {ws}/a && echo kept > $HOME/.probe && cat $HOME/.probe")
        assert (out.exit_code, out.stdout) == (0, "hi\nkept"), out

        await sb.files.write(f"{ws}/f.txt", "text")
        assert (await sb.files.read(f"{ws}/f.txt")).content == "text"

        await sb.processes.start("echo from-the-background", process_id="bg")
        logs = [ev async for ev in sb.processes.stream_logs("bg", offset=0)]
        assert any("from-the-background" in str(getattr(ev, "data", "")) for ev in logs), logs

        kinds = ["python"] + (["javascript"] if shutil.which("node") else [])
        for kind in kinds:
            ctx = await sb.interpreter.create_context(kind, cwd=ws)
            code = "print(6 * 7)" if kind == "python" else "console.log(6 * 7)"
            events = [ev async for ev in sb.interpreter.run_code(code, context_id=ctx.context_id, timeout_ms=60_000)]
            assert any(getattr(ev, "text", None) == "42\n" for ev in events), (kind, events)
            await sb.interpreter.delete_context(ctx.context_id)

        made = await sb.exec(
            f"git init -q {ws}/repo && git -C {ws}/repo -c user.email=a@b -c user.name=a commit -q --allow-empty -m x"
        )
        assert made.exit_code == 0, made
        await sb.git.checkout(f"{ws}/repo", target_dir=f"{ws}/clone")
        assert (await sb.exec(f"git -C {ws}/clone log --format=%s")).stdout == "x"

        if shutil.which("mksquashfs") and shutil.which("unsquashfs"):
            await sb.files.write(f"{ws}/repo/kept.txt", "kept")
            created = await sb.backup.create_archive(f"{ws}/repo", "/var/backups/repo.sqfs")
            assert created.success
            await sb.files.write(f"{ws}/repo/kept.txt", "changed")
            await sb.backup.restore_archive(f"{ws}/repo", "/var/backups/repo.sqfs")
            assert (await sb.files.read(f"{ws}/repo/kept.txt")).content == "kept"
    assert server.stop() == 0
