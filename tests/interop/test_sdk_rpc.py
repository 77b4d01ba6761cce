"""The official capnweb 0.12 client (the SDK's rpc transport) against our server's ``/rpc``.

One server per module serves only the rpc transport (WebSocket and HTTP batch at ``/rpc``) and
loads the test-only greeter service. ``sandbox_rpc.mjs`` runs one scenario per Node process
against it and prints its results as one JSON line; a scenario's run is shared by the tests
that check it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG

Run = Callable[..., dict[str, Any]]
Scenario = Callable[..., Any]

SSE_WITH_EVENT_LINES = re.compile(r"(event: (\w+)\ndata: [^\n]+\n\n)+")


@pytest.fixture(scope="module")
def rpc_only_server() -> Iterator[ServerProcess]:
    server = ServerProcess(transports=["rpc"], config=TEST_CONFIG, env={"SANDBOX_TEST_PLUGINS": "1"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def scenario(node_runner: Run, rpc_only_server: ServerProcess) -> Scenario:
    """Runs a scenario of sandbox_rpc.mjs once (per flags) and returns its result."""
    done: dict[tuple[str, ...], Any] = {}

    def run(name: str, *flags: str) -> Any:
        key = (name, *flags)
        if key not in done:
            out = node_runner("sandbox_rpc.mjs", rpc_only_server.url, name, *flags, timeout=100)
            assert out["returncode"] == 0 and "result" in out, out
            done[key] = out["result"]
        return done[key]

    return run


def rpc_error(step: dict[str, Any], code: str) -> dict[str, Any]:
    """The error of a step that must have failed with ``code``: an ``Error`` whose own
    properties are exactly ``code`` and ``details``."""
    assert step["ok"] is False, step
    error: dict[str, Any] = step["error"]
    assert error["name"] == "Error", error
    assert error["code"] == code, error
    assert error["ownKeys"] == ["code", "details"], error
    return error


def kinds(events: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(e["event"], e["data"]["type"]) for e in events]


def joined(events: list[dict[str, Any]], kind: str) -> str:
    return "".join(e["data"]["data"] for e in events if e["data"]["type"] == kind)


# commands ---------------------------------------------------------------------------------------


def test_execute(scenario: Scenario) -> None:
    r = scenario("execute")
    hi = r["hi"]
    sid = hi["sessionId"]
    assert sid.startswith("rpc-exec-")
    assert (hi["success"], hi["exitCode"], hi["stdout"], hi["stderr"], hi["command"]) == (True, 0, "hi", "", "echo hi")
    assert isinstance(hi["timestamp"], str) and hi["timestamp"].endswith("Z")
    nonzero = r["nonzero"]
    assert (nonzero["success"], nonzero["exitCode"], nonzero["stdout"], nonzero["stderr"]) == (False, 4, "out", "err")


def test_execute_env_and_cwd_are_scoped(scenario: Scenario) -> None:
    r = scenario("execute")
    home = r["home"]
    assert home.startswith("/")
    assert r["scoped"]["stdout"] == "foo-bar baz\n/tmp"
    assert r["after"]["stdout"] == f"[]\n{home}"
    # what the session's shell itself does persists
    assert r["persisted"]["stdout"] == "kept\n/tmp"
    bad_cwd = r["badCwd"]
    assert bad_cwd["ok"] is True
    assert (bad_cwd["result"]["success"], bad_cwd["result"]["exitCode"]) == (False, 1)
    assert bad_cwd["result"]["stderr"] == "Failed to change directory to '/nonexistent/rpc-interop'"
    bad_env = rpc_error(r["badEnv"], "VALIDATION_FAILED")
    assert bad_env["message"] == "Invalid environment variable name: 1BAD"
    assert bad_env["details"] == {"field": "env.1BAD"}


def test_exit_terminates_the_session(scenario: Scenario) -> None:
    r = scenario("execute")
    sid = r["hi"]["sessionId"]
    error = rpc_error(r["terminated"], "SESSION_TERMINATED")
    assert error["details"] == {"sessionId": sid, "exitCode": 3}
    # the next call gets a fresh shell: the exported variable is gone
    assert (r["back"]["exitCode"], r["back"]["stdout"]) == (0, "back\n[]")


def test_errors_carry_code_and_details(scenario: Scenario) -> None:
    error = rpc_error(scenario("execute")["missing"], "FILE_NOT_FOUND")
    assert error["message"] == "File not found: /nonexistent/rpc-interop.txt"
    assert error["details"] == {"path": "/nonexistent/rpc-interop.txt", "operation": "file.read"}


def test_execute_stream(scenario: Scenario) -> None:
    r = scenario("execute_stream")
    assert r["isReadable"] is True
    # SSE text with an `event:` line before every `data:` line
    assert SSE_WITH_EVENT_LINES.fullmatch(r["text"]), r["text"]
    events = r["events"]
    assert kinds(events) == [
        ("start", "start"),
        ("stdout", "stdout"),
        ("stderr", "stderr"),
        ("stdout", "stdout"),
        ("complete", "complete"),
    ]
    start = events[0]["data"]
    assert start["command"] == "echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c; (exit 3)"
    assert start["sessionId"].startswith("rpc-stream-") and isinstance(start["pid"], int)
    assert [e["data"]["data"] for e in events[1:4]] == ["a\n", "b\n", "c\n"]
    assert events[-1]["data"]["exitCode"] == 3
    assert all(isinstance(e["data"]["timestamp"], str) for e in events)


def test_execute_stream_options_and_errors(scenario: Scenario) -> None:
    r = scenario("execute_stream")
    assert kinds(r["ok"])[0] == ("start", "start") and kinds(r["ok"])[-1] == ("complete", "complete")
    assert joined(r["ok"], "stdout") == "x\ny\n" and r["ok"][-1]["data"]["exitCode"] == 0
    assert joined(r["env"], "stdout") == "vee\n/tmp\n" and r["env"][-1]["data"]["exitCode"] == 0
    # a stream that cannot start is one in-band error event, not a rejection
    assert kinds(r["empty"]) == [("error", "error")]
    assert r["empty"][0]["data"]["code"] == "INVALID_COMMAND"
    assert r["empty"][0]["data"]["error"]


# reader.cancel() --------------------------------------------------------------------------------


def check_cancelled(result: dict[str, Any]) -> None:
    assert result["first"]["done"] is False
    assert kinds(result["first"]["events"]) == [("start", "start")]
    assert result["runningBefore"] is True, "the probe never saw the command running"
    assert [p["status"] for p in result["listed"]] == ["killed"], result["listed"]
    assert result["usable"] == {"exitCode": 0, "stdout": "usable"}


def test_cancel_ends_a_printing_command(scenario: Scenario) -> None:
    printer = scenario("stream_cancel")["printer"]
    assert printer["goneAfterMs"] is not None and printer["goneAfterMs"] < 3000, printer
    check_cancelled(printer)


def test_cancel_ends_a_command_at_its_next_output(scenario: Scenario) -> None:
    # `sleep 1; echo later; sleep 30`: the write of "later" is rejected by the cancelled reader
    late = scenario("stream_cancel")["late"]
    assert late["goneAfterMs"] is not None and late["goneAfterMs"] < 4000, late
    check_cancelled(late)


def test_cancel_ends_a_silent_command(scenario: Scenario) -> None:
    # `sleep 30; echo never`: nothing is written after the start event, so only the server's own
    # writes (a heartbeat) can learn of the cancel
    silent = scenario("stream_cancel")["silent"]
    assert silent["goneAfterMs"] is not None and silent["goneAfterMs"] < 5000, silent
    check_cancelled(silent)


def test_closing_the_connection_ends_a_streamed_command(scenario: Scenario) -> None:
    closed = scenario("stream_cancel")["closed"]
    assert closed["goneAfterMs"] is not None and closed["goneAfterMs"] < 3000, closed
    check_cancelled(closed)


# files ------------------------------------------------------------------------------------------


def test_files(scenario: Scenario) -> None:
    r = scenario("files")
    d = r["dir"]
    assert {k: r["mkdir"][k] for k in ("success", "path", "recursive")} == {
        "success": True,
        "path": f"{d}/sub/deep",
        "recursive": True,
    }
    mkdir_error = rpc_error(r["mkdirMissingParent"], "FILESYSTEM_ERROR")
    assert mkdir_error["details"]["path"] == f"{d}/nope/child"

    assert {k: r["writeText"][k] for k in ("success", "path", "bytesWritten")} == {
        "success": True,
        "path": f"{d}/a.txt",
        "bytesWritten": len("héllo\nworld\n".encode()),
    }
    read = r["readText"]
    assert (read["success"], read["path"], read["content"], read["encoding"]) == (
        True,
        f"{d}/a.txt",
        "héllo\nworld\n",
        "utf-8",
    )
    assert (read["isBinary"], read["mimeType"], read["size"]) == (False, "text/plain", 13)

    # bytesWritten is the bytes on disk (upstream counts the base64 string's bytes)
    assert r["writeBase64"]["success"] is True and r["writeBase64"]["bytesWritten"] == 6
    b64 = r["readBase64"]
    assert (b64["content"], b64["encoding"], b64["isBinary"], b64["size"]) == (r["binAsBase64"], "base64", True, 6)

    assert (r["existsYes"]["exists"], r["existsNo"]["exists"]) == (True, False)
    listing = r["list"]
    assert (listing["success"], listing["path"], listing["count"]) == (True, d, 3)
    assert [(f["name"], f["type"], f["relativePath"]) for f in listing["files"]] == [
        ("a.txt", "file", "a.txt"),
        ("b.bin", "file", "b.bin"),
        ("sub", "directory", "sub"),
    ]
    a_txt = listing["files"][0]
    assert (a_txt["absolutePath"], a_txt["size"]) == (f"{d}/a.txt", 13)
    assert a_txt["permissions"] == {"readable": True, "writable": True, "executable": False}
    assert sorted(f["relativePath"] for f in r["listRecursive"]["files"]) == ["a.txt", "b.bin", "sub", "sub/deep"]
    assert r["listRecursive"]["count"] == 4

    rename = r["rename"]
    assert (rename["success"], rename["path"], rename["newPath"]) == (True, f"{d}/a.txt", f"{d}/a2.txt")
    assert rename["oldPath"] == f"{d}/a.txt"
    move = r["move"]
    assert (move["success"], move["path"], move["newPath"]) == (True, f"{d}/a2.txt", f"{d}/sub/a3.txt")
    assert (r["readMoved"], r["oldGone"]) == ("héllo\nworld\n", False)

    delete = r["delete"]
    assert (delete["success"], delete["path"], r["deletedGone"]) == (True, f"{d}/sub/a3.txt", False)
    assert rpc_error(r["deleteDir"], "IS_DIRECTORY")["details"]["path"] == f"{d}/sub"
    assert rpc_error(r["deleteMissing"], "FILE_NOT_FOUND")["details"]["path"] == f"{d}/missing"
    assert rpc_error(r["renameMissing"], "FILE_NOT_FOUND")["details"]["path"] == f"{d}/missing"
    assert rpc_error(r["listMissing"], "FILE_NOT_FOUND")["details"]["path"] == f"{d}/missing"
    assert rpc_error(r["listFile"], "NOT_DIRECTORY")["details"]["path"] == f"{d}/b.bin"


def test_read_file_stream(scenario: Scenario) -> None:
    r = scenario("files")
    stream = r["readStream"]
    assert stream["endsWithBlankLine"] is True
    events = [e["data"] for e in stream["events"]]
    assert all(e["event"] is None for e in stream["events"])  # plain `data:` lines
    assert events == [
        {"type": "metadata", "mimeType": "text/plain", "size": 13, "isBinary": False, "encoding": "utf-8"},
        {"type": "chunk", "data": "héllo\nworld\n"},
        {"type": "complete", "bytesRead": 13},
    ]
    # a file that cannot be read: an in-band error event
    missing = r["readStreamMissing"]
    assert missing["ok"] is True, missing
    [error] = [e["data"] for e in missing["result"]["events"]]
    assert error["type"] == "error" and error["error"] == f"File not found: {r['dir']}/missing"


def test_write_file_stream_and_raw_read(scenario: Scenario) -> None:
    r = scenario("files_stream")
    d = r["dir"]
    small = r["small"]
    assert (small["success"], small["path"], small["bytesWritten"]) == (True, f"{d}/nested/small.txt", 7)
    assert r["smallRead"] == "abcdé\n"

    big = r["big"]
    assert (big["success"], big["path"], big["bytesWritten"]) == (True, f"{d}/big.bin", r["bigSize"])
    assert r["bigSize"] == 20 * 1024 * 1024
    assert r["serverSha"] == r["bigSha"]

    raw = r["raw"]
    assert raw["isReadable"] is True
    assert (raw["bytes"], raw["sha"]) == (r["bigSize"], r["bigSha"])
    meta = raw["meta"]
    assert (meta["success"], meta["path"], meta["size"], meta["mimeType"]) == (
        True,
        f"{d}/big.bin",
        r["bigSize"],
        "application/octet-stream",
    )
    assert r["rawText"]["size"] == 7 and r["rawText"]["text"] == "abcdé\n"
    assert r["rawText"]["mimeType"].startswith("text/plain")
    assert rpc_error(r["rawMissing"], "FILE_NOT_FOUND")["details"]["path"] == f"{d}/missing"


# processes --------------------------------------------------------------------------------------


def test_processes(scenario: Scenario) -> None:
    r = scenario("processes")
    start = r["start"]
    pid = start["processId"]
    command = "echo out1; echo err1 >&2; sleep 0.3; echo out2"
    assert (start["success"], start["command"]) == (True, command) and isinstance(start["pid"], int)

    # streamProcessLogs: no process_info, `exit` without `data`, plain `data:` lines
    for stream in (r["stream"], r["replay"]):
        events = stream["events"]
        assert all(e["event"] is None for e in events)
        assert events[-1]["data"]["type"] == "exit" and events[-1]["data"]["exitCode"] == 0
        assert "data" not in events[-1]["data"]
        assert "process_info" not in [e["data"]["type"] for e in events]
        assert all(e["data"]["processId"] == pid for e in events)
        assert joined(events, "stdout") == "out1\nout2\n" and joined(events, "stderr") == "err1\n"

    proc = r["get"]["process"]
    assert r["get"]["success"] is True
    assert (proc["id"], proc["command"], proc["status"], proc["exitCode"], proc["pid"]) == (
        pid,
        command,
        "completed",
        0,
        start["pid"],
    )
    logs = r["logs"]
    assert (logs["success"], logs["processId"], logs["stdout"], logs["stderr"]) == (True, pid, "out1\nout2\n", "err1\n")


def test_kill_processes(scenario: Scenario) -> None:
    r = scenario("processes")
    long_id = r["startLong"]["processId"]
    assert r["running"] == "running"
    assert (r["kill"]["success"], r["kill"]["processId"]) == (True, long_id)
    assert r["afterKill"]["ok"] is True
    assert (r["afterKill"]["value"]["status"], r["afterKill"]["value"]["exitCode"]) == ("killed", 143)
    rpc_error(r["killAgain"], "COMMAND_NOT_FOUND")

    assert r["listHasSuccess"] is True
    listed = {p["id"]: p["status"] for p in r["list"]}
    tag = long_id.removeprefix("rpc-long-")
    assert listed == {
        f"rpc-p-{tag}": "completed",
        long_id: "killed",
        f"rpc-all1-{tag}": "running",
        f"rpc-all2-{tag}": "running",
    }
    assert r["killAll"]["success"] is True and r["killAll"]["cleanedCount"] >= 2
    assert r["afterKillAll"] == ["killed", "killed"]

    for key in ("getMissing", "killMissing", "streamMissing"):
        error = rpc_error(r[key], "PROCESS_NOT_FOUND")
        assert error["details"]["processId"] == f"rpc-nope-{tag}"
        assert set(error["details"]) == {"processId", "runtimeId"}  # runtimeId: ours
    rpc_error(r["startEmpty"], "INVALID_COMMAND")


# utils ------------------------------------------------------------------------------------------


def test_utils_and_sessions(scenario: Scenario) -> None:
    r = scenario("utils")
    sid = r["id"]
    assert r["ping"] == "healthy"
    assert isinstance(r["version"], str) and r["version"]
    assert r["commands"] == []
    create = r["create"]
    assert {k: create[k] for k in ("success", "id", "message", "containerPlacementId")} == {
        "success": True,
        "id": sid,
        "message": f"Session {sid} created",
        "containerPlacementId": None,
    }
    assert isinstance(create["timestamp"], str)
    duplicate = rpc_error(r["duplicate"], "SESSION_ALREADY_EXISTS")
    assert duplicate["details"]["sessionId"] == sid
    assert r["inSession"]["stdout"] == "sv\n/tmp"
    assert sid in r["list"]["sessions"] and all(isinstance(s, str) for s in r["list"]["sessions"])
    assert r["delete"]["success"] is True
    assert sid not in r["listAfter"]["sessions"]
    rpc_error(r["deleteMissing"], "SESSION_NOT_FOUND")
    assert r["recreate"]["id"] == sid
    assert r["afterRecreate"]["stdout"] == "[]"


# ports ------------------------------------------------------------------------------------------


def test_watch_port(scenario: Scenario) -> None:
    r = scenario("watch_port")
    port = r["port"]
    assert [e["data"] for e in r["tcp"]] == [{"type": "watching", "port": port}, {"type": "ready", "port": port}]
    assert [e["data"] for e in r["http"]] == [
        {"type": "watching", "port": port},
        {"type": "ready", "port": port, "statusCode": 200},
    ]
    other = r["exited"]["port"]
    assert [e["data"] for e in r["exited"]["events"]] == [
        {"type": "watching", "port": other},
        {"type": "process_exited", "port": other, "exitCode": 5},
    ]


# a third-party service through its getter ---------------------------------------------------------


def test_greeter_service_getter(scenario: Scenario) -> None:
    r = scenario("greeter")
    assert r["hello"] == {"greeting": "hello bob!"}
    assert r["plain"] == {"greeting": "hello amy"}
    assert r["named"] == {"greeting": "hello cy!"}
    refused = rpc_error(r["refused"], "RESOURCE_BUSY")
    assert (refused["message"], refused["details"]) == ("refused: busy day", {"reason": "busy day"})
    assert [e["data"] for e in r["count"]] == [{"type": "number", "value": i} for i in (1, 2, 3)]
    assert rpc_error(r["badArg"], "VALIDATION_FAILED")["details"] == {"field": "upto"}


# HTTP batch, pipelining, concurrency ------------------------------------------------------------


def test_http_batch(scenario: Scenario) -> None:
    r = scenario("batch", "--batch")
    assert r["ping"] == "healthy"
    assert (r["hi"]["success"], r["hi"]["exitCode"], r["hi"]["stdout"]) == (True, 0, "hi")
    assert (r["fail"]["success"], r["fail"]["exitCode"], r["fail"]["stderr"]) == (False, 2, "nope")
    rpc_error(r["missing"], "FILE_NOT_FOUND")
    assert r["exported"]["stdout"] == "set"
    assert r["greeting"] == {"greeting": "hello batch"}
    # the session outlives the batch that made it
    assert r["persisted"]["stdout"] == "1"


def test_pipelining_and_concurrency(scenario: Scenario) -> None:
    r = scenario("pipelining")
    assert (r["piped"]["exitCode"], r["piped"]["stdout"]) == (0, "piped")
    # the getter was not awaited: one push calls commands.execute on the main object
    frames = r["pipedFrames"]
    assert frames[0][0] == "push" and frames[0][1][:3] == ["pipeline", 0, ["commands", "execute"]], frames
    assert frames[0][1][3][0] == "echo piped" and frames[1] == ["pull", 1], frames
    assert r["stdout"] == [f"{i % 5}-{i}" for i in range(50)]
    assert r["exitCodes"] == [0] * 50


def test_malformed_message_aborts_only_its_connection(scenario: Scenario) -> None:
    r = scenario("malformed")
    assert r["before"] == "healthy"
    [frame] = r["frames"]
    assert frame[0] == "abort" and frame[1][:2] == ["error", "Error"], frame
    assert r["closed"]["code"] == 3000
    assert (r["alive"]["exitCode"], r["alive"]["stdout"]) == (0, "alive")
