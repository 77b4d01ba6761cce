"""The server's frame parser on any input: it never raises, and answers everything that is not
a request or a cancel with one error frame of the contract (PARSE_ERROR, INVALID_REQUEST)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_transport_ws.frames import InFrame
from sandbox_transport_ws.server import parse_frame

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
frame_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["request", "cancel", "response", "stream", "error", ""]) | json_values,
        "id": st.text(max_size=12) | st.integers() | json_values,
        "method": st.sampled_from(["GET", "POST", "PUT", "DELETE"]) | json_values,
        "path": st.sampled_from(["/api/ping", "/api/execute", "/x?y=1"]) | json_values,
        "body": json_values,
        "headers": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3) | json_values,
    },
)


def check(data: str | bytes) -> None:
    result = parse_frame(data)
    if isinstance(result, InFrame):
        assert result.type in ("request", "cancel")
        if result.type == "request":
            assert result.id is not None and isinstance(result.method, str) and isinstance(result.path, str)
        return
    frame: dict[str, Any] = json.loads(result)
    assert frame["type"] == "error" and frame["code"] in ("PARSE_ERROR", "INVALID_REQUEST") and frame["status"] == 400
    assert isinstance(frame["message"], str) and frame["message"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_any_text_or_bytes(data: str | bytes) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(frame_like)
def test_any_frame_shaped_object(frame: dict[str, Any]) -> None:
    check(json.dumps(frame))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value(value: Any) -> None:
    check(json.dumps(value))


def test_frames_nested_too_deeply_are_parse_errors() -> None:
    """msgspec raises RecursionError past its nesting limit: the parser answers PARSE_ERROR (or
    INVALID_REQUEST, with no id, when a field it read before the deep part is wrong)."""
    deep = "[" * 100_000 + "]" * 100_000
    for data, code in (
        ('{"x":' + deep + "}", "PARSE_ERROR"),
        ('{"type":"request","id":"a","body":' + deep + "}", "PARSE_ERROR"),
        ('{"x":' + deep + ',"type":1,"id":"b"}', "PARSE_ERROR"),
        ('{"type":1,"id":"b","x":' + deep + "}", "INVALID_REQUEST"),  # the id lookup meets the depth too
    ):
        for form in (data, data.encode()):
            result = parse_frame(form)
            assert isinstance(result, str)
            frame = json.loads(result)
            assert (frame["type"], frame["code"], frame["status"]) == ("error", code, 400), frame
            assert "id" not in frame
