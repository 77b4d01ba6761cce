"""``SandboxControlAPI`` at ``/rpc`` as a capnweb peer sees it: every contract method with its
positional signature and its result's shape, errors as ``Error`` with ``{code, details}``, the
generic rule (a service's operations by camelCase name; a third-party service by its name) and
the getters whose services are not installed."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers_rpc import events, frames, read_all, rejection, sid

from capnweb import UNDEFINED, RpcStub, http_batch_session
from sandbox_core.registry import ServiceSpec
from sandbox_core.testing import ServerProcess

TS = "timestamp"


def keys(value: dict[str, Any]) -> set[str]:
    return set(value)


# commands ----------------------------------------------------------------------------------------


async def test_execute(api: RpcStub) -> None:
    s = sid()
    result = await api.commands.execute('echo "$A"; pwd; echo err >&2', s, {"env": {"A": "x"}, "cwd": "/tmp"})
    assert {"success", "exitCode", "stdout", "stderr", "command", TS} <= keys(result)
    assert (result["success"], result["exitCode"], result["stdout"], result["stderr"]) == (True, 0, "x\n/tmp", "err")
    failed = await api.commands.execute("false", s)
    assert (failed["success"], failed["exitCode"]) == (False, 1)


async def test_execute_without_session_or_options(api: RpcStub) -> None:
    """``undefined`` and ``null`` arguments are "not given"; so are trailing missing ones."""
    for args in (("echo a",), ("echo a", None), ("echo a", UNDEFINED, UNDEFINED), ("echo a", None, {"env": None})):
        result = await api.commands.execute(*args)
        assert (result["exitCode"], result["stdout"]) == (0, "a")


async def test_execute_stream_sends_the_rpc_sse_bytes(api: RpcStub) -> None:
    """``event: <type>\\ndata: <json>\\n\\n`` per event, the event line naming the data's type (b1)."""
    data = await read_all(await api.commands.executeStream("echo one; echo two >&2; exit 3", sid(), {}))
    found = frames(data)
    assert all(name == event["type"] for name, event in found)
    kinds = [event["type"] for _, event in found]
    assert kinds[0] == "start" and kinds[-1] == "complete"
    assert found[0][1]["command"] == "echo one; echo two >&2; exit 3" and TS in found[0][1]
    assert "".join(e["data"] for _, e in found if e["type"] == "stdout") == "one\n"
    assert "".join(e["data"] for _, e in found if e["type"] == "stderr") == "two\n"
    assert found[-1][1]["exitCode"] == 3


async def test_execute_stream_start_failure_is_an_error_event(api: RpcStub) -> None:
    """As upstream: a stream that cannot start is a stream of one ``error`` event, not a throw."""
    found = frames(await read_all(await api.commands.executeStream("   ", sid())))
    assert len(found) == 1
    name, event = found[0]
    assert name == "error" and event["type"] == "error" and event["error"] and TS in event
    assert event["code"] == "INVALID_COMMAND"


async def test_execute_validation_names_the_field(api: RpcStub) -> None:
    err = await rejection(api.commands.execute("true", sid(), {"timeoutMs": -5}))
    assert err.name == "Error" and err.props["code"] == "VALIDATION_FAILED"
    assert err.props["details"]["field"] == "timeoutMs"
    err = await rejection(api.commands.execute(42))
    assert err.props["code"] == "VALIDATION_FAILED" and err.props["details"]["field"] == "command"
    err = await rejection(api.commands.execute("true", sid(), "not an object"))
    assert err.props["code"] == "VALIDATION_FAILED" and err.props["details"]["field"] == "options"


async def test_too_many_arguments_fail(api: RpcStub) -> None:
    err = await rejection(api.commands.execute("true", sid(), {}, "extra"))
    assert err.props["code"] == "VALIDATION_FAILED" and err.props["details"]["field"] == "arguments"
    err = await rejection(api.utils.ping("extra"))
    assert err.props["code"] == "VALIDATION_FAILED"


async def test_session_errors_keep_their_code_and_details(api: RpcStub) -> None:
    s = sid()
    err = await rejection(api.commands.execute("exit 7", s))
    assert (err.name, err.props["code"], err.props["details"]) == (
        "Error",
        "SESSION_TERMINATED",
        {"sessionId": s, "exitCode": 7},
    )
    assert "httpStatus" not in err.props  # the code's own status: props are exactly upstream's


# files -------------------------------------------------------------------------------------------


