"""Ranged and tail reads: which bytes of a file a read covers. Blocking: call in a worker thread.

A range is ``offset`` (bytes; negative counts from the end, and a start before the file's
first byte is its first byte) and ``length`` (clipped at the end of the file); ``tail_lines``
is the last N lines, as ``tail -n N`` counts them: a final newline ends the last line, it does
not start an empty one. The tail is found by reading backwards from the end in blocks, so its
cost is the size of the tail, not of the file.

A range read as text (``encoding`` utf-8, or a text file read without one) never cuts a
character: its start moves forward past the continuation bytes of a character that began
before it, and its end moves back to the start of a character it would cut (forward to the
end of that character instead when moving back would leave nothing of a non-empty range).
Each edge moves at most 3 bytes, and the answer's ``offset`` and ``length`` are the bytes
actually read, so the next page starts at ``offset + length``. Base64 ranges are exact.
"""

from __future__ import annotations

import os

from sandbox_core.errors import validation_error

from .fdio import pread_full

#: Bytes read per step of a backward tail scan.
TAIL_BLOCK = 64 * 1024
#: The longest UTF-8 character, in bytes.
_UTF8_MAX = 4


def check_options(offset: int | None, length: int | None, tail_lines: int | None) -> bool:
    """Whether the options ask for a range or a tail (400 naming the field that conflicts)."""
    if tail_lines is not None:
        for name, value in (("offset", offset), ("length", length)):
            if value is not None:
                raise validation_error(
                    f"Invalid field '{name}': tailLines reads the end of the file, it takes no {name}", name
                )
        return True
    return offset is not None or length is not None


def span(size: int, offset: int | None, length: int | None) -> tuple[int, int]:
    """``(start, end)`` of the range; an ``offset`` past the end is 400 naming ``offset``."""
    start = 0 if offset is None else offset
    if start < 0:
        start = max(0, size + start)
    elif start > size:
        raise validation_error(
            f"Invalid field 'offset': {offset} is past the end of the file ({size} bytes)",
            "offset",
            offset=offset,
            totalSize=size,
        )
    end = size if length is None else min(size, start + length)
    return start, end


class TailScan:
    """Finds where the last ``lines`` lines of a file of ``size`` bytes begin, reading backwards
    from the end in blocks, at most about ``budget`` bytes per :meth:`step` (so a caller can stop
    between steps: a tail of a file without newlines is the whole file). With ``cap``, the scan
    stops as soon as the tail is known to be longer than ``cap`` bytes (``too_long``)."""

    def __init__(self, size: int, lines: int, cap: int | None = None, block: int = TAIL_BLOCK) -> None:
        self.size = size
        self.need = lines
        self.cap = cap
        self.block = block
        self.pos = -1  # the scan goes on below this offset (-1: not started)
        self.start: int | None = size if lines == 0 or size == 0 else None
        self.too_long = False

    @property
    def done(self) -> bool:
        return self.start is not None or self.too_long

    def step(self, fd: int, budget: int) -> bool:
        """Scan on, about ``budget`` bytes; whether the scan is done."""
        if self.done:
            return True
        if self.pos < 0:  # a final newline ends the last line, it does not start an empty one
            self.pos = self.size - 1 if os.pread(fd, 1, self.size - 1) == b"\n" else self.size
        scanned = 0
        while self.pos > 0 and scanned < budget:
            low = max(0, self.pos - self.block)
            data = pread_full(fd, self.pos - low, low)
            index = len(data)
            while self.need:
                index = data.rfind(b"\n", 0, index)
                if index < 0:
                    break
                self.need -= 1
            if self.need == 0:
                start = low + index + 1
                if self.cap is not None and self.size - start > self.cap:
                    self.too_long = True
                else:
                    self.start = start
                return True
            if self.cap is not None and self.size - low > self.cap:
                self.too_long = True
                return True
            scanned += self.pos - low
            self.pos = low
        if self.pos <= 0:
            self.start = 0  # fewer lines than asked: all of the file
        return self.done


def _continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def char_edges(fd: int, start: int, end: int, size: int) -> tuple[int, int]:
    """``(start, end)`` moved so that the range cuts no UTF-8 character (see the module doc)."""
    if start >= end:
        return start, end
    if start > 0:
        head = os.pread(fd, _UTF8_MAX - 1, start)
        skip = 0
        while skip < len(head) and _continuation(head[skip]):
            skip += 1
        start += skip
    if end < size:
        low = max(0, end - (_UTF8_MAX - 1))
        around = os.pread(fd, end - low + _UTF8_MAX - 1, low)  # 3 bytes either side of the end
        at = end - low
        back = 0
        while back < _UTF8_MAX - 1 and 0 <= at - back < len(around) and _continuation(around[at - back]):
            back += 1
        if back and at - back >= 0 and not _continuation(around[at - back]):
            if end - back > start:
                end -= back
            else:  # moving back leaves nothing: take the whole character
                forward = 0
                while at + forward < len(around) and _continuation(around[at + forward]):
                    forward += 1
                end += forward
    return start, max(start, min(end, size))
