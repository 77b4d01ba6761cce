"""``process.v1.ProcessService``: the official SDK's ``commands.run`` and, for what it does not
wrap, the SDK's own generated stubs, on a real server (a child subreaper: what it leaves running
stays among its descendants, where a test looks for it by a marker of its own)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from helpers_sandboxd import grpc_target, marked

from sandbox_core.testing import ServerProcess

TIMEOUT = 30  # every call's deadline: a hang fails the test, never the run


@pytest.fixture(scope="module")
def sandboxd_server() -> Iterator[ServerProcess]:
    with ServerProcess(transports=["sandboxd"], subreaper=True) as server:
        yield server


@pytest.fixture
def stub(sandboxd_server: ServerProcess) -> Iterator[Any]:
    """The SDK's generated ``ProcessServiceStub`` on a channel of this test's own."""
    from k8s_agent_sandbox.commands._process_stubs import process_pb2_grpc

    with grpc.insecure_channel(grpc_target(sandboxd_server)) as channel:
        yield process_pb2_grpc.ProcessServiceStub(channel)


def wait_marked(server: ServerProcess, marker: str, present: bool, within: float = 15.0) -> list[int]:
    """Wait (bounded) until a process with ``marker`` runs on the server (``present``) or none
    does; return what runs at the end."""
    deadline = time.monotonic() + within
    while bool(found := marked(server, marker)) != present and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def config(pb: Any, *command: str, **kwargs: Any) -> Any:
    return pb.ProcessConfig(command=list(command), **kwargs)


def rpc_error(call: Any) -> grpc.RpcError:
    """The ``RpcError`` that ``call()`` raises (it must raise one)."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def read_until_exit(events: Any) -> tuple[bytes, bytes, int]:
    out, err = bytearray(), bytearray()
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "stdout":
            out += event.stdout
        elif kind == "stderr":
            err += event.stderr
        elif kind == "exit":
            return bytes(out), bytes(err), event.exit.exit_code
    raise AssertionError(f"the stream ended with no exit event: {bytes(out)!r} {bytes(err)!r}")


def next_kind(events: Any, kind: str) -> Any:
    event = next(events)
    assert event.WhichOneof("event") == kind, event
    return event


# --- the SDK's commands.run (Execute) ---------------------------------------------------------


def test_run_gives_exit_codes_stderr_and_the_signal_death_as_128_plus_n(sdk: Any) -> None:
    assert sdk.commands.run("exit 3").exit_code == 3
    result = sdk.commands.run("echo out; echo err >&2; exit 1")
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 1)
    assert sdk.commands.run("kill -TERM $$").exit_code == 128 + signal.SIGTERM
    assert sdk.commands.run("kill -KILL $$").exit_code == 128 + signal.SIGKILL


def test_run_passes_env_and_a_cwd_inside_the_workspace(sdk: Any, sandboxd_server: ServerProcess) -> None:
    os.makedirs(os.path.join(sandboxd_server.workspace, "sub", "dir"), exist_ok=True)
    result = sdk.commands.run('echo "$GREETING"; pwd', env={"GREETING": "hello there"}, cwd="sub/dir")
    assert result.exit_code == 0
    greeting, cwd = result.stdout.splitlines()
    assert greeting == "hello there"
    assert os.path.realpath(cwd) == os.path.realpath(os.path.join(sandboxd_server.workspace, "sub", "dir"))
    assert os.path.realpath(sdk.commands.run("pwd").stdout.strip()) == os.path.realpath(sandboxd_server.workspace)


def test_run_with_a_cwd_outside_the_workspace_is_refused(sdk: Any) -> None:
    with pytest.raises(RuntimeError, match="PERMISSION_DENIED") as caught:
        sdk.commands.run("pwd", cwd="../..")
    assert "config.cwd" in str(caught.value)


