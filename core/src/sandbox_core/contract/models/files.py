"""Typed values of the files service: results and read-stream events (contract a2, b4).

Field names are snake_case in Python and camelCase on the wire (the contract's names).
"""

from __future__ import annotations

from typing import Literal

from sandbox_core.contract.models import Model

Encoding = Literal["utf-8", "base64"]
FileType = Literal["file", "directory", "symlink", "other"]


class ReadFileResult(Model):
    """``POST /api/read``: ``content`` is base64 exactly when ``is_binary`` (``encoding == "base64"``).

    ``size`` is the bytes of ``content`` (decoded). Ours, not upstream's, sent on a ranged or
    tail read only: ``offset`` (the absolute start of the bytes read), ``length`` (how many)
    and ``total_size`` (the file's size)."""

    success: bool
    path: str
    content: str
    timestamp: str
    encoding: Encoding
    is_binary: bool
    mime_type: str
    size: int
    offset: int | None = None
    length: int | None = None
    total_size: int | None = None


class WriteFileResult(Model):
    """``POST /api/write`` and ``write_file_stream``; ``bytes_written`` is the bytes on disk."""

    success: bool
    path: str
    timestamp: str
    bytes_written: int | None = None


class FileOpResult(Model):
    """``POST /api/delete``."""

    success: bool
    path: str
    timestamp: str


class RenameFileResult(Model):
    """``POST /api/rename`` (``path`` is the old path, also sent as ``old_path``) and ``/api/move``."""

    success: bool
    path: str
    new_path: str
    timestamp: str
    old_path: str | None = None


class MkdirResult(Model):
    success: bool
    path: str
    recursive: bool
    timestamp: str


class ExistsResult(Model):
    success: bool
    path: str
    exists: bool
    timestamp: str


class ListFilesOptions(Model):
    recursive: bool = False
    include_hidden: bool = False


class FilePermissions(Model):
    """The owner's permission bits."""

    readable: bool
    writable: bool
    executable: bool


class FileInfo(Model):
    """One entry of a listing; ``modified_at`` is ISO 8601 in UTC with a ``Z`` (upstream: no zone)."""

    name: str
    absolute_path: str
    relative_path: str
    type: FileType
    size: int
    modified_at: str
    mode: str
    permissions: FilePermissions


class ListFilesResult(Model):
    """``POST /api/list-files``. ``truncated`` (our addition, sent only when true): the listing
    stopped at the files service's ``max_list_entries`` and ``files`` holds the first ones."""

    success: bool
    path: str
    files: list[FileInfo]
    count: int
    timestamp: str
    truncated: bool = False


# Read-stream events (contract section b4). ``type`` is the tag; they carry no timestamp.


class FileStreamEvent(Model, tag_field="type"):
    pass


class FileMetadataEvent(FileStreamEvent, tag="metadata"):
    """``size`` is the file's size. Ours, on a ranged or tail stream only: ``offset`` and
    ``length`` (the bytes the stream sends) and ``total_size`` (the file's size, as ``size``)."""

    mime_type: str
    size: int
    is_binary: bool
    encoding: Encoding
    offset: int | None = None
    length: int | None = None
    total_size: int | None = None


class FileChunkEvent(FileStreamEvent, tag="chunk"):
    """Up to 65 535 raw bytes: base64 for binary files, text for text files."""

    data: str


class FileCompleteEvent(FileStreamEvent, tag="complete"):
    bytes_read: int


class FileErrorEvent(FileStreamEvent, tag="error"):
    """An in-band error (the stream's HTTP status stays 200); ``code`` is our addition."""

    error: str
    code: str | None = None


AnyFileStreamEvent = FileMetadataEvent | FileChunkEvent | FileCompleteEvent | FileErrorEvent

__all__ = [
    "AnyFileStreamEvent",
    "Encoding",
    "ExistsResult",
    "FileChunkEvent",
    "FileCompleteEvent",
    "FileErrorEvent",
    "FileInfo",
    "FileMetadataEvent",
    "FileOpResult",
    "FilePermissions",
    "FileStreamEvent",
    "FileType",
    "ListFilesOptions",
    "ListFilesResult",
    "MkdirResult",
    "ReadFileResult",
    "RenameFileResult",
    "WriteFileResult",
]


class ConfinedPath(Model):
    """Ours: ``files.confine``: ``path`` as given, ``resolved`` the path inside the workspace it names."""

    success: bool
    path: str
    resolved: str
    timestamp: str
