"""Server-sent events: an encoder and an incremental, bounded decoder (sans-IO).

The decoder takes bytes in chunks of any size and yields complete events; a partial line
or event is carried to the next chunk. It accepts ``\\n``, ``\\r\\n`` and ``\\r`` line ends,
``data:`` with or without the space, multi-line data, and ``event:``/``id:`` lines. A line or
an event longer than ``max_event_bytes`` raises :class:`SSEError` instead of growing.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

_encoder = msgspec.json.Encoder()


def encode_event(data: object, event: str | None = None) -> bytes:
    """One SSE event carrying ``data`` as JSON (``event:`` line only when ``event`` is given)."""
    payload = _encoder.encode(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


class SSEError(ValueError):
    """The peer sent an SSE stream that breaks a limit."""


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Incremental SSE parser with a bound on any one line or event."""

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self._tail = b""
        self._data: list[str] = []
        self._size = 0
        self._event: str | None = None
        self._id: str | None = None
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not chunk:
            return events
        buf = self._tail + chunk if self._tail else chunk
        if self._skip_lf and buf[:1] == b"\n":
            buf = buf[1:]
        self._skip_lf = False
        pos = 0
        n = len(buf)
        while pos < n:
            nl = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, nl if nl != -1 else n)
            if cr != -1:
                end, nxt = cr, cr + 1
                if nxt < n and buf[nxt : nxt + 1] == b"\n":
                    nxt += 1
                elif nxt == n:
                    self._skip_lf = True
            elif nl != -1:
                end, nxt = nl, nl + 1
            else:
                break
            self._line(buf[pos:end], events)
            pos = nxt
        self._tail = buf[pos:]
        if len(self._tail) + self._size > self.max_event_bytes:
            raise SSEError(f"SSE event exceeds {self.max_event_bytes} bytes")
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if not raw:
            if self._data:
                events.append(SSEEvent("\n".join(self._data), self._event, self._id))
            self._data, self._size, self._event = [], 0, None
            return
        if raw[:1] == b":":
            return
        name, sep, value = raw.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        text = value.decode("utf-8", errors="replace")
        if name == b"data":
            self._data.append(text)
            self._size += len(value) + 1
            if self._size > self.max_event_bytes:
                raise SSEError(f"SSE event exceeds {self.max_event_bytes} bytes")
        elif name == b"event":
            self._event = text
        elif name == b"id":
            self._id = text

    def close(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line is still delivered."""
        events: list[SSEEvent] = []
        if self._tail:
            self._line(self._tail, events)
            self._tail = b""
        if self._data:
            self._line(b"", events)
        return events