@pytest.mark.parametrize("option", ["command_timeout", "timeout"])
def test_run_past_its_deadline_ends_the_command_on_the_server(
    sdk: Any, sandboxd_server: ServerProcess, option: str
) -> None:
    marker = f"deadline-{option}"
    script = f"sh -c 'sleep 97 # {marker}' & sleep 98 # {marker}\nwait"
    if option == "command_timeout":
        result = sdk.commands.run(script, command_timeout=1)
        assert (result.exit_code, result.timed_out) == (124, True)
    else:
        with pytest.raises(RuntimeError, match="DEADLINE_EXCEEDED"):
            sdk.commands.run(script, timeout=1)
    assert wait_marked(sandboxd_server, marker, present=False) == []


# --- the SDK's stubs: Start, WriteStdin, SendSignal, ResizeTTY ----------------------------------


def test_start_streams_output_as_it_is_produced_then_the_exit(stub: Any, pb: Any) -> None:
    script = 'echo first; echo oops >&2; read line; echo "got $line"; exit 5'
    events = stub.Start(pb.StartRequest(config=config(pb, "sh", "-c", script)), timeout=TIMEOUT)
    number = next_kind(events, "init").init.process_id
    assert number > 0
    seen = {next(events).WhichOneof("event"): None for _ in range(2)}  # both before the process can end
    assert set(seen) == {"stdout", "stderr"}
    stub.WriteStdin(pb.WriteStdinRequest(process_id=number, input=b"it\n"), timeout=TIMEOUT)
    assert read_until_exit(events) == (b"got it\n", b"", 5)


def test_write_stdin_bytes_then_eof_to_cat(stub: Any, pb: Any) -> None:
    events = stub.Start(pb.StartRequest(config=config(pb, "cat")), timeout=TIMEOUT)
    number = next_kind(events, "init").init.process_id
    payload = bytes(range(256)) * 4
    stub.WriteStdin(pb.WriteStdinRequest(process_id=number, input=payload), timeout=TIMEOUT)
    stub.WriteStdin(pb.WriteStdinRequest(process_id=number, eof=Empty()), timeout=TIMEOUT)
    assert read_until_exit(events) == (payload, b"", 0)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_send_signal_ends_a_sleeping_process_with_128_plus_n(stub: Any, pb: Any, name: str) -> None:
    events = stub.Start(pb.StartRequest(config=config(pb, "sleep", "100")), timeout=TIMEOUT)
    number = next_kind(events, "init").init.process_id
    stub.SendSignal(pb.SendSignalRequest(process_id=number, signal=getattr(pb, f"SIGNAL_{name}")), timeout=TIMEOUT)
    assert read_until_exit(events) == (b"", b"", 128 + getattr(signal, name))


