"""The frames of section c on the wire: responses, streams (events as frames, no SSE), route
errors as responses, and bad frames answered with error frames while the connection carries on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers_ws import RawWs, events_of

from sandbox_core.testing import ServerProcess


async def test_unary_answer_is_one_response_frame(raw: RawWs) -> None:
    await raw.request("r1", "POST", "/api/execute", {"command": "echo hi", "sessionId": "wsf-1"})
    streamed, final = await raw.answer("r1")
    assert streamed == []
    assert set(final) == {"type", "id", "status", "body", "done"}
    assert (final["type"], final["id"], final["status"], final["done"]) == ("response", "r1", 200, True)
    assert (final["body"]["exitCode"], final["body"]["stdout"]) == (0, "hi")


async def test_stream_is_one_stream_frame_per_event_then_a_bodyless_response(raw: RawWs) -> None:
    await raw.request("s1", "POST", "/api/execute/stream", {"command": "echo a; echo b >&2; exit 3"})
    streamed, final = await raw.answer("s1")
    for frame in streamed:  # no `event` field: the event's type is in its data
        assert set(frame) == {"type", "id", "data"} and frame["type"] == "stream" and isinstance(frame["data"], str)
    events = events_of(streamed)
    assert events[0]["type"] == "start" and events[-1] == {**events[-1], "type": "complete", "exitCode": 3}
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "a\n"
    assert "".join(e["data"] for e in events if e["type"] == "stderr") == "b\n"
    assert final == {"type": "response", "id": "s1", "status": 200, "done": True}


async def test_event_data_is_carried_exactly(raw: RawWs) -> None:
    """Repeated and identical lines, blank lines, spaces and `data:` text reach the reader as the
    command wrote them (upstream's first SSE re-parser lost or duplicated such data)."""
    text = "x\nx\n\n  data: y  \ndata:z\n\n" * 50
    await raw.request("f1", "POST", "/api/write", {"path": "/tmp/wsf-exact.txt", "content": text})
    assert (await raw.answer("f1"))[1]["status"] == 200
    await raw.request("s1", "POST", "/api/execute/stream", {"command": "cat /tmp/wsf-exact.txt"})
    streamed, _ = await raw.answer("s1")
    assert "".join(e["data"] for e in events_of(streamed) if e["type"] == "stdout") == text


async def test_route_errors_are_responses_with_the_error_body(raw: RawWs) -> None:
    final = await raw.call("e1", "POST", "/api/read", {"path": "/nonexistent/wsf"})
    assert (final["type"], final["status"]) == ("response", 404)
    assert final["body"]["code"] == "FILE_NOT_FOUND" and final["body"]["httpStatus"] == 404
    unknown = await raw.call("e2", "GET", "/api/nothing-here")
    assert (unknown["status"], unknown["body"]["code"]) == (404, "UNKNOWN_ERROR")
    wrong_method = await raw.call("e3", "GET", "/api/execute")
    assert wrong_method["status"] == 405
    bad_body = await raw.call("e4", "POST", "/api/execute", {"command": 5})
    assert (bad_body["status"], bad_body["body"]["context"]["field"]) == (400, "command")
    not_an_object = await raw.call("e5", "POST", "/api/execute", ["echo hi"])
    assert not_an_object["status"] == 400
    # a stream that fails before it starts is an error response, not a stream
    await raw.request("e6", "GET", "/api/process/wsf-no-such-process/stream")
    streamed, final = await raw.answer("e6")
    assert streamed == [] and (final["status"], final["body"]["code"]) == (404, "PROCESS_NOT_FOUND")


async def test_query_in_the_path_headers_and_absent_bodies(raw: RawWs) -> None:
    started = await raw.call("p1", "POST", "/api/process/start", {"command": "echo logged", "processId": "wsf-q"})
    assert started["status"] == 200
    listed = await raw.call("p2", "GET", "/api/process/list?status=completed")
    await raw.request("p3", "GET", "/api/process/wsf-q/stream?offset=3")
    streamed, final = await raw.answer("p3")
    assert listed["status"] == 200 and final["status"] == 200
    assert [e["data"] for e in events_of(streamed) if e["type"] == "stdout"] == ["ged\n"]
    # the session from a header, as over http; a POST with no body
    await raw.call("h1", "POST", "/api/execute", {"command": "export WSF=from-header"})
    await raw.request("h2", "POST", "/api/execute", {"command": "echo $WSF"}, headers={"X-Session-Id": "wsf-h"})
    await raw.request("h3", "POST", "/api/execute", {"command": "export WSF=h", "sessionId": "wsf-h"})
    assert (await raw.answer("h2"))[1]["body"]["stdout"] == ""
    assert (await raw.answer("h3"))[1]["status"] == 200
    await raw.request("h4", "POST", "/api/execute", {"command": "echo $WSF"}, headers={"x-session-id": "wsf-h"})
    assert (await raw.answer("h4"))[1]["body"]["stdout"] == "h"
    ping = await raw.call("h5", "POST", "/api/utils/ping")
    assert ping["status"] == 200 and ping["body"]["success"] is True


async def test_bad_frames_get_error_frames_and_the_connection_carries_on(raw: RawWs) -> None:
    # a stream runs across the bad frames and is not disturbed
    await raw.request("long", "POST", "/api/execute/stream", {"command": "echo one; sleep 0.5; echo two"})
    long: list[dict[str, Any]] = []

    async def next_frame() -> dict[str, Any]:
        """The next frame that is not the stream's (those are kept)."""
        while (frame := await raw.frame())["id" if "id" in frame else "type"] == "long":
            long.append(frame)
        return frame

    await raw.send_text("this is not json")
    parse = await next_frame()
    assert parse["type"] == "error" and (parse["code"], parse["status"]) == ("PARSE_ERROR", 400) and "id" not in parse
    await raw.send_text('{"type": "request", "id": "x1"')  # truncated
    assert (await next_frame())["code"] == "PARSE_ERROR"
    bad_frames: list[tuple[Any, str | None]] = [
        ({"type": "subscribe", "id": "x2"}, "x2"),
        ({"type": "request", "id": "x3"}, "x3"),  # no method, no path
        ({"type": "request", "id": "x4", "method": 7, "path": "/api/ping"}, "x4"),
        ({"type": 5, "id": "x5"}, "x5"),
        ({"id": "x6"}, "x6"),
        ([1, 2, 3], None),
        ("a string", None),
        ({"type": "request", "method": "GET", "path": "/api/ping"}, None),  # no id
    ]
    for bad, rid in bad_frames:
        await raw.send_text(json.dumps(bad))
        frame = await next_frame()
        assert frame["type"] == "error" and (frame["code"], frame["status"]) == ("INVALID_REQUEST", 400), frame
        assert frame.get("id") == rid and frame["message"], frame
        assert "Traceback" not in frame["message"]
    await raw.send({"type": "cancel", "id": "unknown-id"})  # ignored
    await raw.send({"type": "cancel"})  # ignored too
    await raw.request("ok", "GET", "/api/ping")
    ok = await next_frame()
    assert (ok["id"], ok["status"]) == ("ok", 200)
    while not long or long[-1]["type"] != "response":
        long.append(await raw.frame())
    assert "".join(e["data"] for e in events_of(long[:-1]) if e["type"] == "stdout") == "one\ntwo\n"
    assert long[-1]["status"] == 200


async def test_a_frame_nested_too_deeply_gets_a_parse_error_and_the_connection_carries_on(raw: RawWs) -> None:
    """Frames nested 100 000 deep (in a field it does not have, in its body) are each answered
    ``PARSE_ERROR`` (``INVALID_REQUEST`` when a field read before the deep part is wrong); a
    stream running meanwhile on the connection ends as it should. They used to raise
    RecursionError in the frame parser, which closed the connection (1011) and ended its other
    requests."""
    await raw.request("long", "POST", "/api/execute/stream", {"command": "echo one; sleep 0.5; echo two"})
    long: list[dict[str, Any]] = []
    deep = "[" * 100_000 + "]" * 100_000
    for text, code in (
        ('{"x": ' + deep + "}", "PARSE_ERROR"),
        (
            '{"type": "request", "id": "d1", "method": "POST", "path": "/api/execute", "body": ' + deep + "}",
            "PARSE_ERROR",
        ),
        ('{"other": ' + deep + ', "type": "request", "id": "d2"}', "PARSE_ERROR"),
        ('{"type": 1, "id": "d3", "other": ' + deep + "}", "INVALID_REQUEST"),  # its id is too deep to read
    ):
        await raw.send_text(text)
        while (frame := await raw.frame()).get("id") == "long":
            long.append(frame)
        assert frame["type"] == "error" and (frame["code"], frame["status"]) == (code, 400), frame
    await raw.request("ok", "GET", "/api/ping")
    while (ok := await raw.frame()).get("id") == "long":
        long.append(ok)
    assert (ok["id"], ok["status"]) == ("ok", 200)
    while not long or long[-1]["type"] != "response":
        long.append(await raw.frame())
    assert "".join(e["data"] for e in events_of(long[:-1]) if e["type"] == "stdout") == "one\ntwo\n"


async def test_a_running_id_cannot_be_reused(raw: RawWs) -> None:
    await raw.request("dup", "POST", "/api/execute", {"command": "sleep 0.3; echo first", "sessionId": "wsf-dup"})
    await raw.request("dup", "POST", "/api/execute", {"command": "echo second", "sessionId": "wsf-dup2"})
    refused = await raw.frame()
    assert (refused["type"], refused["id"], refused["code"]) == ("error", "dup", "INVALID_REQUEST")
    first = await raw.frame()
    assert first["type"] == "response" and first["body"]["stdout"] == "first"
    again = await raw.call("dup", "POST", "/api/execute", {"command": "echo again", "sessionId": "wsf-dup"})
    assert again["body"]["stdout"] == "again"  # once ended, an id can be used again


@pytest.mark.parametrize("path", ["/ws", "/api/ws"])
async def test_both_paths_serve_the_routes(ws_server: ServerProcess, path: str) -> None:
    ws = await RawWs.connect(ws_server.url, path=path)
    try:
        final = await ws.call("v", "GET", "/api/version")
        assert final["status"] == 200 and "version" in final["body"]
    finally:
        await ws.aclose()


async def test_binary_frames_are_read_as_json_too(raw: RawWs) -> None:
    from wsproto.events import BytesMessage

    raw.writer.write(
        raw.ws.send(
            BytesMessage(json.dumps({"type": "request", "id": "b", "method": "GET", "path": "/api/ping"}).encode())
        )
    )
    final = await raw.frame()
    assert (final["id"], final["status"]) == ("b", 200)