async def test_file_methods(api: RpcStub, tmp_path: Path) -> None:
    s = sid()
    path = str(tmp_path / "dir" / "a.txt")
    written = await api.files.writeFile(path, "héllo", s, {"encoding": "utf-8"})
    assert keys(written) >= {"success", "path", "bytesWritten", TS} and written["bytesWritten"] == len("héllo".encode())
    read = await api.files.readFile(path, s)
    assert {"success", "path", "content", TS, "encoding", "isBinary", "mimeType", "size"} <= keys(read)
    assert (read["content"], read["encoding"], read["isBinary"], read["size"]) == ("héllo", "utf-8", False, 6)
    assert (await api.files.readFile(path, s, {"encoding": "base64"}))["content"] == "aMOpbGxv"
    b64 = await api.files.writeFile(str(tmp_path / "b.bin"), "AAEC", s, {"encoding": "base64"})
    assert b64["bytesWritten"] == 3 and (tmp_path / "b.bin").read_bytes() == b"\0\1\2"

    assert (await api.files.exists(path, s))["exists"] is True
    assert (await api.files.exists(str(tmp_path / "nope"), s))["exists"] is False
    made = await api.files.mkdir(str(tmp_path / "x" / "y"), s, {"recursive": True})
    assert (made["success"], made["recursive"]) == (True, True)
    err = await rejection(api.files.mkdir(str(tmp_path / "p" / "q"), s))
    assert err.props["code"] in ("FILE_NOT_FOUND", "FILESYSTEM_ERROR")

    renamed = await api.files.renameFile(path, str(tmp_path / "dir" / "b.txt"), s)
    assert (renamed["path"], renamed["newPath"], renamed["oldPath"]) == (path, str(tmp_path / "dir" / "b.txt"), path)
    moved = await api.files.moveFile(str(tmp_path / "dir" / "b.txt"), str(tmp_path / "x"), s)
    assert moved["newPath"] == str(tmp_path / "x") and (tmp_path / "x" / "b.txt").exists()

    listing = await api.files.listFiles(str(tmp_path / "x"), s, {"recursive": True})
    assert {"success", "path", "files", "count", TS} <= keys(listing)
    assert sorted(f["relativePath"] for f in listing["files"]) == ["b.txt", "y"]
    entry = next(f for f in listing["files"] if f["name"] == "b.txt")
    assert {"name", "absolutePath", "relativePath", "type", "size", "modifiedAt", "mode", "permissions"} <= keys(entry)
    assert (await api.files.listFiles(str(tmp_path / "x"), s))["count"] == 2

    deleted = await api.files.deleteFile(str(tmp_path / "x" / "b.txt"), s)
    assert deleted["success"] is True and not (tmp_path / "x" / "b.txt").exists()
    err = await rejection(api.files.deleteFile(str(tmp_path / "x"), s))
    assert err.props["code"] == "IS_DIRECTORY"