@pytest.mark.parametrize("value", [0, 1, 15 + 1])
def test_send_signal_outside_the_specs_enum_is_invalid_argument(stub: Any, pb: Any, value: int) -> None:
    events = stub.Start(pb.StartRequest(config=config(pb, "cat")), timeout=TIMEOUT)
    number = next_kind(events, "init").init.process_id
    error = rpc_error(lambda: stub.SendSignal(pb.SendSignalRequest(process_id=number, signal=value), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "signal" in error.details()
    trailing = dict(error.trailing_metadata())  # for programs: the error code and the field
    assert trailing["sandbox-error-code"] == "VALIDATION_FAILED" and trailing["sandbox-error-field"] == "signal"
    stub.WriteStdin(pb.WriteStdinRequest(process_id=number, eof=Empty()), timeout=TIMEOUT)
    assert read_until_exit(events) == (b"", b"", 0)  # untouched by the refused signal


def test_send_signal_after_exit_is_ok_while_start_runs_then_not_found(sandboxd_server: ServerProcess, pb: Any) -> None:
    from k8s_agent_sandbox.commands._process_stubs import process_pb2_grpc

    # a client that reads nothing after the init event: the Start stays blocked in a write
    # (a small flow-control window) while the process, its output in the server's ring, exits
    done = os.path.join(sandboxd_server.workspace, "signal-after-exit.done")
    script = f"head -c 600000 /dev/zero; touch {done}"
    options = [("grpc.http2.bdp_probe", 0)]
    with grpc.insecure_channel(grpc_target(sandboxd_server), options=options) as channel:
        stub = process_pb2_grpc.ProcessServiceStub(channel)
        events = stub.Start(pb.StartRequest(config=config(pb, "sh", "-c", script)), timeout=TIMEOUT)
        number = next_kind(events, "init").init.process_id
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(done) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.path.exists(done), "the process did not finish writing"
        wait_marked(sandboxd_server, "signal-after-exit", present=False)
        stub.SendSignal(pb.SendSignalRequest(process_id=number, signal=pb.SIGNAL_SIGTERM), timeout=TIMEOUT)
        out, _err, code = read_until_exit(events)
        assert (len(out), code) == (600000, 0)
        error = rpc_error(
            lambda: stub.SendSignal(pb.SendSignalRequest(process_id=number, signal=pb.SIGNAL_SIGTERM), timeout=TIMEOUT)
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND


def test_resize_tty_on_a_pty_reaches_the_terminal(stub: Any, pb: Any) -> None:
    script = "stty size; read line; stty size"
    events = stub.Start(pb.StartRequest(config=config(pb, "sh", "-c", script), pty=pb.PTY()), timeout=TIMEOUT)
    number = next_kind(events, "init").init.process_id
    first = b""
    while b"\n" not in first:
        first += next_kind(events, "stdout").stdout
    assert first.split() == [b"24", b"80"]  # a PTY of 0x0 gets 80x24
    stub.ResizeTTY(pb.ResizeTTYRequest(process_id=number, cols=100, rows=30), timeout=TIMEOUT)
    stub.WriteStdin(pb.WriteStdinRequest(process_id=number, input=b"\n"), timeout=TIMEOUT)
    out, _err, code = read_until_exit(events)
    assert code == 0 and out.split()[-2:] == [b"30", b"100"]


def test_eof_on_a_pty_is_the_terminals_eof_key(stub: Any, pb: Any) -> None:
    events = stub.Start(pb.StartRequest(config=config(pb, "cat"), pty=pb.PTY(cols=120, rows=40)), timeout=TIMEOUT)
    number = next_kind(events, "init").init.process_id
    stub.WriteStdin(pb.WriteStdinRequest(process_id=number, input=b"hi\n"), timeout=TIMEOUT)
    stub.WriteStdin(pb.WriteStdinRequest(process_id=number, eof=Empty()), timeout=TIMEOUT)
    out, _err, code = read_until_exit(events)
    assert code == 0  # cat read end-of-file (a hang-up would be 128 + SIGHUP)
    assert out.count(b"hi") == 2  # the echo, then cat's copy


def test_resize_tty_without_a_pty_is_failed_precondition_and_zero_is_invalid(stub: Any, pb: Any) -> None:
    events = stub.Start(pb.StartRequest(config=config(pb, "cat")), timeout=TIMEOUT)
    number = next_kind(events, "init").init.process_id
    error = rpc_error(
        lambda: stub.ResizeTTY(pb.ResizeTTYRequest(process_id=number, cols=100, rows=30), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    stub.WriteStdin(pb.WriteStdinRequest(process_id=number, eof=Empty()), timeout=TIMEOUT)
    assert read_until_exit(events)[2] == 0

    events = stub.Start(pb.StartRequest(config=config(pb, "cat"), pty=pb.PTY()), timeout=TIMEOUT)
    number = next_kind(events, "init").init.process_id
    error = rpc_error(lambda: stub.ResizeTTY(pb.ResizeTTYRequest(process_id=number, cols=0, rows=30), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "cols" in error.details()
    stub.SendSignal(pb.SendSignalRequest(process_id=number, signal=pb.SIGNAL_SIGKILL), timeout=TIMEOUT)
    assert read_until_exit(events)[2] == 128 + signal.SIGKILL


def test_a_signal_at_once_after_start_reaches_a_pty_process(stub: Any, pb: Any) -> None:
    """A process with a terminal makes its own session and group (setsid) just after it starts:
    a signal sent in that instant, before the group exists, still reaches it (it was lost, and
    the process lived on, holding its Start open)."""
    for _ in range(30):
        events = stub.Start(pb.StartRequest(config=config(pb, "cat"), pty=pb.PTY()), timeout=TIMEOUT)
        number = next_kind(events, "init").init.process_id
        stub.SendSignal(pb.SendSignalRequest(process_id=number, signal=pb.SIGNAL_SIGKILL), timeout=TIMEOUT)
        assert read_until_exit(events)[2] == 128 + signal.SIGKILL


def test_an_unknown_process_id_is_not_found(stub: Any, pb: Any) -> None:
    calls = [
        lambda: stub.WriteStdin(pb.WriteStdinRequest(process_id=987654, input=b"x"), timeout=TIMEOUT),
        lambda: stub.WriteStdin(pb.WriteStdinRequest(process_id=987654, eof=Empty()), timeout=TIMEOUT),
        lambda: stub.SendSignal(pb.SendSignalRequest(process_id=987654, signal=pb.SIGNAL_SIGKILL), timeout=TIMEOUT),
        lambda: stub.ResizeTTY(pb.ResizeTTYRequest(process_id=987654, cols=80, rows=24), timeout=TIMEOUT),
    ]
    for call in calls:
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "987654" in error.details()


def test_bad_config_is_refused_naming_the_field(stub: Any, pb: Any) -> None:
    for request in (pb.StartRequest(config=config(pb)), pb.StartRequest()):
        error = rpc_error(lambda: list(stub.Start(request, timeout=TIMEOUT)))  # noqa: B023
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "config.command" in error.details()
    error = rpc_error(lambda: stub.Execute(pb.ExecuteRequest(config=config(pb)), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "config.command" in error.details()
    outside = pb.StartRequest(config=config(pb, "pwd", cwd="../../.."))
    error = rpc_error(lambda: list(stub.Start(outside, timeout=TIMEOUT)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "config.cwd" in error.details()


def test_a_missing_program_exits_127_with_the_shells_message(stub: Any, pb: Any) -> None:
    response = stub.Execute(pb.ExecuteRequest(config=config(pb, "no-such-program-here", "x")), timeout=TIMEOUT)
    assert response.exit_code == 127 and b"no-such-program-here" in response.stderr
    events = stub.Start(pb.StartRequest(config=config(pb, "no-such-program-here")), timeout=TIMEOUT)
    _out, err, code = read_until_exit(events)
    assert code == 127 and b"not found" in err


def test_execute_stdin_is_dev_null_start_stdin_a_pipe(stub: Any, pb: Any) -> None:
    response = stub.Execute(pb.ExecuteRequest(config=config(pb, "cat")), timeout=TIMEOUT)  # EOF at once
    assert (response.exit_code, response.stdout) == (0, b"")
    script = "test -p /dev/stdin && echo pipe"
    assert stub.Execute(pb.ExecuteRequest(config=config(pb, "sh", "-c", script)), timeout=TIMEOUT).exit_code == 1
    events = stub.Start(pb.StartRequest(config=config(pb, "sh", "-c", script)), timeout=TIMEOUT)
    assert read_until_exit(events) == (b"pipe\n", b"", 0)


def test_process_ids_are_int32s_numbered_from_1_skipping_those_in_use() -> None:
    from typing import cast

    from sandbox_transport_sandboxd.process_api import MAX_PROCESS_ID, ProcessApi
    from sandbox_transport_sandboxd.settings import SandboxdSettings

    api = ProcessApi(cast(Any, None), SandboxdSettings())  # numbering needs no registry
    assert [api._number("a"), api._number("b")] == [1, 2]
    api.last_number = MAX_PROCESS_ID - 1
    api.running = {1: "still running"}  # a and b ended, one with number 1 runs
    assert [api._number("c"), api._number("d")] == [MAX_PROCESS_ID, 2]
