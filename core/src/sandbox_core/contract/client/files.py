"""``Sandbox.files``: read, write, stream and list files in the sandbox.

Relative paths resolve against the session's current directory (``default`` when no
``session_id`` is given). Errors raise the typed exceptions of :mod:`sandbox_core.errors`
(``FileNotFound``, ``FileSystemError`` for the other filesystem codes, ``ValidationFailed``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Literal

import pybase64

from sandbox_core.contract.client import _params, _typed
from sandbox_core.contract.models.files import (
    AnyFileStreamEvent,
    ConfinedPath,
    ExistsResult,
    FileOpResult,
    ListFilesResult,
    MkdirResult,
    ReadFileResult,
    RenameFileResult,
    WriteFileResult,
)

if TYPE_CHECKING:
    from sandbox_core.contract.client import Sandbox

Encoding = Literal["utf-8", "utf8", "base64"]


class FilesAPI:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    async def read(
        self,
        path: str,
        *,
        encoding: Encoding | None = None,
        offset: int | None = None,
        length: int | None = None,
        tail_lines: int | None = None,
        session_id: str | None = None,
    ) -> ReadFileResult:
        """The file (at most 32 MiB read): text as UTF-8, binary as base64 (see ``is_binary``).

        ``offset`` (bytes; negative counts from the end) and ``length`` read a range of it,
        ``tail_lines`` its last lines (not with ``offset`` or ``length``); the result's
        ``offset``, ``length`` and ``total_size`` say which bytes came. A text range never cuts
        a character: its edges move to character boundaries (at most 3 bytes each)."""
        return await self._sb.call_as(
            ReadFileResult,
            "files",
            "read",
            **_params(
                path=path, encoding=encoding, offset=offset, length=length, tailLines=tail_lines, sessionId=session_id
            ),
        )

    def read_stream(
        self,
        path: str,
        *,
        encoding: Encoding | None = None,
        offset: int | None = None,
        length: int | None = None,
        tail_lines: int | None = None,
        session_id: str | None = None,
    ) -> AsyncGenerator[AnyFileStreamEvent, None]:
        """The file as typed events: metadata, chunks (base64 when binary), complete; or one error event.

        ``offset``, ``length`` and ``tail_lines`` as for :meth:`read`, without a size limit (the
        metadata event then says the range's ``offset``, ``length`` and ``total_size``);
        ``encoding`` forces text or base64 chunks (default: by the file's MIME type)."""
        return _typed(
            self._sb.stream(
                "files",
                "read_stream",
                **_params(
                    path=path,
                    encoding=encoding,
                    offset=offset,
                    length=length,
                    tailLines=tail_lines,
                    sessionId=session_id,
                ),
            ),
            AnyFileStreamEvent,
        )

    async def write(
        self,
        path: str,
        content: str | bytes,
        *,
        encoding: Encoding | None = None,
        session_id: str | None = None,
        mode: str | int | None = None,
    ) -> WriteFileResult:
        """Write a whole file atomically (parents created, mode kept unless ``mode``, ours: an octal
        string such as ``"0644"`` or a number); ``bytes`` are sent as base64."""
        if isinstance(content, (bytes, bytearray, memoryview)):
            content, encoding = pybase64.b64encode_as_string(content), "base64"
        return await self._sb.call_as(
            WriteFileResult,
            "files",
            "write",
            **_params(path=path, content=content, encoding=encoding, sessionId=session_id, mode=mode),
        )

    async def delete(self, path: str, *, session_id: str | None = None, recursive: bool | None = None) -> FileOpResult:
        """Delete a file or symlink (a directory is ``IS_DIRECTORY``). Ours: ``recursive=False``
        deletes an empty directory too (a non-empty one is ``FILE_EXISTS``), ``True`` a whole tree."""
        return await self._sb.call_as(
            FileOpResult, "files", "delete", **_params(path=path, sessionId=session_id, recursive=recursive)
        )

    async def confine(self, path: str, *, field: str | None = None) -> str:
        """Ours: the path inside the workspace ``path`` names (relative to it, an absolute path
        outside it re-rooted, symlinks resolved); one resolving outside is ``PERMISSION_DENIED``."""
        result = await self._sb.call_as(ConfinedPath, "files", "confine", **_params(path=path, field=field))
        return result.resolved

    async def rename(self, old_path: str, new_path: str, *, session_id: str | None = None) -> RenameFileResult:
        return await self._sb.call_as(
            RenameFileResult, "files", "rename", **_params(oldPath=old_path, newPath=new_path, sessionId=session_id)
        )

    async def move(self, source_path: str, destination_path: str, *, session_id: str | None = None) -> RenameFileResult:
        """Move like ``mv``: into ``destination_path`` when it is an existing directory."""
        return await self._sb.call_as(
            RenameFileResult,
            "files",
            "move",
            **_params(sourcePath=source_path, destinationPath=destination_path, sessionId=session_id),
        )

    async def mkdir(self, path: str, *, recursive: bool = False, session_id: str | None = None) -> MkdirResult:
        return await self._sb.call_as(
            MkdirResult, "files", "mkdir", **_params(path=path, recursive=recursive, sessionId=session_id)
        )

    async def list(
        self, path: str, *, recursive: bool = False, include_hidden: bool = False, session_id: str | None = None
    ) -> ListFilesResult:
        """A directory's entries (the whole tree when ``recursive``; ``.*`` only with ``include_hidden``)."""
        return await self._sb.call_as(
            ListFilesResult,
            "files",
            "list_files",
            **_params(
                path=path, options={"recursive": recursive, "includeHidden": include_hidden}, sessionId=session_id
            ),
        )

    async def exists(self, path: str, *, session_id: str | None = None) -> ExistsResult:
        return await self._sb.call_as(ExistsResult, "files", "exists", **_params(path=path, sessionId=session_id))
