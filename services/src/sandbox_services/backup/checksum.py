"""The checksum an archive carries, so that a restore never puts damaged bytes in place.

squashfs checks none of its data blocks: a block changed on disk (or in transit) restores as
wrong bytes and ``unsquashfs`` says nothing. So ``create_archive`` appends a trailer of
:data:`TRAILER_BYTES` to the squashfs image: a magic, the image's length and its SHA-256.
``restore_archive`` reads the trailer, hashes the image and refuses a mismatch before it
extracts anything. The squashfs tools (and kernels, squashfuse) read an image only up to the
length its superblock gives, so an archive with a trailer is still an ordinary squashfs file.

An archive whose last bytes are not a trailer (one made elsewhere, or cut short) has no
recorded checksum: :func:`read_trailer` says so with None and the caller decides.

Everything here blocks (it reads the whole image): call it in a worker thread with a
``threading.Event`` that, once set, makes it stop at the next chunk.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from dataclasses import dataclass

MAGIC = b"sandbox-sqsh-sum"
#: magic, SHA-256 of the image, the image's length in bytes, 8 reserved bytes (zero)
_TRAILER = struct.Struct("<16s32sQ8x")
TRAILER_BYTES = _TRAILER.size
CHUNK = 1024 * 1024


class Stopped(Exception):
    """The caller went away or its time ran out: the hash was abandoned."""


@dataclass(frozen=True)
class Trailer:
    sha256: bytes
    length: int


def digest(fd: int, length: int, stop: threading.Event) -> bytes:
    """The SHA-256 of the first ``length`` bytes of ``fd`` (read with ``pread``: the descriptor's
    offset is left alone); fewer bytes there is an EOFError."""
    h = hashlib.sha256()
    offset = 0
    while offset < length:
        if stop.is_set():
            raise Stopped
        data = os.pread(fd, min(CHUNK, length - offset), offset)
        if not data:
            raise EOFError(f"the archive ends after {offset} of {length} bytes")
        h.update(data)
        offset += len(data)
    return h.digest()


def read_trailer(fd: int) -> Trailer | None:
    """The trailer at the end of ``fd``, or None when its last bytes are not one (whose length
    also agrees with the file's size)."""
    size = os.fstat(fd).st_size
    if size < TRAILER_BYTES:
        return None
    magic, sha256, length = _TRAILER.unpack(os.pread(fd, TRAILER_BYTES, size - TRAILER_BYTES))
    if magic != MAGIC or length != size - TRAILER_BYTES:
        return None
    return Trailer(sha256, length)


def append_trailer(path: str, stop: threading.Event) -> int:
    """Hash the squashfs image at ``path`` and append its trailer; the archive's size."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        length = os.fstat(fd).st_size
        trailer = _TRAILER.pack(MAGIC, digest(fd, length, stop), length)
        if os.pwrite(fd, trailer, length) != len(trailer):
            raise OSError(f"short write of the archive's checksum to {path}")
        return length + len(trailer)
    finally:
        os.close(fd)
