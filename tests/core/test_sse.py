"""The SSE decoder: any chunking gives the same events; no input grows a buffer past its bound."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_core.sse import SSEDecoder, SSEError, encode_event

payloads = st.lists(st.dictionaries(st.text(max_size=8), st.text(max_size=30), max_size=3), min_size=1, max_size=8)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@given(
    payloads,
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
)
def test_any_chunking_same_events(events: list[dict[str, str]], cuts: list[int], eol: str, named: bool) -> None:
    wire = b"".join(encode_event(e, "msg" if named else None) for e in events).replace(b"\n", eol.encode())
    decoder = SSEDecoder()
    got = []
    for piece in split(wire, cuts):
        got.extend(decoder.feed(piece))
    got.extend(decoder.close())
    assert [json.loads(e.data) for e in got] == events
    assert all(e.event == ("msg" if named else None) for e in got)


def test_field_forms() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"data:a\ndata: b\n: comment\nevent:x\nid: 7\n\ndata: [DONE]\n\n")
    assert [(e.data, e.event, e.id) for e in events] == [
        ("a\nb", "x", "7"),
        ("[DONE]", None, "7"),
    ]  # the last id persists, as the SSE spec says


@given(st.binary(max_size=4096), st.lists(st.integers(min_value=0, max_value=5000), max_size=10))
def test_arbitrary_bytes_never_exceed_the_bound(data: bytes, cuts: list[int]) -> None:
    decoder = SSEDecoder(max_event_bytes=256)
    try:
        for piece in split(data, cuts):
            decoder.feed(piece)
            assert len(decoder._tail) + decoder._size <= 256
        decoder.close()
    except SSEError:
        pass


def test_line_without_end_is_bounded() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(SSEError):
        for _ in range(100):
            decoder.feed(b"x" * 100)
