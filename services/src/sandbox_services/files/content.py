"""The content of a whole-file write, decoded batch by batch straight into the file.

``content`` reaches the service as its JSON text (a ``msgspec.Raw``: for a JSON body, a view of
the request body, not a copy). A string without escapes, which every base64 content is, is used
where it lies: its bytes are the UTF-8 text, and base64 is decoded from them one batch at a
time, so a write never holds a whole decoded copy next to the body (a 133 MB base64 body peaks
at about one body, not three). A string with escapes (text with newlines, quotes, ``\\uXXXX``)
is decoded into a ``str`` first, and then encoded batch by batch.

Everything is checked before the file is touched: :meth:`Content.check` runs the same decoding
as :meth:`Content.batches` and drops the output, so bad content is a 400 that creates nothing
(not even the parent directories). Both block: call them in a worker thread.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterator

import msgspec
import pybase64

from sandbox_core.errors import SandboxError, validation_error

_QUOTE = ord('"')
_PAD = ord("=")
_ESCAPE = re.compile(rb"\\")


def json_string(raw: msgspec.Raw, field: str) -> memoryview | str:
    """The JSON string ``raw`` holds: a view of its UTF-8 bytes when it has no escapes (no copy),
    else the decoded ``str``. Not a string: 400 naming ``field`` (msgspec's own message)."""
    view = memoryview(raw)
    if len(view) >= 2 and view[0] == _QUOTE and _ESCAPE.search(view) is None:
        return view[1:-1]  # msgspec has checked the string's syntax (no control characters)
    view.release()
    try:
        return msgspec.json.decode(raw, type=str)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise validation_error(f"Invalid field '{field}' in request body: {exc} - at `$.{field}`", field) from None


def _invalid_base64(detail: object) -> SandboxError:
    return validation_error(
        f"Invalid base64 content: must contain only A-Z, a-z, 0-9, +, / and = padding ({detail})", "content"
    )


class Content:
    """What a write puts in its file: ``text`` (see :func:`json_string`) as UTF-8, or decoded
    from base64, produced in batches of about ``batch`` bytes."""

    def __init__(self, raw: msgspec.Raw, *, base64: bool, batch: int) -> None:
        self.raw = raw
        self.base64 = base64
        self.step = max(4, batch - batch % 4)  # base64: whole quads, so batches decode alone
        self.text: memoryview | str | None = None

    def _text(self) -> memoryview | str:
        if self.text is None:
            self.text = json_string(self.raw, "content")
        return self.text

    def check(self) -> None:
        """400 VALIDATION_FAILED naming ``content`` unless every batch can be produced."""
        text = self._text()
        if not self.base64 and isinstance(text, memoryview):
            decoder = codecs.getincrementaldecoder("utf-8")()
            try:
                for start in range(0, len(text), self.step):
                    decoder.decode(text[start : start + self.step])
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise validation_error("content is not valid UTF-8 text", "content") from None
            return
        if not self.base64 and isinstance(text, str) and text.isascii():
            return
        for _ in self.batches():
            pass

    def batches(self) -> Iterator[bytes | memoryview]:
        """The file's bytes, batch by batch (raises what :meth:`check` raises)."""
        text = self._text()
        step = self.step
        if not self.base64:
            if isinstance(text, memoryview):
                for start in range(0, len(text), step):
                    yield text[start : start + step]
                return
            for start in range(0, len(text), step):
                try:
                    yield text[start : start + step].encode("utf-8")
                except UnicodeEncodeError:
                    raise validation_error("content is not valid Unicode text", "content") from None
            return
        for start in range(0, len(text), step):
            chunk = text[start : start + step]
            # "=" ends the data: only the last batch may end with padding
            if start + step < len(text) and (chunk[-1] == _PAD or chunk[-1] == "="):
                raise _invalid_base64("padding before the end")
            try:
                yield pybase64.b64decode(chunk, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _invalid_base64(exc) from None

    def close(self) -> None:
        """Let go of the view on the request body."""
        if isinstance(self.text, memoryview):
            self.text.release()
        self.text = None
