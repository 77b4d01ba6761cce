"""MIME types of files: by extension from Python's built-in table, else by sniffing the content."""

from __future__ import annotations

import codecs
import functools
import mimetypes
import os
from collections.abc import Callable

SNIFF_BYTES = 8192  # how much of a file sniff_mime looks at

_EXTRA_TYPES = {
    "application/yaml": (".yaml", ".yml"),
    "application/toml": (".toml",),
    "text/markdown": (".md", ".markdown"),
    "text/typescript": (".ts", ".mts", ".cts"),
    "text/tsx": (".tsx",),
    "text/jsx": (".jsx",),
    "application/sql": (".sql",),
    "application/x-ndjson": (".jsonl", ".ndjson"),
}


@functools.cache
def _table() -> mimetypes.MimeTypes:
    """The built-in table only (the same answer on every host) plus ours; built on first use,
    so a server that never reads a file does not hold it."""
    table = mimetypes.MimeTypes()
    for mime, exts in _EXTRA_TYPES.items():
        for ext in exts:
            table.add_type(mime, ext)
    return table


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
    mime, encoding = _table().guess_type("file" + ext, strict=False) if ext else (None, None)
    if encoding is not None:
        return _COMPRESSED.get(encoding, "application/octet-stream")
    if mime is None or mime == "application/octet-stream":
        try:
            return sniff_mime(head())
        except OSError:
            return "application/octet-stream"
    return mime