async def test_file_errors(api: RpcStub, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.txt")
    err = await rejection(api.files.readFile(missing, None))
    assert err.name == "Error" and err.props["code"] == "FILE_NOT_FOUND"
    assert err.props["details"]["path"] == missing
    err = await rejection(api.files.readFile(missing, None, {"encoding": "none"}))
    assert err.props["code"] == "FILE_NOT_FOUND"
    err = await rejection(api.files.readFile(missing, None, {"encoding": "latin-1"}))
    assert err.props["code"] == "VALIDATION_FAILED" and err.props["details"]["field"] == "encoding"


async def test_read_file_stream_and_encoding_none(api: RpcStub, tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_bytes(b"line1\nline2\n")
    found = frames(await read_all(await api.files.readFileStream(str(path), None)))
    assert all(name is None for name, _ in found)  # data lines only, as the http stream
    assert [e["type"] for _, e in found] == ["metadata", "chunk", "complete"]
    assert found[1][1]["data"] == "line1\nline2\n" and found[2][1]["bytesRead"] == 12
    missing = events(await read_all(await api.files.readFileStream(str(tmp_path / "nope"), None)))
    assert [e["type"] for e in missing] == ["error"]  # in-band, as upstream

    result = await api.files.readFile(str(path), None, {"encoding": "none"})
    assert keys(result) == {"success", "path", "size", "mimeType", TS, "content"}
    assert (result["size"], result["mimeType"].split(";")[0]) == (12, "text/plain")
    assert await read_all(result["content"]) == b"line1\nline2\n"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    result = await api.files.readFile(str(empty), None, {"encoding": "none"})
    assert result["size"] == 0 and await read_all(result["content"]) == b""


async def test_read_file_ranges_and_tails(api: RpcStub, tmp_path: Path) -> None:
    """Ours: ``offset``, ``length`` and ``tailLines`` in ``readFile``'s options (also with
    ``{encoding: 'none'}``, whose bytes are the range exactly) and in ``readFileStream``'s."""
    path = tmp_path / "r.txt"
    path.write_bytes("one\ntwo é\nthree\n".encode())  # "é" is bytes 8 and 9
    result = await api.files.readFile(str(path), None, {"offset": 4, "length": 4})
    assert (result["content"], result["offset"], result["length"], result["totalSize"]) == ("two ", 4, 4, 17)
    result = await api.files.readFile(str(path), None, {"tailLines": 2})
    assert (result["content"], result["offset"], result["length"]) == ("two é\nthree\n", 4, 13)
    result = await api.files.readFile(str(path), None, {"encoding": "none", "offset": 9, "length": 3})
    assert keys(result) == {"success", "path", "size", "mimeType", TS, "content", "offset", "length", "totalSize"}
    assert (result["offset"], result["length"], result["totalSize"], result["size"]) == (9, 3, 17, 17)
    assert await read_all(result["content"]) == b"\xa9\nt"  # exact bytes: half of "é" included
    result = await api.files.readFile(str(path), None, {"encoding": "none", "tailLines": 1})
    assert (result["offset"], result["length"]) == (11, 6) and await read_all(result["content"]) == b"three\n"
    found = events(await read_all(await api.files.readFileStream(str(path), None, {"offset": -6})))
    assert [e["type"] for e in found] == ["metadata", "chunk", "complete"]
    assert (found[0]["offset"], found[0]["length"], found[1]["data"]) == (11, 6, "three\n")
    err = await rejection(api.files.readFile(str(path), None, {"encoding": "none", "offset": 18}))
    assert (err.props["code"], err.props["details"]["field"]) == ("VALIDATION_FAILED", "offset")
    err = await rejection(api.files.readFile(str(path), None, {"tailLines": 1, "length": 1}))
    assert (err.props["code"], err.props["details"]["field"]) == ("VALIDATION_FAILED", "length")


# processes ---------------------------------------------------------------------------------------


async def test_process_methods(api: RpcStub) -> None:
    s, name = sid(), sid("proc")
    started = await api.processes.startProcess("echo out; echo err >&2", s, {"processId": name})
    assert {"success", "processId", "command", TS} <= keys(started) and started["processId"] == name
    logs_stream = events(await read_all(await api.processes.streamProcessLogs(name)))
    assert "process_info" not in [e["type"] for e in logs_stream]  # the RPC variant has none
    assert logs_stream[-1]["type"] == "exit" and logs_stream[-1]["exitCode"] == 0
    assert "data" not in logs_stream[-1]
    got = await api.processes.getProcess(name)
    assert got["process"]["id"] == name and got["process"]["status"] == "completed"
    listed = await api.processes.listProcesses()
    assert name in [p["id"] for p in listed["processes"]]
    logs = await api.processes.getProcessLogs(name)
    assert (logs["processId"], logs["stdout"], logs["stderr"]) == (name, "out\n", "err\n")
    err = await rejection(api.processes.killProcess(name))
    assert err.props["code"] == "COMMAND_NOT_FOUND"

    sleeper = sid("sleep")
    await api.processes.startProcess("sleep 600", s, {"processId": sleeper})
    killed = await api.processes.killProcess(sleeper)
    assert (killed["success"], killed["processId"]) == (True, sleeper)
    await api.processes.startProcess("sleep 600", s, {"processId": sid("sleep")})
    all_killed = await api.processes.killAllProcesses()
    assert all_killed["success"] is True and all_killed["cleanedCount"] >= 1


async def test_process_not_found_as_upstream(api: RpcStub) -> None:
    """``["error","Error","Process nope not found",null,{"code":...,"details":{...}}]`` (section d);
    the details' ``runtimeId`` is ours."""
    err = await rejection(api.processes.getProcess("nope"))
    runtime = await api.utils.getRuntimeId()
    assert (err.name, err.props) == (
        "Error",
        {"code": "PROCESS_NOT_FOUND", "details": {"processId": "nope", "runtimeId": runtime}},
    )
    assert err.message.startswith("Process nope not found")


# ports, git --------------------------------------------------------------------------------------


async def test_watch_port(api: RpcStub) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        port = listener.getsockname()[1]
        found = events(await read_all(await api.ports.watchPort({"port": port, "mode": "tcp", "interval": 100})))
        assert [e["type"] for e in found] == ["watching", "ready"] and found[0]["port"] == port
    finally:
        listener.close()
    err = await rejection(api.ports.watchPort({"port": port, "mode": "udp"}))
    assert err.props["code"] == "VALIDATION_FAILED" and err.props["details"]["field"] == "mode"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A local git repository with one commit on ``main``."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    path = tmp_path / "repo"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    commit = ["-C", str(path), "commit", "-q", "--allow-empty", "-m", "x"]
    for args in (["init", "-q", "-b", "main", str(path)], commit):
        subprocess.run(["git", *args], check=True, env=env, capture_output=True)
    return path


async def test_git_checkout(api: RpcStub, tmp_path: Path, repo: Path) -> None:
    target = str(tmp_path / "clone")
    result = await api.git.checkout(str(repo), sid(), {"targetDir": target, "depth": 1})
    assert {"success", "repoUrl", "branch", "targetDir", TS} <= keys(result)
    assert (result["targetDir"], result["branch"]) == (target, "main") and (tmp_path / "clone" / ".git").is_dir()
    err = await rejection(api.git.checkout("", sid()))
    assert err.props["code"] == "INVALID_GIT_URL"
    err = await rejection(api.git.checkout(str(repo), sid(), {"timeoutMs": -1}))
    assert err.props["code"] == "VALIDATION_FAILED" and err.props["details"]["field"] == "timeoutMs"


# utils -------------------------------------------------------------------------------------------


async def test_utils(api: RpcStub) -> None:
    s = sid()
    created = await api.utils.createSession({"id": s, "env": {"V": "1"}, "cwd": "/tmp"})
    assert created == {
        "success": True,
        "id": s,
        "message": f"Session {s} created",
        "timestamp": created["timestamp"],
        "containerPlacementId": None,
    }
    assert (await api.commands.execute("echo $V; pwd", s))["stdout"] == "1\n/tmp"
    err = await rejection(api.utils.createSession({"id": s}))
    assert err.props["code"] == "SESSION_ALREADY_EXISTS" and err.props["details"]["sessionId"] == s
    assert s in (await api.utils.listSessions())["sessions"]
    deleted = await api.utils.deleteSession(s)
    assert (deleted["success"], deleted["sessionId"]) == (True, s)
    assert s not in (await api.utils.listSessions())["sessions"]
    generated = await api.utils.createSession()
    assert generated["id"].startswith("session_")
    await api.utils.deleteSession(generated["id"])
    assert await api.utils.ping() == "healthy"
    assert isinstance(await api.utils.getVersion(), str)
    assert await api.utils.getCommands() == []


# services not installed, generic operations, third-party services --------------------------------


@pytest.mark.parametrize(
    ("getter", "method", "args"),
    [
        ("interpreter", "createCodeContext", ({"language": "python"},)),
        ("interpreter", "listCodeContexts", ()),
        ("interpreter", "runCodeStream", ("ctx", "1", "python", {})),
        ("backup", "createArchive", ("/workspace", "/var/backups/a", None, {})),
        ("backup", "uploadParts", ({"archivePath": "/var/backups/a", "parts": []},)),
        ("watch", "watch", ({"path": "/workspace"},)),
        ("watch", "checkChanges", ({"path": "/workspace"},)),
    ],
)
async def test_getters_of_missing_services_reject_clearly(getter: str, method: str, args: tuple[Any, ...]) -> None:
    """On a server whose services lack one the contract names (here: only a third-party service
    is installed), that getter's methods reject naming the missing service."""
    from sandbox_core.registry import ServiceRegistry
    from sandbox_test_greeter import Greeter, GreeterSettings
    from sandbox_transport_rpc.api import ApiFactory

    registry = ServiceRegistry(
        {"greeter": ServiceSpec("greeter", Greeter, GreeterSettings)}, settings={}, workspace="/tmp"
    )
    await registry.start()
    try:
        main = ApiFactory(registry)()
        err = await rejection(getattr(getattr(main, getter), method)(*args))
    finally:
        await registry.aclose()
    assert err.name == "Error" and err.props["code"] == "UNKNOWN_ERROR"
    assert err.props["details"]["service"] == getter and err.props["httpStatus"] == 404
    assert f"no '{getter}' service is installed" in err.message


async def test_generic_operations_on_contract_getters(api: RpcStub, tmp_path: Path) -> None:
    """A service's operations without a contract name, by camelCase name, positional in their
    Python signature's order."""
    name = sid("proc")
    await api.processes.startProcess("echo hi", None, {"processId": name})
    found = events(await read_all(await api.processes.streamLogs(name, 0)))  # generic: with process_info
    assert found[0]["type"] == "process_info" and found[-1]["type"] == "exit"
    assert (await api.utils.version())["version"] == await api.utils.getVersion()
    path = tmp_path / "raw.bin"
    path.write_bytes(bytes(range(256)) * 10)
    assert await read_all(await api.files.readBytes(str(path))) == path.read_bytes()  # raw bytes, no SSE
    listed = await api.sessions.list()
    assert isinstance(listed["sessions"], list)


async def test_runtime_id_and_idempotency_keys(api: RpcStub) -> None:
    """Ours: ``utils.getRuntimeId()`` (the contract's ``ping`` and ``getVersion`` stay bare
    strings), and ``idempotencyKey`` in the options of execute, executeStream and startProcess."""
    runtime = await api.utils.getRuntimeId()
    assert isinstance(runtime, str) and len(runtime) == 16
    assert (await api.utils.version())["runtimeId"] == runtime == (await api.call("utils", "ping"))["runtimeId"]
    assert await api.utils.ping() == "healthy" and isinstance(await api.utils.getVersion(), str)
    key = sid("key")
    first = await api.commands.execute("echo $RANDOM", None, {"idempotencyKey": key})
    assert await api.commands.execute("echo $RANDOM", None, {"idempotencyKey": key}) == first
    started = await api.processes.startProcess("true", None, {"idempotencyKey": key + "p"})
    again = await api.processes.startProcess("true", None, {"idempotencyKey": key + "p"})
    assert (again["processId"], again["pid"]) == (started["processId"], started["pid"])
    assert runtime in started["processId"]
    err = await rejection(api.commands.execute("echo other", None, {"idempotencyKey": key}))
    assert err.props["code"] == "IDEMPOTENCY_KEY_REUSED" and err.props["details"]["idempotencyKey"] == key
    stream = events(await read_all(await api.commands.executeStream("echo other", None, {"idempotencyKey": key})))
    assert [e["type"] for e in stream] == ["error"] and stream[0]["code"] == "IDEMPOTENCY_KEY_REUSED"
    err = await rejection(api.processes.startProcess("true", None, {"idempotencyKey": "k" * 129}))
    assert err.props["code"] == "VALIDATION_FAILED" and err.props["details"]["field"] == "idempotencyKey"


async def test_a_third_party_service_is_a_getter(api: RpcStub) -> None:
    assert await api.greeter.hello("ada") == {"greeting": "hello ada"}
    assert await api.greeter.hello("ada", True) == {"greeting": "hello ada!"}
    assert await api.greeter.hello("ada", None) == {"greeting": "hello ada"}  # null: not given
    assert [e["value"] for e in events(await read_all(await api.greeter.count(3)))] == [1, 2, 3]
    err = await rejection(api.greeter.count(5000))
    assert err.props["code"] == "VALIDATION_FAILED" and err.props["details"]["field"] == "upto"
    err = await rejection(api.greeter.hello())
    assert err.props["code"] == "VALIDATION_FAILED" and err.props["details"]["field"] == "name"
    err = await rejection(api.greeter.hello("a", True, "extra"))
    assert err.props["details"]["field"] == "arguments"
    err = await rejection(api.greeter.refuse("busy"))
    assert (err.props["code"], err.props["details"]) == ("RESOURCE_BUSY", {"reason": "busy"})


async def test_named_generic_call(api: RpcStub) -> None:
    assert await api.call("greeter", "hello", {"name": "bo", "excited": True}) == {"greeting": "hello bo!"}
    assert [e["value"] for e in events(await read_all(await api.call("greeter", "count", {"upto": 2})))] == [1, 2]
    err = await rejection(api.call("utils", "no_such_operation", {}))
    assert err.props["code"] == "UNKNOWN_ERROR" and err.props["httpStatus"] == 404
    err = await rejection(api.call("nope", "x"))
    assert err.props["httpStatus"] == 404


async def test_unknown_members_are_type_errors(api: RpcStub) -> None:
    err = await rejection(api.commands.noSuchMethod())
    assert err.name == "TypeError"
    err = await rejection(api.files._runner.registry())
    assert err.name == "TypeError"


async def test_http_batch(rpc_server: ServerProcess) -> None:
    async with http_batch_session(rpc_server.url + "/rpc") as api:
        ping, version, missing = await asyncio.gather(
            api.utils.ping(), api.utils.getVersion(), api.processes.getProcess("nope"), return_exceptions=True
        )
    assert ping == "healthy" and isinstance(version, str)
    assert getattr(missing, "props", {}).get("code") == "PROCESS_NOT_FOUND"
