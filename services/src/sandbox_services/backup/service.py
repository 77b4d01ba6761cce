"""The backup service: a directory to a squashfs archive and back (contract section a8).

``create_archive`` runs ``mksquashfs <dir> <tmp> -comp <fmt> -processors <n> -no-progress
-quiet -noappend -mem <M> [-wildcards -ef <excludes>]`` into a temporary file beside the
archive and renames it into place: a failed or cancelled backup leaves any earlier archive of
that path whole, and a restore never reads half an archive. The exclude list lives in an
unnamed temporary file (passed as ``/proc/self/fd/N``), so it never lands in the backup.

``restore_archive`` has no FUSE here: it extracts with ``unsquashfs`` into a temporary sibling
of ``dir`` and swaps that into place (:mod:`.swap`): in one step where the filesystem can
exchange two directories, entry by entry for a mount point or an allowed root itself. A
restore that fails (a corrupt or truncated archive, a full disk, a timeout, a caller that went
away) removes what it extracted and leaves ``dir`` as it was.

Every archive made here carries a checksum (:mod:`.checksum`: a trailer after the squashfs
image), checked before a restore extracts anything: a damaged archive fails with
``BACKUP_RESTORE_FAILED`` naming it. An archive without one (made elsewhere) is restored
unchecked, with a warning in the log, unless ``require_checksum`` is set (then it is refused).
The restore extracts from the very file it checked (its descriptor, passed to ``unsquashfs``).

The server reads an archive only to hash it, never to parse it: the tools work on files, their
output is kept to a bound, they run as argument lists in a process group of their own, and the
``timeout_ms`` setting ends that group (and the hashing). A path the filesystem refuses as
written (a name too long, a loop of symbolic links, a component that is a file) is the files
service's 4xx error naming the field (``dir`` or ``archivePath``). Operations on the same
archive or the same directory run one at a time, in the order they came (a lock per real
path); others run in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, TypeVar

import msgspec

from sandbox_core.contract.models.backup import BackupCompression, BackupCreated, BackupRestored
from sandbox_core.errors import ErrorCode, SandboxError
from sandbox_core.metrics import BACKUPS, BACKUPS_RUNNING, Reading
from sandbox_core.registry import ServiceContext, operation

from ..files.fdio import Handle, open_read
from ..offload import run_sync
from ..params import NonNegativeInt, PositiveMs
from ..sessions import check_session_id
from . import checksum, patterns
from .paths import (
    UPSTREAM_DIR_ROOTS,
    check_archive,
    check_dir,
    invalid,
    is_mount_point,
    path_error,
    sibling_name,
    within,
)
from .swap import exchange, remove_tree, swap_contents
from .tools import ToolResult, find_tool, run_lines, run_tool

CREATE = "backup.create"
RESTORE = "backup.restore"
FORMATS = ("gzip", "lz4", "zstd")
DEFAULT_FORMAT = "lz4"
DEFAULT_THREADS = 8
MAX_THREADS = 1024
MAX_EXCLUDES = 10_000
#: How much of a tool's output goes into an error's message (the details hold up to 8 KiB).
MESSAGE_OUTPUT = 2000
DETAILS_OUTPUT = 8192
T = TypeVar("T")
_UNSUPPORTED = re.compile(r'Compressor "([^"]*)" is not supported')
_AVAILABLE = re.compile(r"^\s+(\w+)(?: \(default\))?\s*$", re.MULTILINE)


class BackupSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.backup]``"""

    #: where archives live: every ``archivePath`` must be a file below it (upstream: /var/backups)
    archive_root: str = "/var/backups"
    #: the roots ``dir`` may be under; None: the contract's five and the server's workspace
    allowed_dirs: list[str] | None = None
    #: the tools: a path, or a name looked up on PATH
    mksquashfs: str = "mksquashfs"
    unsquashfs: str = "unsquashfs"
    git: str = "git"
    #: a create or a restore that runs longer is ended (its tool's process group killed)
    timeout_ms: PositiveMs = 1_800_000
    kill_grace_ms: NonNegativeInt = 5000  # SIGTERM to SIGKILL at the timeout
    #: memory the tools may use for their caches and queues (mksquashfs -mem, unsquashfs -da/-fr)
    tool_memory_mb: int = 256
    #: refuse to restore an archive that carries no checksum (one made elsewhere); else it is
    #: restored unchecked, with a warning in the log
    require_checksum: bool = False

    def __post_init__(self) -> None:
        for name, value in [
            ("archive_root", self.archive_root),
            *(("allowed_dirs", d) for d in self.allowed_dirs or ()),
        ]:
            if not value.startswith("/") or "\x00" in value or ".." in value:
                raise ValueError(f"{name}: {value!r} must be an absolute path without '..'")
        if not 16 <= self.tool_memory_mb <= 1 << 20:
            raise ValueError("tool_memory_mb must be between 16 and 1048576")


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def unsupported_compressor(output: str) -> tuple[str, list[str]] | None:
    """(the compressor, the ones available) when mksquashfs said it was built without it."""
    m = _UNSUPPORTED.search(output)
    if m is None:
        return None
    tail = output[m.end() :]
    return m.group(1), _AVAILABLE.findall(tail.split("available:", 1)[1]) if "available:" in tail else []


