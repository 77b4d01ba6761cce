"""Files: read, write, stream, list and manage files (contract a2, b4), in Python, never a shell.

Relative paths resolve against the session's *current* directory, read from its shell
without waiting for the session's lock, so a file operation never queues behind a running
foreground command. Blocking filesystem work runs in worker threads; streams hold at most
one read or write batch in memory whatever the file size.

Operations with an http route: ``read``, ``read_stream``, ``write``, ``delete``, ``rename``,
``move``, ``mkdir``, ``list_files``, ``exists``. For streaming transports (rpc):
``write_file_stream`` (takes an async iterable of bytes) and ``read_bytes`` (yields raw bytes,
no size cap); :meth:`FilesService.describe` gives a file's size and MIME type for them.
"""

from __future__ import annotations

import asyncio
import binascii
import codecs
import contextlib
import errno
import mimetypes
import os
import shutil
import stat
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import pybase64
from msgspec import Meta

from sandbox_core.clock import iso_us_from_ns, now_iso
from sandbox_core.errors import SandboxError, validation_error
from sandbox_core.models.files import (
    AnyFileStreamEvent,
    Encoding,
    ExistsResult,
    FileChunkEvent,
    FileCompleteEvent,
    FileErrorEvent,
    FileInfo,
    FileMetadataEvent,
    FileOpResult,
    FilePermissions,
    ListFilesOptions,
    ListFilesResult,
    MkdirResult,
    ReadFileResult,
    RenameFileResult,
    WriteFileResult,
)
from sandbox_core.registry import ServiceContext, operation

from .sessions import SessionsService, check_session_id

MAX_PATH_BYTES = 4096
SNIFF_BYTES = 8192
EncodingParam = Literal["utf-8", "utf8", "base64"]
T = TypeVar("T")


class FilesSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.files]``"""

    max_read_bytes: Annotated[int, Meta(gt=0)] = 32 * 1024 * 1024  # larger files: 413 FILE_TOO_LARGE on read
    chunk_bytes: Annotated[int, Meta(gt=0, multiple_of=3)] = 65535  # raw bytes per read-stream chunk
    io_batch_bytes: Annotated[int, Meta(gt=0)] = 1024 * 1024  # bytes read or written per worker-thread hop


# ---- MIME types ------------------------------------------------------------------------------

_MIME = mimetypes.MimeTypes()  # the built-in table only: the same answer on every host
for _type, _exts in {
    "application/yaml": (".yaml", ".yml"),
    "application/toml": (".toml",),
    "text/markdown": (".md", ".markdown"),
    "text/typescript": (".ts", ".mts", ".cts"),
    "text/tsx": (".tsx",),
    "text/jsx": (".jsx",),
    "application/sql": (".sql",),
    "application/x-ndjson": (".jsonl", ".ndjson"),
}.items():
    for _ext in _exts:
        _MIME.add_type(_type, _ext)
_COMPRESSED = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/x-toml",
        "application/x-sh",
        "application/x-shellscript",
        "application/x-csh",
        "application/sql",
        "application/x-sql",
        "application/graphql",
        "application/x-ndjson",
        "application/x-httpd-php",
        "application/x-python",
        "application/x-ruby",
        "application/x-perl",
        "application/typescript",
        "application/x-typescript",
        "application/x-tex",
        "application/x-latex",
        "application/x-empty",
        "inode/x-empty",
    }
)


def is_text_mime(mime: str) -> bool:
    """Text is ``text/*``, ``+json``, ``+xml`` and an allowlist; everything else is sent as base64."""
    mime = mime.split(";", 1)[0].strip().lower()
    return mime.startswith("text/") or mime.endswith("+json") or mime.endswith("+xml") or mime in _TEXT_TYPES


def sniff_mime(head: bytes) -> str:
    """The MIME type of content with no known extension: empty, UTF-8 text or binary."""
    if not head:
        return "inode/x-empty"
    if b"\x00" in head:
        return "application/octet-stream"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a cut character at the end is fine
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


def guess_mime(path: str, head: Callable[[], bytes]) -> str:
    """MIME type by extension (built-in table), else by sniffing the first bytes (``head()``)."""
    ext = os.path.splitext(os.path.basename(path))[1].lower()
    mime, encoding = _MIME.guess_type("file" + ext, strict=False) if ext else (None, None)
    if encoding is not None:
        return _COMPRESSED.get(encoding, "application/octet-stream")
    if mime is None or mime == "application/octet-stream":
        try:
            return sniff_mime(head())
        except OSError:
            return "application/octet-stream"
    return mime


# ---- paths and errors ------------------------------------------------------------------------

_CODES = {
    errno.ENOENT: "FILE_NOT_FOUND",
    errno.EACCES: "PERMISSION_DENIED",
    errno.EPERM: "PERMISSION_DENIED",
    errno.ENOSPC: "NO_SPACE",
    errno.EDQUOT: "NO_SPACE",
    errno.EISDIR: "IS_DIRECTORY",
    errno.ENOTDIR: "NOT_DIRECTORY",
    errno.EEXIST: "FILE_EXISTS",
    errno.ENAMETOOLONG: "NAME_TOO_LONG",
    errno.ELOOP: "TOO_MANY_LINKS",
    errno.EMFILE: "TOO_MANY_FILES",
    errno.ENFILE: "TOO_MANY_FILES",
    errno.EROFS: "READ_ONLY",
    errno.ENOTEMPTY: "FILE_EXISTS",
    errno.EBUSY: "RESOURCE_BUSY",
}


def fs_error(exc: OSError, path: str, operation: str) -> SandboxError:
    """The contract's error for an OSError: code by errno, ``path`` and ``operation`` in details."""
    code = _CODES.get(exc.errno or 0, "FILESYSTEM_ERROR")
    reason = exc.strerror or str(exc)
    details: dict[str, Any] = {"path": path, "operation": operation}
    if code == "FILE_NOT_FOUND":
        message = f"File not found: {path}"
    elif code == "FILESYSTEM_ERROR":
        message = f"Filesystem error on {path}: {reason}"
        details["stderr"] = reason
    else:
        message = f"{reason}: {path}"
    return SandboxError(code, message, details)


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def check_path(path: str, field: str = "path") -> None:
    """Format-only validation, as the contract's: not empty, no NUL, at most 4096 bytes."""
    if not path:
        raise validation_error(f"{field} must not be empty", field)
    if "\x00" in path:
        raise validation_error(f"{field} must not contain NUL bytes", field)
    try:
        size = len(os.fsencode(path))
    except UnicodeEncodeError:
        raise validation_error(f"{field} is not valid UTF-8", field) from None
    if size > MAX_PATH_BYTES:
        raise validation_error(f"{field} is longer than {MAX_PATH_BYTES} bytes ({size})", field)


_RWX = ("---", "--x", "-w-", "-wx", "r--", "r-x", "rw-", "rwx")


def _file_type(mode: int) -> Literal["file", "directory", "symlink", "other"]:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _info(name: str, absolute: str, relative: str, st: os.stat_result) -> FileInfo:
    mode = st.st_mode
    owner = (mode >> 6) & 7
    return FileInfo(
        name=name,
        absolute_path=absolute,
        relative_path=relative,
        type=_file_type(mode),
        size=st.st_size,
        modified_at=iso_us_from_ns(st.st_mtime_ns),
        mode=_RWX[owner] + _RWX[(mode >> 3) & 7] + _RWX[mode & 7],
        permissions=FilePermissions(readable=bool(owner & 4), writable=bool(owner & 2), executable=bool(owner & 1)),
    )


# ---- file handles shared with worker threads -------------------------------------------------


class _Handle:
    """An fd used from worker threads one call at a time; :meth:`close` never blocks the loop.

    Closing while a worker uses the fd defers the close (and ``on_close``) to that worker, so a
    cancelled stream never closes an fd under a running read or write."""

    def __init__(self, fd: int, on_close: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self._on_close = on_close
        self._state = threading.Lock()
        self._busy = False
        self._closing = False

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._state:
            if self._closing:
                raise _oserror(errno.EBADF, "")
            self._busy = True
        try:
            return fn(self.fd, *args)
        finally:
            with self._state:
                self._busy = False
                if self._closing:
                    self._close_locked()

    def close(self, on_close: Callable[[], None] | None = None) -> None:
        with self._state:
            if on_close is not None:
                self._on_close = on_close
            self._closing = True
            if not self._busy:
                self._close_locked()

    def _close_locked(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
            if self._on_close is not None:
                with contextlib.suppress(OSError):
                    self._on_close()


def _read_full(fd: int, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of file."""
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.read(fd, size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _open_read(path: str) -> tuple[int, os.stat_result]:
    """Open for reading without blocking on a FIFO; a directory is EISDIR."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _oserror(errno.EISDIR, path)
        if stat.S_ISREG(st.st_mode):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _head(fd: int) -> Callable[[], bytes]:
    return lambda: os.pread(fd, SNIFF_BYTES, 0)


@dataclass
class _Target:
    """Where an atomic write goes: a temp file beside ``target``, renamed over it at the end."""

    target: str
    tmp: str | None  # None: written in place (the path is a device or FIFO, not a regular file)
    handle: _Handle


def _unlink_quietly(path: str) -> Callable[[], None]:
    def unlink() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    return unlink


def _prepare_write(path: str) -> _Target:
    """Create parents and open a temp file in the target's directory, with the old file's mode."""
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    target = os.path.realpath(path) if os.path.islink(path) else path
    if os.path.basename(target) in ("", ".", ".."):  # "dir/", "dir/.", "dir/..": not a file name
        raise _oserror(errno.EISDIR, path)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise _oserror(errno.EISDIR, path)
        if not stat.S_ISREG(st.st_mode):  # /dev/null, a FIFO...: write in place, never replace it
            fd = os.open(target, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NONBLOCK)  # FIFO: no hang
            os.set_blocking(fd, True)
            return _Target(target, None, _Handle(fd))
    parent = os.path.dirname(target) or "."
    try:
        os.makedirs(parent, exist_ok=True)
    except FileExistsError:  # a parent component is a file
        raise _oserror(errno.ENOTDIR, parent) from None
    name = os.path.basename(target)
    tmp = os.path.join(parent, f".{name[:120]}.tmp.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        if st is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):
                    os.fchown(fd, st.st_uid, st.st_gid)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return _Target(target, tmp, _Handle(fd))


def _commit(fd: int, target: _Target) -> None:
    """Runs under the handle: the data is written; rename the temp file over the target."""
    if target.tmp is not None:
        os.rename(target.tmp, target.target)
        target.tmp = None


def _write_whole(path: str, data: bytes) -> int:
    target = _prepare_write(path)
    try:
        target.handle.run(_write_all, data)
        target.handle.run(_commit, target)
    finally:
        target.handle.close(_unlink_quietly(target.tmp) if target.tmp else None)
    return len(data)


# ---- the service -----------------------------------------------------------------------------


class FilesService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.settings: FilesSettings = ctx.settings if ctx.settings is not None else FilesSettings()
        self.registry = ctx.registry
        self.log = ctx.log

    @property
    def sessions(self) -> SessionsService:
        return self.registry.get("sessions", SessionsService)

    def resolve(self, path: str, session_id: str | None, field: str = "path") -> str:
        """Validate ``path`` and make it absolute against the session's current directory."""
        sid = check_session_id(session_id)
        check_path(path, field)
        if os.path.isabs(path):
            return path
        return os.path.join(self.sessions.cwd_of(sid), path)

    # read ------------------------------------------------------------------------------------

    def _read_whole(self, full: str, encoding: str | None) -> tuple[str, Encoding, bool, str, int]:
        limit = self.settings.max_read_bytes
        fd, st = _open_read(full)
        try:
            if st.st_size > limit:
                raise SandboxError(
                    "FILE_TOO_LARGE",
                    f"File too large: {full} is {st.st_size} bytes, the limit is {limit} (use the read stream)",
                    {"path": full, "operation": "file.read", "size": st.st_size, "limit": limit},
                )
            data = _read_full(fd, limit + 1)
        finally:
            os.close(fd)
        if len(data) > limit:
            raise SandboxError(
                "FILE_TOO_LARGE",
                f"File too large: {full} is over {limit} bytes (use the read stream)",
                {"path": full, "operation": "file.read", "limit": limit},
            )
        mime = guess_mime(full, lambda: data[:SNIFF_BYTES])
        if encoding == "base64":
            return pybase64.b64encode_as_string(data), "base64", True, mime, len(data)
        if encoding is not None:
            return data.decode("utf-8", errors="replace"), "utf-8", False, mime, len(data)
        if is_text_mime(mime):
            try:
                return data.decode("utf-8"), "utf-8", False, mime, len(data)
            except UnicodeDecodeError:
                pass  # text by name but not UTF-8: send it exactly, as base64
        return pybase64.b64encode_as_string(data), "base64", True, mime, len(data)

    @operation
    async def read(
        self, path: str, encoding: EncodingParam | None = None, session_id: str | None = None
    ) -> ReadFileResult:
        """The whole file as UTF-8 text or base64 (by MIME type unless ``encoding`` says); max 32 MiB."""
        full = self.resolve(path, session_id)
        try:
            content, enc, binary, mime, size = await asyncio.to_thread(self._read_whole, full, encoding)
        except OSError as exc:
            raise fs_error(exc, full, "file.read") from None
        return ReadFileResult(
            success=True,
            path=path,
            content=content,
            timestamp=now_iso(),
            encoding=enc,
            is_binary=binary,
            mime_type=mime,
            size=size,
        )

    def describe(self, full: str) -> FileMetadataEvent:
        """Size, MIME type and encoding of an absolute path (blocking: call it in a thread)."""
        fd, st = _open_read(full)
        try:
            mime = guess_mime(full, _head(fd))
        finally:
            os.close(fd)
        binary = not is_text_mime(mime)
        return FileMetadataEvent(
            mime_type=mime, size=st.st_size, is_binary=binary, encoding="base64" if binary else "utf-8"
        )

    @operation
    async def read_stream(self, path: str, session_id: str | None = None) -> AsyncIterator[AnyFileStreamEvent]:
        """The file as events: metadata, chunks of 65 535 raw bytes (base64 or text), complete.

        Filesystem errors are an in-band ``error`` event; a malformed path raises before the stream."""
        full = self.resolve(path, session_id)
        chunk = self.settings.chunk_bytes
        batch = max(chunk, self.settings.io_batch_bytes)
        try:
            fd, st = await asyncio.to_thread(_open_read, full)
        except OSError as exc:
            err = fs_error(exc, full, "file.read")
            yield FileErrorEvent(error=err.message, code=err.code)
            return
        handle = _Handle(fd)
        try:
            try:
                mime = await asyncio.to_thread(handle.run, lambda fd: guess_mime(full, _head(fd)))
            except OSError:
                mime = "application/octet-stream"
            binary = not is_text_mime(mime)
            yield FileMetadataEvent(
                mime_type=mime, size=st.st_size, is_binary=binary, encoding="base64" if binary else "utf-8"
            )
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

            def read_batch(fd: int) -> tuple[list[str], int, bool]:
                out: list[str] = []
                got = 0
                while got < batch:
                    data = _read_full(fd, chunk)
                    got += len(data)
                    if binary:
                        if data:
                            out.append(pybase64.b64encode_as_string(data))
                    else:
                        text = decoder.decode(data, final=len(data) < chunk)
                        if text:
                            out.append(text)
                    if len(data) < chunk:
                        return out, got, True
                return out, got, False

            total = 0
            while True:
                try:
                    texts, got, eof = await asyncio.to_thread(handle.run, read_batch)
                except OSError as exc:
                    err = fs_error(exc, full, "file.read")
                    yield FileErrorEvent(error=err.message, code=err.code)
                    return
                total += got
                for text in texts:
                    yield FileChunkEvent(data=text)
                if eof:
                    break
            yield FileCompleteEvent(bytes_read=total)
        finally:
            handle.close()

    @operation
    async def read_bytes(self, path: str, session_id: str | None = None) -> AsyncIterator[bytes]:
        """The file's raw bytes in chunks of at most ``io_batch_bytes``, no size cap (for rpc streams).

        Errors raise SandboxError (before the first chunk when the file cannot be opened)."""
        full = self.resolve(path, session_id)
        size = self.settings.io_batch_bytes
        try:
            fd, _ = await asyncio.to_thread(_open_read, full)
        except OSError as exc:
            raise fs_error(exc, full, "file.read") from None
        handle = _Handle(fd)
        try:
            while True:
                try:
                    data = await asyncio.to_thread(handle.run, _read_full, size)
                except OSError as exc:
                    raise fs_error(exc, full, "file.read") from None
                if not data:
                    break
                yield data
                if len(data) < size:
                    break
        finally:
            handle.close()

    # write -----------------------------------------------------------------------------------

    @operation
    async def write(
        self, path: str, content: str, encoding: EncodingParam | None = None, session_id: str | None = None
    ) -> WriteFileResult:
        """Write a whole file atomically (temp file and rename), creating parents and keeping its mode."""
        full = self.resolve(path, session_id)
        if encoding == "base64":
            data = await asyncio.to_thread(_decode_base64, content)
        else:
            try:
                data = content.encode("utf-8")
            except UnicodeEncodeError:
                raise validation_error("content is not valid Unicode text", "content") from None
        try:
            written = await asyncio.to_thread(_write_whole, full, data)
        except OSError as exc:
            raise fs_error(exc, full, "file.write") from None
        return WriteFileResult(success=True, path=path, timestamp=now_iso(), bytes_written=written)

    @operation
    async def write_file_stream(
        self, path: str, data: AsyncIterable[bytes], session_id: str | None = None
    ) -> WriteFileResult:
        """Write a file from an async iterable of bytes (atomic, parents created, mode kept).

        Memory holds at most one ``io_batch_bytes`` batch plus one incoming chunk."""
        full = self.resolve(path, session_id)
        if not hasattr(data, "__aiter__"):
            raise validation_error("data must be a stream of bytes", "data")
        batch = self.settings.io_batch_bytes
        try:
            target = await asyncio.to_thread(_prepare_write, full)
        except OSError as exc:
            raise fs_error(exc, full, "file.write") from None
        handle = target.handle
        source = data.__aiter__()
        buf = bytearray()
        total = 0

        async def flush() -> None:
            nonlocal total
            try:
                await asyncio.to_thread(handle.run, _write_all, buf)
            except OSError as exc:
                raise fs_error(exc, full, "file.write") from None
            total += len(buf)
            buf.clear()

        try:
            while True:
                try:
                    chunk = await source.__anext__()  # the source's own errors pass through unmapped
                except StopAsyncIteration:
                    break
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise validation_error(f"data must yield bytes, not {type(chunk).__name__}", "data")
                buf += chunk
                if len(buf) >= batch:
                    await flush()
            if buf:
                await flush()
            try:
                await asyncio.to_thread(handle.run, _commit, target)
            except OSError as exc:
                raise fs_error(exc, full, "file.write") from None
        finally:
            handle.close(_unlink_quietly(target.tmp) if target.tmp else None)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        return WriteFileResult(success=True, path=path, timestamp=now_iso(), bytes_written=total)

    # delete, rename, move, mkdir ----------------------------------------------------------------

    @operation
    async def delete(self, path: str, session_id: str | None = None) -> FileOpResult:
        """Delete a file or symlink; a directory is 400 IS_DIRECTORY."""
        full = self.resolve(path, session_id)

        def delete() -> None:
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                raise SandboxError(
                    "IS_DIRECTORY",
                    f"Cannot delete directory with deleteFile() at '{full}'. Use exec('rm -rf <path>') instead.",
                    {"path": full, "operation": "file.delete"},
                )
            os.unlink(full)

        try:
            await asyncio.to_thread(delete)
        except OSError as exc:
            raise fs_error(exc, full, "file.delete") from None
        return FileOpResult(success=True, path=path, timestamp=now_iso())

    async def _move(
        self, source: str, destination: str, session_id: str | None, fields: tuple[str, str], operation_name: str
    ) -> None:
        """``mv`` semantics: into an existing directory, over an existing file, across filesystems."""
        src = self.resolve(source, session_id, fields[0])
        dst = self.resolve(destination, session_id, fields[1])

        def move() -> None:
            try:
                os.lstat(src)
            except FileNotFoundError:
                raise SandboxError(
                    "FILE_NOT_FOUND", f"Source file not found: {src}", {"path": src, "operation": operation_name}
                ) from None
            target = dst
            try:
                src_st, dst_st = os.lstat(src), os.stat(dst)
            except OSError:
                dst_st = None
            if (
                dst_st is not None
                and stat.S_ISDIR(dst_st.st_mode)
                and (src_st.st_dev, src_st.st_ino) != (dst_st.st_dev, dst_st.st_ino)
            ):
                target = os.path.join(dst, os.path.basename(src.rstrip("/")))
            try:
                os.rename(src, target)
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    shutil.move(src, target)
                elif exc.errno == errno.ENOENT:
                    parent = os.path.dirname(target) or "."
                    raise SandboxError(
                        "FILE_NOT_FOUND",
                        f"Destination directory not found: {parent}",
                        {"path": parent, "operation": operation_name},
                    ) from None
                elif exc.errno == errno.EINVAL:  # a directory into itself
                    raise validation_error(
                        f"Cannot move {src} into itself ({target})", fields[1], path=target, operation=operation_name
                    ) from None
                else:
                    raise fs_error(exc, target, operation_name) from None

        try:
            await asyncio.to_thread(move)
        except OSError as exc:
            raise fs_error(exc, src, operation_name) from None

    @operation
    async def rename(self, old_path: str, new_path: str, session_id: str | None = None) -> RenameFileResult:
        """Rename a file or directory (``mv``)."""
        await self._move(old_path, new_path, session_id, ("oldPath", "newPath"), "file.rename")
        return RenameFileResult(success=True, path=old_path, new_path=new_path, timestamp=now_iso(), old_path=old_path)

    @operation
    async def move(self, source_path: str, destination_path: str, session_id: str | None = None) -> RenameFileResult:
        """Move a file or directory (``mv``: into an existing directory keeps the name)."""
        await self._move(source_path, destination_path, session_id, ("sourcePath", "destinationPath"), "file.move")
        return RenameFileResult(success=True, path=source_path, new_path=destination_path, timestamp=now_iso())

    @operation
    async def mkdir(self, path: str, recursive: bool = False, session_id: str | None = None) -> MkdirResult:
        """Create a directory (with its parents when ``recursive``; an existing one is then fine)."""
        full = self.resolve(path, session_id)

        def mkdir() -> None:
            if recursive:
                try:
                    os.makedirs(full, exist_ok=True)
                except FileExistsError:  # the path or a parent is a file
                    raise _oserror(errno.EEXIST if os.path.lexists(full) else errno.ENOTDIR, full) from None
            else:
                os.mkdir(full)

        try:
            await asyncio.to_thread(mkdir)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not recursive:  # the contract: 500, like mkdir's own failure
                reason = f"mkdir: cannot create directory '{full}': No such file or directory"
                raise SandboxError(
                    "FILESYSTEM_ERROR", reason, {"path": full, "operation": "directory.create", "stderr": reason}
                ) from None
            raise fs_error(exc, full, "directory.create") from None
        return MkdirResult(success=True, path=path, recursive=recursive, timestamp=now_iso())

    # list, exists ----------------------------------------------------------------------------

    @operation
    async def list_files(
        self, path: str, options: ListFilesOptions | None = None, session_id: str | None = None
    ) -> ListFilesResult:
        """The entries of a directory (``recursive``: the whole tree, symlinks not followed).

        Hidden entries (``.*``) are left out unless ``include_hidden``, and so is everything
        inside a hidden directory. Subdirectories that cannot be read are listed but not entered."""
        full = self.resolve(path, session_id)
        opts = options or ListFilesOptions()
        try:
            files = await asyncio.to_thread(_list_tree, full, opts.recursive, opts.include_hidden)
        except OSError as exc:
            raise fs_error(exc, full, "directory.list") from None
        return ListFilesResult(success=True, path=path, files=files, count=len(files), timestamp=now_iso())

    @operation
    async def exists(self, path: str, session_id: str | None = None) -> ExistsResult:
        """Whether the path exists (symlinks followed, as ``test -e``)."""
        full = self.resolve(path, session_id)
        found = await asyncio.to_thread(os.path.exists, full)
        return ExistsResult(success=True, path=path, exists=found, timestamp=now_iso())


def _decode_base64(content: str) -> bytes:
    """Strict base64 (the alphabet, then ``=`` padding only at the end), decoded in one C pass."""
    try:
        return pybase64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise validation_error(
            f"Invalid base64 content: must contain only A-Z, a-z, 0-9, +, / and = padding ({exc})", "content"
        ) from None


def _list_tree(full: str, recursive: bool, include_hidden: bool) -> list[FileInfo]:
    if not stat.S_ISDIR(os.stat(full).st_mode):
        raise SandboxError(
            "NOT_DIRECTORY", f"Path is not a directory: {full}", {"path": full, "operation": "directory.list"}
        )
    base = os.path.normpath(full)  # "dir/." lists as "dir"

    def entries(directory: str) -> list[os.DirEntry[str]]:
        with os.scandir(directory) as it:
            return sorted((e for e in it if include_hidden or not e.name.startswith(".")), key=lambda e: e.name)

    files: list[FileInfo] = []
    stack: list[tuple[Any, str]] = [(iter(entries(base)), "")]
    while stack:
        it, prefix = stack[-1]
        entry = next(it, None)
        if entry is None:
            stack.pop()
            continue
        relative = prefix + entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed while we list
            continue
        files.append(_info(entry.name, entry.path, relative, st))
        if recursive and stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                stack.append((iter(entries(entry.path)), relative + "/"))
    return files
