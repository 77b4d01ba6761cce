"""The files service: its settings and operations, each doing its blocking work in worker threads."""

from __future__ import annotations

import codecs
import errno
import os
import re
import shutil
import stat
from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated, Literal, NamedTuple

import msgspec
import pybase64
from msgspec import Meta

from sandbox_core.clock import now_iso
from sandbox_core.contract.models.files import (
    AnyFileStreamEvent,
    ConfinedPath,
    Encoding,
    ExistsResult,
    FileChunkEvent,
    FileCompleteEvent,
    FileErrorEvent,
    FileMetadataEvent,
    FileOpResult,
    ListFilesOptions,
    ListFilesResult,
    MkdirResult,
    ReadFileResult,
    RenameFileResult,
    WriteFileResult,
)
from sandbox_core.errors import ErrorCode, SandboxError, validation_error
from sandbox_core.memory import trim_after
from sandbox_core.registry import ServiceContext, operation

from ..offload import run_sync
from ..params import FileMode, FileOffset, NonNegativeInt, file_mode
from ..sessions import SessionsService, check_session_id
from .atomic import commit, finish, prepare_write
from .content import Content
from .errors import fs_error, oserror
from .fdio import Handle, head, open_read, pread_full, read_full, write_all
from .listing import list_tree
from .mime import SNIFF_BYTES, guess_mime, is_text_mime
from .paths import confine_path, resolve_path
from .ranges import TailScan, char_edges, check_options, span

EncodingParam = Literal["utf-8", "utf8", "base64"]
#: The name of a caller's field, given back in an error.
_FIELD = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: About what one listed entry costs in memory and on the wire (for when to trim the heap).
_ENTRY_BYTES = 400


#: A read's range options: ``(offset, length, tail_lines)`` (see :mod:`.ranges`).
Window = tuple[int | None, int | None, int | None]


class _Read(NamedTuple):
    """What a read answers: the content and the bytes it is (``offset``, ``length`` of ``total``)."""

    content: str
    encoding: Encoding
    mime: str
    offset: int
    length: int
    total: int


def _encode(data: bytes, encoding: str | None, mime: str, offset: int, total: int) -> _Read:
    """``data`` as text or base64: as ``encoding`` says, else text for a text MIME type that is UTF-8."""
    if encoding != "base64":
        if encoding is not None:
            return _Read(data.decode("utf-8", errors="replace"), "utf-8", mime, offset, len(data), total)
        if is_text_mime(mime):
            try:
                return _Read(data.decode("utf-8"), "utf-8", mime, offset, len(data), total)
            except UnicodeDecodeError:
                pass  # text by name but not UTF-8: send it exactly, as base64
    return _Read(pybase64.b64encode_as_string(data), "base64", mime, offset, len(data), total)


class FilesSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.files]``"""

    max_read_bytes: Annotated[int, Meta(gt=0)] = 32 * 1024 * 1024  # larger files: 413 FILE_TOO_LARGE on read
    chunk_bytes: Annotated[int, Meta(gt=0, multiple_of=3)] = 65535  # raw bytes per read-stream chunk
    io_batch_bytes: Annotated[int, Meta(gt=0)] = 1024 * 1024  # bytes read or written per worker-thread hop
    max_list_entries: Annotated[int, Meta(gt=0)] = 100_000  # a listing stops there, marked truncated


class FilesService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.settings: FilesSettings = ctx.settings if ctx.settings is not None else FilesSettings()
        self.registry = ctx.registry

    @property
    def sessions(self) -> SessionsService:
        return self.registry.get("sessions", SessionsService)

    def resolve(self, path: str, session_id: str | None, field: str = "path") -> str:
        """Validate ``path`` and make it absolute against the session's current directory."""
        sid = check_session_id(session_id)
        return resolve_path(path, lambda: self.sessions.cwd_of(sid), field)

    # read ------------------------------------------------------------------------------------

    def _too_large(self, full: str, size: int, what: str) -> SandboxError:
        limit = self.settings.max_read_bytes
        return SandboxError(
            ErrorCode.FILE_TOO_LARGE,
            f"File too large: {what} is {size} bytes, the limit is {limit} (use the read stream, or a smaller range)",
            {"path": full, "operation": "file.read", "size": size, "limit": limit},
        )

    def _read_whole(self, full: str, encoding: str | None, window: Window | None) -> _Read:
        limit = self.settings.max_read_bytes
        fd, st = open_read(full)
        try:
            if window is not None:
                return self._read_range(fd, st.st_size, full, encoding, window)
            if st.st_size > limit:
                raise self._too_large(full, st.st_size, full)
            data = read_full(fd, limit + 1)
        finally:
            os.close(fd)
        if len(data) > limit:
            raise SandboxError(
                ErrorCode.FILE_TOO_LARGE,
                f"File too large: {full} is over {limit} bytes (use the read stream)",
                {"path": full, "operation": "file.read", "limit": limit},
            )
        mime = guess_mime(full, lambda: data[:SNIFF_BYTES])
        return _encode(data, encoding, mime, 0, len(data))

    def _read_range(self, fd: int, size: int, full: str, encoding: str | None, window: Window) -> _Read:
        """The bytes of ``window`` (a range or a tail; see :mod:`.ranges`), at most ``max_read_bytes``."""
        limit = self.settings.max_read_bytes
        offset, length, lines = window
        mime = guess_mime(full, head(fd))
        if lines is not None:
            scan = TailScan(size, lines, cap=limit)
            while not scan.step(fd, self.settings.io_batch_bytes):
                pass  # bounded by the cap
            if scan.start is None:
                raise self._too_large(full, size, f"the tail of {lines} lines of {full} (at least {limit + 1} bytes)")
            start, end = scan.start, size
        else:
            start, end = span(size, offset, length)
            if encoding != "base64" and (encoding is not None or is_text_mime(mime)):
                start, end = char_edges(fd, start, end, size)
        if end - start > limit:
            raise self._too_large(full, end - start, f"the range {start}-{end} of {full}")
        data = pread_full(fd, end - start, start)
        return _encode(data, encoding, mime, start, size)

    @operation
    async def read(
        self,
        path: str,
        encoding: EncodingParam | None = None,
        session_id: str | None = None,
        offset: FileOffset | None = None,
        length: NonNegativeInt | None = None,
        tail_lines: NonNegativeInt | None = None,
    ) -> ReadFileResult:
        """The file as UTF-8 text or base64 (by MIME type unless ``encoding`` says); max 32 MiB.

        Ours: ``offset`` (negative: from the end) and ``length`` read a range, ``tail_lines`` the
        last lines (see :mod:`.ranges`); the limit then applies to the bytes read, not the file."""
        window = (offset, length, tail_lines) if check_options(offset, length, tail_lines) else None
        full = self.resolve(path, session_id)
        try:
            read = await run_sync(self._read_whole, full, encoding, window)
        except OSError as exc:
            raise fs_error(exc, full, "file.read") from None
        trim_after(read.length)
        return ReadFileResult(
            success=True,
            path=path,
            content=read.content,
            timestamp=now_iso(),
            encoding=read.encoding,
            is_binary=read.encoding == "base64",
            mime_type=read.mime,
            size=read.length,
            offset=None if window is None else read.offset,  # a whole read has the contract's shape
            length=None if window is None else read.length,
            total_size=None if window is None else read.total,
        )

    async def _span(self, handle: Handle, size: int, window: Window, text: bool) -> tuple[int, int]:
        """``(start, end)`` of a stream's range or tail (no cap: a stream has none). A tail is
        scanned ``io_batch_bytes`` per worker-thread hop, so a stream closed meanwhile stops it."""
        offset, length, lines = window
        if lines is None:

            def edges(fd: int) -> tuple[int, int]:
                start, end = span(size, offset, length)
                return char_edges(fd, start, end, size) if text else (start, end)

            return await run_sync(handle.run, edges)
        scan = TailScan(size, lines)
        while not await run_sync(handle.run, scan.step, self.settings.io_batch_bytes):
            pass
        assert scan.start is not None
        return scan.start, size

    @operation
    async def read_stream(
        self,
        path: str,
        session_id: str | None = None,
        offset: FileOffset | None = None,
        length: NonNegativeInt | None = None,
        tail_lines: NonNegativeInt | None = None,
        encoding: EncodingParam | None = None,
    ) -> AsyncIterator[AnyFileStreamEvent]:
        """The file as events: metadata, chunks of 65 535 raw bytes (base64 or text), complete.

        Ours: ``offset``, ``length`` and ``tail_lines`` as for :meth:`read` (no size cap; the
        range is fixed when the file is opened) and ``encoding`` (default: by MIME type).
        Filesystem errors are an in-band ``error`` event; a malformed path, conflicting options
        or an ``offset`` past the end raise before the stream."""
        window = (offset, length, tail_lines) if check_options(offset, length, tail_lines) else None
        full = self.resolve(path, session_id)
        chunk = self.settings.chunk_bytes
        batch = max(chunk, self.settings.io_batch_bytes)
        try:
            fd, st = await run_sync(open_read, full)
        except OSError as exc:
            err = fs_error(exc, full, "file.read")
            yield FileErrorEvent(error=err.message, code=err.code)
            return
        handle = Handle(fd)
        total = 0
        try:
            try:
                mime = await run_sync(handle.run, lambda fd: guess_mime(full, head(fd)))
            except OSError:
                mime = "application/octet-stream"
            binary = encoding == "base64" or (encoding is None and not is_text_mime(mime))
            start, end = 0, None
            if window is not None:
                try:
                    start, end = await self._span(handle, st.st_size, window, not binary)
                except OSError as exc:
                    err = fs_error(exc, full, "file.read")
                    yield FileErrorEvent(error=err.message, code=err.code)
                    return
            yield FileMetadataEvent(
                mime_type=mime,
                size=st.st_size,
                is_binary=binary,
                encoding="base64" if binary else "utf-8",
                offset=None if end is None else start,
                length=None if end is None else end - start,
                total_size=None if end is None else st.st_size,
            )
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

            def read_batch(fd: int) -> tuple[list[str], int, bool]:
                out: list[str] = []
                got = 0
                while got < batch:
                    position = start + total + got
                    want = chunk if end is None else min(chunk, end - position)
                    data = pread_full(fd, want, position) if want > 0 else b""
                    got += len(data)
                    eof = len(data) < want or (end is not None and position + len(data) >= end)
                    if binary:
                        if data:
                            out.append(pybase64.b64encode_as_string(data))
                    else:
                        text = decoder.decode(data, final=eof)
                        if text:
                            out.append(text)
                    if eof:
                        return out, got, True
                return out, got, False

            while True:
                try:
                    texts, got, eof = await run_sync(handle.run, read_batch)
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
            trim_after(total)

    @operation
    async def read_bytes(
        self,
        path: str,
        session_id: str | None = None,
        offset: FileOffset | None = None,
        length: NonNegativeInt | None = None,
        tail_lines: NonNegativeInt | None = None,
    ) -> AsyncIterator[bytes]:
        """The file's raw bytes in chunks of at most ``io_batch_bytes``, no size cap (for rpc streams);
        ``offset``, ``length`` and ``tail_lines`` as for :meth:`read` (the range's bytes, exactly).

        Errors raise SandboxError (before the first chunk when the file cannot be opened)."""
        window = (offset, length, tail_lines) if check_options(offset, length, tail_lines) else None
        full = self.resolve(path, session_id)
        size = self.settings.io_batch_bytes
        try:
            fd, st = await run_sync(open_read, full)
        except OSError as exc:
            raise fs_error(exc, full, "file.read") from None
        handle = Handle(fd)
        total = 0
        try:
            start, end = 0, None
            if window is not None:
                try:
                    start, end = await self._span(handle, st.st_size, window, False)
                except OSError as exc:
                    raise fs_error(exc, full, "file.read") from None
            while True:
                want = size if end is None else min(size, end - start - total)
                if want <= 0:
                    break
                try:
                    data = await run_sync(handle.run, pread_full, want, start + total)
                except OSError as exc:
                    raise fs_error(exc, full, "file.read") from None
                if not data:
                    break
                total += len(data)
                yield data
                if len(data) < want:
                    break
        finally:
            handle.close()
            trim_after(total)

    # write -----------------------------------------------------------------------------------

    @operation
    async def write(
        self,
        path: str,
        content: msgspec.Raw,
        encoding: EncodingParam | None = None,
        session_id: str | None = None,
        mode: FileMode | None = None,
    ) -> WriteFileResult:
        """Write a whole file atomically (temp file and rename), creating parents and keeping its mode.

        ``content`` is a JSON string (UTF-8 text, or base64 with ``encoding``), kept as its JSON
        text and decoded batch by batch into the file (see :mod:`.content`): no whole decoded copy.

        Ours: ``mode`` (an octal string such as ``"0644"``, or a number up to ``0o7777``) sets the
        file's permission bits, new or overwritten (not the umask's, not the old file's)."""
        full = self.resolve(path, session_id)
        bits = file_mode(mode)
        source = Content(content, base64=encoding == "base64", batch=self.settings.io_batch_bytes)
        try:
            await run_sync(source.check)  # bad content is refused before anything is created
            try:
                target = await run_sync(prepare_write, full, bits)
            except OSError as exc:
                raise fs_error(exc, full, "file.write") from None
            batches = source.batches()

            def write_batch(fd: int) -> int:
                data = next(batches, None)
                if data is None:
                    return -1
                write_all(fd, data)
                return len(data)

            written = 0
            try:
                while (n := await run_sync(target.handle.run, write_batch)) >= 0:
                    written += n
                await run_sync(target.handle.run, commit, target)
            except OSError as exc:
                raise fs_error(exc, full, "file.write") from None
            finally:
                finish(target)
        finally:
            source.close()
        trim_after(written)
        return WriteFileResult(success=True, path=path, timestamp=now_iso(), bytes_written=written)

    @operation
    async def write_file_stream(
        self, path: str, data: AsyncIterable[bytes], session_id: str | None = None, mode: FileMode | None = None
    ) -> WriteFileResult:
        """Write a file from an async iterable of bytes (atomic, parents created, mode kept, or
        ``mode`` as for :meth:`write`).

        Memory holds at most one ``io_batch_bytes`` batch plus one incoming chunk."""
        full = self.resolve(path, session_id)
        if not hasattr(data, "__aiter__"):
            raise validation_error("data must be a stream of bytes", "data")
        bits = file_mode(mode)
        batch = self.settings.io_batch_bytes
        try:
            target = await run_sync(prepare_write, full, bits)
        except OSError as exc:
            raise fs_error(exc, full, "file.write") from None
        handle = target.handle
        source = data.__aiter__()
        buf = bytearray()
        total = 0

        async def flush() -> None:
            nonlocal total
            try:
                await run_sync(handle.run, write_all, buf)
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
                await run_sync(handle.run, commit, target)
            except OSError as exc:
                raise fs_error(exc, full, "file.write") from None
        finally:
            finish(target)
            trim_after(total)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        return WriteFileResult(success=True, path=path, timestamp=now_iso(), bytes_written=total)

    # delete, rename, move, mkdir ----------------------------------------------------------------

    @operation
    async def delete(self, path: str, session_id: str | None = None, recursive: bool | None = None) -> FileOpResult:
        """Delete a file or symlink (the link itself, never its target); a directory is 400
        IS_DIRECTORY.

        Ours: ``recursive`` deletes directories too: ``false`` an empty one only (a non-empty one
        is 409 FILE_EXISTS naming the path), ``true`` a directory with everything in it (symlinks
        inside are removed, never followed). ``/`` is never deleted recursively (400)."""
        full = self.resolve(path, session_id)

        def delete() -> None:
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                if recursive and os.path.realpath(full) == "/":
                    raise validation_error("path must not be / for a recursive delete", "path", path=full)
                if recursive is None:
                    raise SandboxError(
                        ErrorCode.IS_DIRECTORY,
                        f"Cannot delete directory with deleteFile() at '{full}'. Use exec('rm -rf <path>') instead.",
                        {"path": full, "operation": "file.delete"},
                    )
                if recursive:
                    shutil.rmtree(full)
                else:
                    os.rmdir(full)
                return
            os.unlink(full)

        try:
            await run_sync(delete)
        except OSError as exc:  # (inside a recursive delete: the entry that could not be deleted)
            raise fs_error(exc, exc.filename if isinstance(exc.filename, str) else full, "file.delete") from None
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
                    ErrorCode.FILE_NOT_FOUND,
                    f"Source file not found: {src}",
                    {"path": src, "operation": operation_name},
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
                        ErrorCode.FILE_NOT_FOUND,
                        f"Destination directory not found: {parent}",
                        {"path": parent, "operation": operation_name},
                    ) from None
                elif exc.errno == errno.EINVAL:  # a directory into itself
                    raise validation_error(
                        f"Cannot move {src} into itself ({target})", fields[1], path=target, operation=operation_name
                    ) from None
                else:
                    raise fs_error(exc, target, operation_name, fields[1]) from None

        try:
            await run_sync(move)
        except OSError as exc:
            raise fs_error(exc, src, operation_name, fields[0]) from None

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
                    raise oserror(errno.EEXIST if os.path.lexists(full) else errno.ENOTDIR, full) from None
            else:
                os.mkdir(full)

        try:
            await run_sync(mkdir)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not recursive:  # the contract: 500, like mkdir's own failure
                reason = f"mkdir: cannot create directory '{full}': No such file or directory"
                raise SandboxError(
                    ErrorCode.FILESYSTEM_ERROR,
                    reason,
                    {"path": full, "operation": "directory.create", "stderr": reason},
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
        inside a hidden directory. Subdirectories that cannot be read are listed but not entered.
        At most ``max_list_entries`` entries: past that the walk stops and ``truncated`` is true.
        The walk and the entries' models are made in a worker thread, never on the event loop."""
        full = self.resolve(path, session_id)
        opts = options or ListFilesOptions()
        limit = self.settings.max_list_entries
        try:
            files, truncated = await run_sync(list_tree, full, opts.recursive, opts.include_hidden, limit)
        except OSError as exc:
            raise fs_error(exc, full, "directory.list") from None
        trim_after(len(files) * _ENTRY_BYTES)
        return ListFilesResult(
            success=True, path=path, files=files, count=len(files), timestamp=now_iso(), truncated=truncated
        )

    @operation
    async def confine(self, path: str, field: str = "path") -> ConfinedPath:
        """Ours: the path inside the workspace that ``path`` names, by sandboxd's rule (for
        transports that confine every path and ``cwd`` to the workspace; no other operation uses
        it): relative to the workspace, an absolute path outside it re-rooted in it, symlinks
        resolved; one that resolves outside the workspace is 403 PERMISSION_DENIED naming the
        path and ``field`` (the name the caller's own field has, given back in the error). See
        :func:`~sandbox_services.files.paths.confine_path`."""
        if not _FIELD.match(field):
            raise validation_error("field must be 1-64 letters, digits, '.', '_' or '-'", "field")
        resolved = await run_sync(confine_path, path, self.registry.workspace, field)
        return ConfinedPath(success=True, path=path, resolved=resolved, timestamp=now_iso())

    @operation
    async def exists(self, path: str, session_id: str | None = None) -> ExistsResult:
        """Whether the path exists (symlinks followed, as ``test -e``)."""
        full = self.resolve(path, session_id)
        found = await run_sync(os.path.exists, full)
        return ExistsResult(success=True, path=path, exists=found, timestamp=now_iso())
