"""The expression codec: every value survives a round trip, and no input crashes a session or
grows its buffers (hypothesis)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capnweb import (
    INVALID_DATE,
    UNDEFINED,
    BigInt,
    RpcError,
    RpcSession,
    RpcTarget,
    TypedBytes,
    Url,
)
from capnweb.codec import Devaluator, Evaluator

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.integers().map(BigInt),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(max_size=64),
    st.tuples(st.binary(max_size=16).map(lambda b: b * 8), st.sampled_from(["Int16Array", "Float64Array"])).map(
        lambda t: TypedBytes(t[0], t[1])
    ),
    st.integers(min_value=-(10**15), max_value=10**15).map(lambda us: EPOCH + dt.timedelta(microseconds=us)),
    st.just(UNDEFINED),
    st.just(INVALID_DATE),
    st.text().map(Url),
    st.builds(
        RpcError,
        st.sampled_from(["Error", "TypeError", "RangeError"]),
        st.text(),
        st.dictionaries(st.text(min_size=1).filter(lambda k: k not in ("name", "message", "stack")), st.integers()),
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(), inner, max_size=5)),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, RpcError):
        return a == b
    if isinstance(a, (BigInt, TypedBytes, Url)):
        return type(a) is type(b) and a == b and getattr(a, "js_type", None) == getattr(b, "js_type", None)
    return type(a) is type(b) and a == b


def session(sent: list[str] | None = None) -> RpcSession:
    out = sent if sent is not None else []
    return RpcSession(RpcTarget(), send=out.append)


async def test_every_value_survives_a_round_trip_through_json() -> None:
    s = session()

    @settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(values)
    def round_trip(value: Any) -> None:
        wire = msgspec.json.encode(Devaluator(s).devaluate(value))
        back = Evaluator(s).evaluate(msgspec.json.decode(wire))
        assert same(value, back), (value, wire, back)

    round_trip()


async def test_arrays_are_escaped_at_every_depth() -> None:
    s = session()
    assert Devaluator(s).devaluate([1, [2, [3]], {"a": []}]) == [[1, [[2, [[3]]]], {"a": [[]]}]]
    assert Devaluator(s).devaluate(2**60) == ["bigint", str(2**60)]
    assert Devaluator(s).devaluate(b"\x01\x02\x03\x04") == ["bytes", "AQIDBA"]  # no padding
    assert Evaluator(s).evaluate(["bytes", "AQIDBA=="]) == b"\x01\x02\x03\x04"  # padding accepted
    assert Devaluator(s).devaluate(EPOCH + dt.timedelta(milliseconds=1.5)) == ["date", 1.5]


message_parts = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-5, max_value=5),
        st.sampled_from(
            [
                *("push", "pull", "resolve", "reject", "release", "abort", "stream", "pipe", "pipeline", "import"),
                *("export", "promise", "remap", "readable", "writable", "bytes", "date", "error", "bigint", "x"),
            ]
        ),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=25,
)


async def test_arbitrary_input_never_crashes_a_session_or_grows_it() -> None:
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(st.lists(st.one_of(message_parts.map(lambda m: msgspec.json.encode(m).decode()), st.text()), max_size=8))
    def feed(messages: list[str]) -> None:
        sent: list[str] = []
        s = session(sent)
        for message in messages:
            s.receive(message)  # never raises
        if s.closed is not None:  # it aborted (and said so), or the peer did
            peer_aborted = any(m.startswith('["abort"') for m in messages)
            assert peer_aborted or (sent and msgspec.json.decode(sent[-1])[0] == "abort")
            assert s.stats() == {"imports": 0, "exports": 0, "pipes": 0}
        else:
            assert s.stats()["exports"] <= 1 + len(messages)

    feed()
    await asyncio.sleep(0)


async def test_arbitrary_bytes_never_crash_a_session() -> None:
    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200))
    def feed(data: bytes) -> None:
        s = session()
        s.receive(data)
        s.receive(data.decode("utf-8", "replace"))

    feed()