class _Locks:
    """One FIFO lock per key; a lock lives while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, *keys: str) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(set(keys)):  # one order for everyone: no deadlock
                lock, users = self._locks.get(key, (asyncio.Lock(), 0))
                self._locks[key] = (lock, users + 1)
                stack.callback(self._release, key)
                await stack.enter_async_context(lock)
            yield

    def _release(self, key: str) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)


class BackupService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.log = ctx.log
        settings: BackupSettings = ctx.settings
        self.settings = settings
        self.archive_root = os.path.normpath(settings.archive_root)
        if settings.allowed_dirs is not None:
            roots = [os.path.normpath(d) for d in settings.allowed_dirs]
        else:
            roots = [*UPSTREAM_DIR_ROOTS, os.path.normpath(ctx.workspace)]
        self.roots = tuple(dict.fromkeys(roots))
        self.real_archive_root = os.path.realpath(self.archive_root)
        self.time_limit = settings.timeout_ms / 1000
        self.grace = settings.kill_grace_ms / 1000
        self._locks = _Locks()
        #: backups running and done (by outcome), for the metrics
        self.running = dict.fromkeys((CREATE, RESTORE), 0)
        self.done = {(op, outcome): 0 for op in (CREATE, RESTORE) for outcome in ("ok", "failed")}
        ctx.registry.metrics.source(BACKUPS_RUNNING, lambda: [((op[7:],), n) for op, n in self.running.items()])
        ctx.registry.metrics.source(BACKUPS, self._done)

    def _done(self) -> Reading:
        return [((op[7:], outcome), n) for (op, outcome), n in self.done.items()]

    @contextlib.asynccontextmanager
    async def _tally(self, operation: str) -> AsyncIterator[None]:
        """Count a backup (``operation``: CREATE or RESTORE) while it runs and once it is done."""
        self.running[operation] += 1
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        finally:
            self.running[operation] -= 1
            self.done[operation, outcome] += 1

    # create -----------------------------------------------------------------------------------

    def _compression(self, compression: BackupCompression | None) -> tuple[str, int]:
        fmt = (compression.format if compression else None) or DEFAULT_FORMAT
        threads = compression.threads if compression and compression.threads is not None else DEFAULT_THREADS
        if fmt not in FORMATS:
            raise invalid(
                f"Invalid compression algorithm: {fmt[:100]}. Expected one of: {', '.join(FORMATS)}",
                CREATE,
                "compression.format",
                compression=fmt[:100],
            )
        if not 1 <= threads <= MAX_THREADS:
            raise invalid(
                f"Invalid compression threads: {threads}. Expected an integer from 1 to {MAX_THREADS}",
                CREATE,
                "compression.threads",
            )
        return fmt, threads

    def _excludes(self, excludes: list[str]) -> list[str]:
        if len(excludes) > MAX_EXCLUDES:
            raise invalid(f"At most {MAX_EXCLUDES} exclude patterns, got {len(excludes)}", CREATE, "excludes")
        lines: list[str] = []
        for i, pattern in enumerate(excludes):
            reason = patterns.pattern_error(pattern)
            if reason is not None:
                raise invalid(
                    f"Invalid exclude pattern {pattern[:200]!r}: {reason}",
                    CREATE,
                    f"excludes[{i}]",
                    pattern=pattern[:200],
                )
            lines += patterns.expand(pattern)
        return list(dict.fromkeys(lines))

    def _tool(self, name: str, path: str, code: ErrorCode, operation: str, details: dict[str, Any]) -> str:
        found = find_tool(path)
        if found is None:
            where = f"at {path}" if os.sep in path else f"on PATH ({path})"
            raise SandboxError(
                code,
                f"{name} binary not found {where}. Ensure squashfs-tools is installed.",
                {**details, "binaryPath": path, "operation": operation},
            )
        return found

    async def _gitignored(self, source: str, out: IO[bytes]) -> int:
        """Write the exclude lines of the paths git ignores in ``source`` to ``out``; how many."""
        git = find_tool(self.settings.git)
        if git is None:
            self.log.warning("backup.gitignore_skipped", reason="git is not installed", dir=source)
            return 0
        base = [git, "-c", "core.fsmonitor=false", "-C", source]
        probe = await run_tool(
            [*base, "rev-parse", "--is-inside-work-tree"], time_limit=self.time_limit, grace=self.grace
        )
        if probe.exit_code != 0 or probe.output != "true":
            self.log.debug("backup.not_a_git_repository", dir=source)
            return 0
        count = 0
        skipped = 0

        def line(raw: bytes) -> None:
            nonlocal count, skipped
            entry = patterns.literal(raw.decode("utf-8", errors="surrogateescape"))
            if entry is None:
                skipped += 1
                return
            out.write(entry.encode("utf-8", errors="surrogateescape") + b"\n")
            count += 1

        # --directory: an ignored directory is one line, not one per file in it
        result = await run_lines(
            [*base, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory", "--", "."],
            line,
            time_limit=self.time_limit,
            grace=self.grace,
            separator=b"\x00",
        )
        if result.exit_code != 0:
            self.log.warning("backup.gitignore_failed", dir=source, output=result.output[:500])
        if skipped:
            self.log.warning("backup.gitignore_unrepresentable", dir=source, count=skipped)
        return count

    def _prepare_create(self, source: str, archive: str, dir: str, details: dict[str, Any]) -> tuple[str, str]:
        """(mksquashfs, the temporary archive path) once the source and the archive's directory
        are there."""
        try:
            st = os.stat(source)
        except FileNotFoundError:
            raise self._failed(CREATE, f"Source directory does not exist: {dir}", details) from None
        except OSError as exc:
            raise self._path_failed(exc, dir, "dir", CREATE, details, "Cannot read the source directory") from None
        if not stat.S_ISDIR(st.st_mode):
            raise self._path_failed(
                OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), source), dir, "dir", CREATE, details, ""
            )
        tool = self._tool("mksquashfs", self.settings.mksquashfs, ErrorCode.BACKUP_CREATE_FAILED, CREATE, details)
        parent = os.path.dirname(archive)
        archive_path = details["archivePath"]
        try:
            os.makedirs(parent, exist_ok=True)
            st = os.lstat(archive)
        except FileNotFoundError:
            pass  # a new archive
        except OSError as exc:
            raise self._path_failed(
                exc, archive_path, "archivePath", CREATE, details, f"Failed to create the backup directory {parent}"
            ) from None
        else:
            if stat.S_ISDIR(st.st_mode):
                raise self._failed(CREATE, f"archivePath is a directory: {archive_path}", details)
        return tool, os.path.join(parent, sibling_name(os.path.basename(archive), f"tmp-{uuid.uuid4().hex[:12]}"))

    def _path_failed(
        self, exc: OSError, path: str, field: str, operation: str, details: dict[str, Any], what: str
    ) -> SandboxError:
        """The files service's error for an OSError the caller's path caused, else the
        operation's own failure, ``what`` and the system's reason."""
        mapped = path_error(exc, path, field, operation, details)
        if mapped is not None:
            return mapped
        return self._failed(operation, f"{what}: {exc.strerror or exc}", details)

    async def _blocking(self, func: Callable[[threading.Event], T], operation: str, details: dict[str, Any]) -> T:
        """``func(stop)`` in a worker thread, within the time limit; ``stop`` is set when the
        caller goes away or the time is up, and ``func`` then stops at its next chunk."""
        stop = threading.Event()
        try:
            async with asyncio.timeout(self.time_limit):
                return await run_sync(func, stop)
        except TimeoutError:
            raise self._failed(
                operation,
                f"Checksumming the archive timed out after {self.settings.timeout_ms} ms",
                {**details, "timeoutMs": self.settings.timeout_ms},
            ) from None
        finally:
            stop.set()

    @operation
    async def create_archive(
        self,
        dir: str,
        archive_path: str,
        gitignore: bool = False,
        excludes: list[str] | None = None,
        compression: BackupCompression | None = None,
        session_id: str | None = None,
    ) -> BackupCreated:
        """Archive ``dir`` into the squashfs file ``archive_path`` (replacing it), with its checksum."""
        check_session_id(session_id)
        source = check_dir(dir, self.roots, CREATE)
        archive = check_archive(archive_path, self.archive_root, CREATE)
        fmt, threads = self._compression(compression)
        user_lines = self._excludes(excludes or [])
        details: dict[str, Any] = {"dir": dir, "archivePath": archive_path}
        started = time.monotonic()
        async with self._tally(CREATE), self._locks.hold(archive, source):
            mksquashfs, tmp = await run_sync(self._prepare_create, source, archive, dir, details)
            try:
                with tempfile.TemporaryFile(dir=os.path.dirname(tmp)) as exclude_file:
                    count = self._write_excludes(exclude_file, user_lines, source, (tmp, archive))
                    if gitignore:
                        count += await self._gitignored(source, exclude_file)
                    exclude_file.flush()
                    processors = str(min(threads, os.cpu_count() or 1))
                    argv = [mksquashfs, source, tmp, "-comp", fmt, "-processors", processors, "-no-progress"]
                    argv += ["-quiet", "-noappend", "-mem", f"{self.settings.tool_memory_mb}M"]
                    fds: tuple[int, ...] = ()
                    if count:
                        fds = (exclude_file.fileno(),)
                        argv += ["-wildcards", "-ef", f"/proc/self/fd/{fds[0]}"]
                    result = await run_tool(argv, time_limit=self.time_limit, grace=self.grace, pass_fds=fds)
                self._check_create(result, fmt, details)
                size = await self._blocking(lambda stop: checksum.append_trailer(tmp, stop), CREATE, details)
                os.replace(tmp, archive)
            except OSError as exc:
                raise self._path_failed(
                    exc, archive_path, "archivePath", CREATE, details, "Failed to create squashfs archive"
                ) from None
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self.log.info(
            "backup.created",
            dir=source,
            archive_path=archive,
            size_bytes=size,
            excludes=count,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return BackupCreated(success=True, size_bytes=size, archive_path=archive_path)

    def _write_excludes(self, out: IO[bytes], lines: list[str], source: str, outputs: tuple[str, ...]) -> int:
        """The user's lines, and the archive files when they are inside the source (mksquashfs
        would otherwise archive its own output)."""
        for path in outputs:
            if within(path, source) and path != source:
                entry = patterns.literal(os.path.relpath(path, source))
                if entry is not None:
                    lines = [*lines, entry]
        for entry in lines:
            out.write(entry.encode("utf-8", errors="surrogateescape") + b"\n")
        return len(lines)

    def _check_create(self, result: ToolResult, fmt: str, details: dict[str, Any]) -> None:
        if result.timed_out:
            raise self._failed(
                CREATE,
                f"mksquashfs timed out after {self.settings.timeout_ms} ms",
                {**details, "timeoutMs": self.settings.timeout_ms},
            )
        if result.exit_code == 0:
            return
        missing = unsupported_compressor(result.output)
        if missing is not None:
            raise invalid(
                f"Compression {fmt} is not available: this mksquashfs was built without it"
                f" (available: {', '.join(missing[1]) or 'unknown'})",
                CREATE,
                "compression.format",
                compression=fmt,
                available=missing[1],
            )
        raise self._failed(
            CREATE,
            f"mksquashfs failed: {_bounded(result.output, MESSAGE_OUTPUT) or f'exit code {result.exit_code}'}",
            {**details, "exitCode": result.exit_code, "stderr": _bounded(result.output, DETAILS_OUTPUT)},
        )

    @staticmethod
    def _failed(operation: str, message: str, details: dict[str, Any]) -> SandboxError:
        code = ErrorCode.BACKUP_CREATE_FAILED if operation == CREATE else ErrorCode.BACKUP_RESTORE_FAILED
        return SandboxError(code, message, {**details, "operation": operation})

    # restore ----------------------------------------------------------------------------------

    def _open_archive(self, archive: str, details: dict[str, Any]) -> Handle:
        """The archive, open for reading (a regular file: a FIFO would never end)."""
        archive_path = details["archivePath"]
        try:
            fd, _ = open_read(archive)
        except (FileNotFoundError, IsADirectoryError):
            raise SandboxError(
                ErrorCode.BACKUP_NOT_FOUND,
                f"Archive file does not exist: {archive_path}",
                {**details, "operation": RESTORE},
            ) from None
        except OSError as exc:
            raise self._path_failed(
                exc, archive_path, "archivePath", RESTORE, details, f"Cannot open the archive {archive_path}"
            ) from None
        return Handle(fd)

    def _verify(self, fd: int, details: dict[str, Any], stop: threading.Event) -> bool:
        """Whether the archive carries a checksum; BACKUP_RESTORE_FAILED when it does not match."""
        trailer = checksum.read_trailer(fd)
        if trailer is None:
            return False
        try:
            found = checksum.digest(fd, trailer.length, stop)
        except EOFError:  # cut short while we read it
            found = b""
        if found != trailer.sha256:
            archive_path = details["archivePath"]
            raise self._failed(
                RESTORE,
                f"Archive {archive_path} is damaged: its contents no longer match the checksum recorded"
                " when it was created; nothing was restored",
                {**details, "expectedSha256": trailer.sha256.hex(), "actualSha256": found.hex()},
            )
        return True

    def _prepare_restore(self, target: str, dir: str, details: dict[str, Any]) -> tuple[bool, str]:
        """(whether the contents of ``target`` are swapped rather than the directory itself, the
        staging directory made for the extraction)."""
        try:
            st: os.stat_result | None = os.lstat(target)  # a real path: no link to follow
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise self._path_failed(exc, dir, "dir", RESTORE, details, f"Cannot restore into {dir}") from None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise self._failed(RESTORE, f"Cannot restore into {dir}: it exists and is not a directory", details)
        real_roots = {os.path.realpath(root) for root in self.roots}
        in_place = st is not None and (target in real_roots or is_mount_point(target))
        try:
            if not in_place:
                os.makedirs(os.path.dirname(target), exist_ok=True)
            staging = tempfile.mkdtemp(  # (mkdtemp adds 8 characters)
                prefix=".sandbox-restore-" if in_place else sibling_name(os.path.basename(target), "restore-", 8),
                dir=target if in_place else os.path.dirname(target),
            )
        except OSError as exc:
            what = f"Failed to prepare the restore of {dir}"
            raise self._path_failed(exc, dir, "dir", RESTORE, details, what) from None
        return in_place, staging

    def _put_in_place(self, staging: str, target: str, in_place: bool, dir: str, details: dict[str, Any]) -> None:
        tree = os.path.join(staging, "tree")
        old = os.path.join(staging, "old")
        try:
            if in_place:
                os.mkdir(old, 0o700)
                swap_contents(tree, target, old, os.path.basename(staging))
            elif os.path.isdir(target):
                exchange(tree, target, old)
            else:
                os.rename(tree, target)
        except OSError as exc:
            message = f"Failed to put the restored tree in place at {dir}: {exc.strerror or exc}"
            raise self._failed(RESTORE, message, details) from None

    @operation
    async def restore_archive(self, dir: str, archive_path: str, session_id: str | None = None) -> BackupRestored:
        """Replace the contents of ``dir`` with the tree in the archive ``archive_path`` (once
        its checksum, when it carries one, has been checked)."""
        check_session_id(session_id)
        target = check_dir(dir, self.roots, RESTORE)
        archive = check_archive(archive_path, self.archive_root, RESTORE)
        details: dict[str, Any] = {"dir": dir, "archivePath": archive_path}
        if within(self.real_archive_root, target):
            raise invalid(
                f"Cannot restore into {dir}: it holds the backup directory {self.archive_root}",
                RESTORE,
                "dir",
                archiveRoot=self.archive_root,
            )
        started = time.monotonic()
        async with self._tally(RESTORE), self._locks.hold(archive, target):
            handle = await run_sync(self._open_archive, archive, details)
            try:
                unsquashfs = self._tool(
                    "unsquashfs", self.settings.unsquashfs, ErrorCode.BACKUP_RESTORE_FAILED, RESTORE, details
                )
                verified = await self._blocking(lambda stop: handle.run(self._verify, details, stop), RESTORE, details)
                if not verified:
                    if self.settings.require_checksum:
                        raise invalid(
                            f"Archive {archive_path} carries no checksum (it was not made by this server),"
                            " and services.backup.require_checksum is set",
                            RESTORE,
                            "archivePath",
                            setting="services.backup.require_checksum",
                        )
                    self.log.warning("backup.unverified", archive_path=archive, reason="it carries no checksum")
                in_place, staging = await run_sync(self._prepare_restore, target, dir, details)
                try:
                    await self._extract(unsquashfs, handle.fd, os.path.join(staging, "tree"), details)
                    # one synchronous step: a caller that goes away cannot stop it half done
                    self._put_in_place(staging, target, in_place, dir, details)
                finally:
                    try:
                        await run_sync(remove_tree, staging)
                    except Exception as exc:  # the restore's outcome stands; the leftovers are logged
                        self.log.warning("backup.cleanup_failed", path=staging, error=repr(exc))
            finally:
                handle.close()  # (once a hash still running in a worker thread has stopped)
        self.log.info(
            "backup.restored",
            dir=target,
            archive_path=archive,
            in_place=in_place,
            verified=verified,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return BackupRestored(success=True, dir=dir)

    async def _extract(self, unsquashfs: str, archive_fd: int, tree: str, details: dict[str, Any]) -> None:
        """Extract the archive open at ``archive_fd`` (the file that was checked, whatever has
        been renamed over its path since) into ``tree``."""
        queue = str(max(1, self.settings.tool_memory_mb // 2))
        argv = [unsquashfs, "-d", tree, "-no-progress", "-quiet", "-da", queue, "-fr", queue]
        if os.geteuid() != 0:
            argv.append("-user-xattrs")  # other namespaces need privileges: not an error for us
        argv.append(f"/proc/self/fd/{archive_fd}")
        result = await run_tool(argv, time_limit=self.time_limit, grace=self.grace, pass_fds=(archive_fd,))
        if result.timed_out:
            raise self._failed(
                RESTORE,
                f"unsquashfs timed out after {self.settings.timeout_ms} ms",
                {**details, "timeoutMs": self.settings.timeout_ms},
            )
        if result.exit_code != 0:
            raise self._failed(
                RESTORE,
                "Failed to extract backup archive: "
                + (_bounded(result.output, MESSAGE_OUTPUT) or f"exit code {result.exit_code}"),
                {**details, "exitCode": result.exit_code, "stderr": _bounded(result.output, DETAILS_OUTPUT)},
            )
        if not await run_sync(os.path.isdir, tree):
            raise self._failed(RESTORE, "Failed to extract backup archive: it holds no directory", details)
