"""The real capnweb client (Node, capnweb 0.12.0) against our engine's server (TestApi).

Every scenario of capnweb_client.mjs runs over WebSocket, and over HTTP batch where it makes
sense; results are compared with exact values (the real capnweb's own answers, recorded in the
vectors, with the differences our value model documents). For the plainer scenarios the frames
our server exchanged are compared with the vector's (as multisets per direction: how the two
directions interleave is timing).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from capnweb_peer import PyServer, format_frames, parse_frames, run_js_client, vector
from capnweb_peer import py_capnweb_server as py_capnweb_server  # the fixture

BYTES = "Uint8Array"


def b(*values: int) -> dict[str, Any]:
    return {"$bytes": list(values), "$type": BYTES}


SPECIAL_JS = {  # what capnweb answers when it echoes SPECIAL() to itself
    "big": {"$bigint": "123"},
    "huge": {"$bigint": "1180591620717411303424"},
    "neg": {"$bigint": "-18446744073709551616"},
    "d": {"$date": 0},
    "d2": {"$date": 1700000000123},
    "b": b(1, 2, 3),
    "empty": b(),
    "u": {"$undefined": True},
    "inf": {"$num": "inf"},
    "ninf": {"$num": "-inf"},
    "nan": {"$num": "nan"},
    "arr": [1, [2, 3], []],
    "nul": None,
    "err": {"$error": {"name": "TypeError", "message": "te", "props": {}}},
    "s": "str \u00e9 \U0001f600",
    "f": 1.5,
    "t": True,
    "obj": {"nested": {"x": [1]}},
}

BOOM = {"name": "RangeError", "message": "boom", "props": {"code": 42}}

# scenario -> the client's printed result, as the real capnweb server gives it
EXPECTED: dict[str, dict[str, Any]] = {
    "simple": {"ok": True, "value": 3},
    "pipeline_prop": {"ok": True, "value": "user1"},
    "pipeline_arg": {"ok": True, "value": "hello, user7"},
    "pipeline_target": {"ok": True, "value": 11},
    "batch_multi": {"ok": True, "value": [5, "user2", ["tag3", "user"]]},
    "callback": {"ok": True, "value": {"got": 40}},
    "client_main": {"ok": True, "value": "pong:hi"},
    "target_return": {"ok": True, "value": {"inc": 7, "value": 7, "before": 0, "after": 1}},
    "target_arg": {"ok": True, "value": {"got": 8, "local": 8}},
    "error": {"ok": False, "error": BOOM},
    "error_pipelined": {"ok": True, "value": BOOM},
    "special": {"ok": True, "value": SPECIAL_JS},
    "echo_error_value": {
        "ok": True,
        "value": {
            "$error": {"name": "RangeError", "message": "with props", "props": {"code": 7, "detail": {"a": [1, 2]}}}
        },
    },
    "map": {"ok": True, "value": ["ann", "bob"]},
    "map_capture": {"ok": True, "value": ["hello, ann", "hello, bob"]},
    "stream_return": {"ok": True, "value": [b(0, 1, 2), b(1, 2, 3), b(2, 3, 4)]},
    "stream_arg": {"ok": True, "value": {"total": 7, "chunks": 3}},
    "writable_arg": {"ok": True, "value": {"result": "done", "got": ["x1", b(9, 9)], "closed": True}},
    "reader_cancel": {"ok": True, "value": {"first": b(0, 1, 2), "done": False, "after": 4}},
    "backpressure": {"ok": True, "value": {"chunks": 10, "bytes": 655360, "contentOk": True}},
    "slow_upload": {"ok": True, "value": {"total": 655360, "chunks": 10}},
    "concurrent": {"ok": True, "value": {"order": ["fast", "mid", "slow"], "results": ["slow", "fast", "mid"]}},
    "unknown_method": {
        "ok": False,
        "error": {"name": "TypeError", "message": "'noSuchMethod' is not a function.", "props": {}},
    },
    "dispose_main": {
        "ok": True,
        "value": {
            "before": 3,
            "after": {"name": "Error", "message": "Attempted to use RPC stub after it has been disposed.", "props": {}},
            "close": {"code": 3000, "reason": "RPC session was shut down by disposing the main stub"},
        },
    },
}

# The expected results through our server: where our engine answered differently by design, the
# difference would be written here (none now: a bigint comes back as a bigint, as BigInt(int)).
PY_EXPECTED = dict(EXPECTED)

WS_SCENARIOS = sorted(EXPECTED)
BATCH_SCENARIOS = [
    "simple",
    "pipeline_prop",
    "pipeline_arg",
    "pipeline_target",
    "batch_multi",
    "error",
    "error_pipelined",
    "special",
    "echo_error_value",
    "map",
    "map_capture",
    "unknown_method",
]

# scenarios whose frames must equal the vector's (as multisets per direction). Not map /
# map_capture: capnweb answers a remap with one exported promise per element
# ([[["promise",-1],["promise",-2]]] then a resolve for each), our engine with the values inline;
# both are valid and the client gets the same result.
WIRE_SCENARIOS = [
    "simple",
    "pipeline_prop",
    "pipeline_arg",
    "pipeline_target",
    "batch_multi",
    "callback",
    "client_main",
    "target_return",
    "target_arg",
    "error",
    "error_pipelined",
    "echo_error_value",
    "stream_return",
    "stream_arg",
    "writable_arg",
    "concurrent",
    "unknown_method",
]
# In these, how many stream acks and releases go out before the client closes is timing: the
# client's acks and releases and the server's releases are left out of the comparison.
STREAM_SCENARIOS = {"stream_return", "stream_arg", "writable_arg"}


def canonical(messages: list[Any]) -> Counter[str]:
    return Counter(json.dumps(m, sort_keys=True) for m in messages)


def comparable(messages: list[Any], direction: str, scenario: str) -> list[Any]:
    """Leave out the abort the Node server tries to send into the closed socket (the vectors end
    with it), and in stream scenarios what depends on timing (see STREAM_SCENARIOS)."""
    out = [m for m in messages if m[0] != "abort"]
    if scenario in STREAM_SCENARIOS:
        out = [m for m in out if m[0] != "release"]
        if direction == "c2s":
            out = [m for m in out if m[0] != "resolve" or m[2] != ["undefined"]]
    return out


def run(server: PyServer, scenario: str, tmp_path: Path, *, batch: bool = False) -> tuple[dict[str, Any], int, Path]:
    """Run one JS scenario against our server: its result, our conn number, the client transcript."""
    before = server.last_conn()
    transcript = tmp_path / f"{scenario}.jsonl"
    url = server.http_url if batch else server.ws_url
    result = run_js_client(url, scenario, batch=batch, transcript=transcript)
    conn = server.last_conn()
    assert conn > before, f"{scenario}: the client never reached our server: {result}"
    return result, conn, transcript


def explain(server: PyServer, conn: int, scenario: str, transport: str = "ws") -> str:
    _, vec = vector(scenario, transport)
    return (
        f"\nframes with our server (conn {conn}):\n{format_frames(server.conn_frames(conn))}"
        f"\nthe vector (capnweb with itself):\n{format_frames(vec)}"
        f"\nserver errors: {server.errors!r}"
    )


@pytest.fixture
def server(request: pytest.FixtureRequest) -> PyServer:
    """Our engine serving TestApi (the module's ``py_capnweb_server``)."""
    got: PyServer = request.getfixturevalue("py_capnweb_server")
    return got


def test_vectors_agree_with_expectations() -> None:
    """The recorded vectors hold the results this file expects of the real capnweb."""
    for scenario, expected in EXPECTED.items():
        meta, _ = vector(scenario)
        assert meta["capnweb"] == "0.12.0"
        assert meta["result"] == expected, scenario
    for scenario in BATCH_SCENARIOS:
        meta, _ = vector(scenario, "batch")
        assert meta["result"] == EXPECTED[scenario], scenario


@pytest.mark.parametrize("scenario", WS_SCENARIOS)
def test_ws_scenario(server: PyServer, scenario: str, tmp_path: Path) -> None:
    result, conn, _ = run(server, scenario, tmp_path)
    assert result == PY_EXPECTED[scenario], explain(server, conn, scenario)


@pytest.mark.parametrize("scenario", BATCH_SCENARIOS)
def test_batch_scenario(server: PyServer, scenario: str, tmp_path: Path) -> None:
    result, conn, _ = run(server, scenario, tmp_path, batch=True)
    assert result == PY_EXPECTED[scenario], explain(server, conn, scenario, "batch")
    frames = server.conn_frames(conn)
    assert frames, "the batch left no frames"


@pytest.mark.parametrize("scenario", WIRE_SCENARIOS)
def test_ws_wire_matches_vector(server: PyServer, scenario: str, tmp_path: Path) -> None:
    result, conn, _ = run(server, scenario, tmp_path)
    assert result == PY_EXPECTED[scenario]
    time.sleep(0.2)  # the last releases / close after the result was printed
    ours = server.conn_frames(conn)
    _, vec = vector(scenario)
    why = explain(server, conn, scenario)
    for direction in ("s2c", "c2s"):
        got = canonical(comparable(parse_frames(ours, direction=direction), direction, scenario))
        want = canonical(comparable(parse_frames(vec, direction=direction), direction, scenario))
        assert got == want, f"{direction} differs: extra {got - want}, missing {want - got}{why}"


@pytest.mark.parametrize("scenario", [s for s in BATCH_SCENARIOS if s in WIRE_SCENARIOS])
def test_batch_wire_matches_vector(server: PyServer, scenario: str, tmp_path: Path) -> None:
    result, conn, _ = run(server, scenario, tmp_path, batch=True)
    assert result == PY_EXPECTED[scenario]
    ours = server.conn_frames(conn)
    _, vec = vector(scenario, "batch")
    why = explain(server, conn, scenario, "batch")
    # a batch has an order: the request body's and the response body's
    assert parse_frames(ours, direction="c2s") == parse_frames(vec, direction="c2s"), why
    assert parse_frames(ours, direction="s2c") == parse_frames(vec, direction="s2c"), why


def _is_write(msg: Any) -> bool:
    return bool(msg[0] == "stream" and msg[1][0] == "pipeline" and msg[1][2] == ["write"])


def test_our_sender_holds_back_for_a_slow_reader(server: PyServer, tmp_path: Path) -> None:
    """backpressure: the JS client reads nothing for 300 ms; our sender must stop at a window
    (capnweb itself: 3 writes of 64 KiB in flight), not pump all ten chunks."""
    result, conn, transcript = run(server, "backpressure", tmp_path)
    assert result == PY_EXPECTED["backpressure"], explain(server, conn, "backpressure")
    lines = [json.loads(line) for line in transcript.read_text().splitlines()]
    before_first_ack = 0
    for rec in lines:
        if rec["dir"] == "c2s" and json.loads(rec["frame"])[0] == "resolve":
            break
        if rec["dir"] == "s2c" and _is_write(json.loads(rec["frame"])):
            before_first_ack += 1
    assert 1 <= before_first_ack <= 5, f"{before_first_ack} writes before the first ack\n{format_frames(lines)}"
    assert server.apis[conn].stream_events == ["start:bigStream", "end:bigStream"]


def test_our_receiver_acks_only_what_is_read(server: PyServer, tmp_path: Path) -> None:
    """slow_upload: our slowUpload reads nothing for 300 ms; until then our side must not ack
    the JS sender's writes (so capnweb's window stops it)."""
    result, conn, _ = run(server, "slow_upload", tmp_path)
    assert result == PY_EXPECTED["slow_upload"], explain(server, conn, "slow_upload")
    started = server.apis[conn].read_started
    assert started is not None
    frames = server.conn_frames(conn)
    writes_before = sum(
        1 for r in frames if r["dir"] == "c2s" and r["t"] < started and _is_write(json.loads(r["frame"]))
    )
    acks_before = sum(
        1 for r in frames if r["dir"] == "s2c" and r["t"] < started and json.loads(r["frame"])[0] == "resolve"
    )
    why = format_frames(frames)
    assert acks_before <= 1, f"{acks_before} acks before anything was read\n{why}"
    assert 1 <= writes_before <= 5, f"{writes_before} writes arrived before reading started\n{why}"


def test_reader_cancel_reaches_our_source(server: PyServer, tmp_path: Path) -> None:
    """reader_cancel: the JS reader cancels after one chunk; our source stops."""
    result, conn, _ = run(server, "reader_cancel", tmp_path)
    assert result == PY_EXPECTED["reader_cancel"], explain(server, conn, "reader_cancel")
    api = server.apis[conn]
    deadline = time.monotonic() + 5
    while "cancelled:streamBytes" not in api.stream_events and "end:streamBytes" not in api.stream_events:
        assert time.monotonic() < deadline, f"the source never ended: {api.stream_events}"
        time.sleep(0.02)
    # 100 tiny chunks may all have been produced before the cancel arrived (capnweb does that
    # too: its window never fills); then the source ended normally, else it was cancelled.
    assert api.stream_events[0] == "start:streamBytes"
    frames = server.conn_frames(conn)
    c2s = parse_frames(frames, direction="c2s")
    assert any(m[0] == "reject" for m in c2s), format_frames(frames)


def test_dispose_main_closes_our_session(server: PyServer, tmp_path: Path) -> None:
    result, conn, _ = run(server, "dispose_main", tmp_path)
    assert result == PY_EXPECTED["dispose_main"], explain(server, conn, "dispose_main")
    deadline = time.monotonic() + 5
    while not any(r["dir"] == "close" for r in server.conn_frames(conn)):
        assert time.monotonic() < deadline, format_frames(server.conn_frames(conn))
        time.sleep(0.02)


def test_target_return_disposes_our_counter(server: PyServer, tmp_path: Path) -> None:
    result, conn, _ = run(server, "target_return", tmp_path)
    assert result == PY_EXPECTED["target_return"], explain(server, conn, "target_return")
    assert server.apis[conn].disposals() == 1
