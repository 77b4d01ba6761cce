"""A process started over gRPC lives as long as its call: a client that cancels, closes its
channel or stops reading; Execute's output limit; message size limits; the server's shutdown;
many calls at once. The server is a child subreaper, so what a call leaves running stays among
its descendants, where a test looks for it by a marker of its own (a sleep's unusual duration)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from helpers_sandboxd import grpc_target, marked

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import Proc, status_kib, still_alive

TIMEOUT = 60  # every call's deadline: a hang fails the test, never the run
LIMITS = {"execute_max_output_bytes": 64 * 1024, "max_receive_message_bytes": 64 * 1024, "grace_s": 1.0}


@pytest.fixture(scope="module")
def sandboxd_server() -> Iterator[ServerProcess]:
    with ServerProcess(transports=["sandboxd"], subreaper=True, config={"transports": {"sandboxd": LIMITS}}) as server:
        yield server


def make_stub(channel: grpc.Channel) -> Any:
    from k8s_agent_sandbox.commands._process_stubs import process_pb2_grpc

    return process_pb2_grpc.ProcessServiceStub(channel)


def wait_marked(server: ServerProcess, marker: str, count: int, within: float = 15.0) -> list[int]:
    """Wait (bounded) until exactly ``count`` processes with ``marker`` run on the server."""
    deadline = time.monotonic() + within
    while len(found := marked(server, marker)) != count and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def start(stub: Any, pb: Any, *command: str) -> tuple[Any, int]:
    """A Start of ``command`` and its process id (its init event read)."""
    events = stub.Start(pb.StartRequest(config=pb.ProcessConfig(command=list(command))), timeout=TIMEOUT)
    first = next(events)
    assert first.WhichOneof("event") == "init", first
    return events, first.init.process_id


def wchar(pid: int) -> int:
    """The bytes ``pid`` has written so far (``/proc/PID/io``)."""
    with open(f"/proc/{pid}/io") as fh:
        for line in fh:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise AssertionError(f"no wchar in /proc/{pid}/io")


TREE = "sleep {0}1 & sleep {0}2; wait"  # a process group of three, each marked: sh and two sleeps


@pytest.mark.parametrize("how", ["cancel", "close"])
def test_a_start_whose_client_leaves_ends_its_process_tree(sandboxd_server: ServerProcess, pb: Any, how: str) -> None:
    marker = "300.1" if how == "cancel" else "300.2"
    channel = grpc.insecure_channel(grpc_target(sandboxd_server))
    events, _ = start(make_stub(channel), pb, "sh", "-c", TREE.format(marker))
    assert len(wait_marked(sandboxd_server, marker, 3)) == 3
    if how == "cancel":
        events.cancel()
    channel.close()
    assert wait_marked(sandboxd_server, marker, 0) == []


def test_a_client_that_stops_reading_stalls_the_process_not_the_servers_memory(
    sandboxd_server: ServerProcess, pb: Any
) -> None:
    with grpc.insecure_channel(grpc_target(sandboxd_server)) as channel:
        events, _ = start(make_stub(channel), pb, "yes", "300.3")
        next(events)  # output flows, then the client reads no more
        (pid,) = wait_marked(sandboxd_server, "300.3", 1)
        before = status_kib(sandboxd_server.pid, "VmRSS")
        deadline, last, stalled = time.monotonic() + 30, -1, False
        peak = before
        while time.monotonic() < deadline:  # stalled: nothing written for 0.5 s
            time.sleep(0.5)
            peak = max(peak, status_kib(sandboxd_server.pid, "VmRSS"))
            now = wchar(pid)
            if now == last:
                stalled = True
                break
            last = now
        assert stalled, f"yes kept writing ({last} bytes)"
        for _ in range(4):  # and it stays so, the server's memory with it
            time.sleep(0.5)
            peak = max(peak, status_kib(sandboxd_server.pid, "VmRSS"))
        assert wchar(pid) == last
        print(f"\nunread Start of yes: yes wrote {last / 2**20:.1f} MiB; server RSS {before} KiB -> peak {peak} KiB")
        assert peak - before < 64 * 1024, f"server RSS grew by {peak - before} KiB"
        events.cancel()  # its write is blocked: the call ends all the same, and the process with it
    assert wait_marked(sandboxd_server, "300.3", 0) == []


def test_execute_past_its_output_limit_is_resource_exhausted_and_ended(sandboxd_server: ServerProcess, pb: Any) -> None:
    request = pb.ExecuteRequest(config=pb.ProcessConfig(command=["sh", "-c", "sleep 300.41 & yes 300.42"]))
    with grpc.insecure_channel(grpc_target(sandboxd_server)) as channel:
        stub = make_stub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Execute(request, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "execute_max_output_bytes" in caught.value.details()
        assert wait_marked(sandboxd_server, "300.4", 0) == []
        small = pb.ExecuteRequest(config=pb.ProcessConfig(command=["head", "-c", str(64 * 1024), "/dev/zero"]))
        assert len(stub.Execute(small, timeout=TIMEOUT).stdout) == 64 * 1024  # at the limit: fine


def test_a_request_over_the_receive_limit_is_resource_exhausted_and_the_server_goes_on(
    sandboxd_server: ServerProcess, pb: Any
) -> None:
    big = pb.ExecuteRequest(config=pb.ProcessConfig(command=["true"], env_vars={"BIG": "x" * (80 * 1024)}))
    with grpc.insecure_channel(grpc_target(sandboxd_server)) as channel:
        stub = make_stub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Execute(big, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        echo = pb.ExecuteRequest(config=pb.ProcessConfig(command=["echo", "still here"]))
        assert stub.Execute(echo, timeout=TIMEOUT).stdout == b"still here\n"


def test_twenty_starts_at_once_on_one_channel(sandboxd_server: ServerProcess, pb: Any) -> None:
    script = 'echo "start $0"; sleep 0.5; echo "end $0" >&2; exit $(($0 % 7))'

    def run(stub: Any, index: int) -> tuple[bytes, bytes, int]:
        events, _ = start(stub, pb, "sh", "-c", script, str(index))
        out, err = b"", b""
        for event in events:
            kind = event.WhichOneof("event")
            if kind == "exit":
                return out, err, event.exit.exit_code
            out += event.stdout
            err += event.stderr
        raise AssertionError("no exit event")

    with grpc.insecure_channel(grpc_target(sandboxd_server)) as channel:
        stub = make_stub(channel)
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda i: run(stub, i), range(20)))
    assert results == [(f"start {i}\n".encode(), f"end {i}\n".encode(), i % 7) for i in range(20)]


def test_shutdown_ends_a_streaming_start_with_a_status_and_its_process(pb: Any) -> None:
    server = ServerProcess(transports=["sandboxd"], subreaper=True, config={"transports": {"sandboxd": LIMITS}})
    with server, grpc.insecure_channel(grpc_target(server)) as channel:
        events, _ = start(make_stub(channel), pb, "sh", "-c", TREE.format("300.5"))
        procs = [Proc.of(pid) for pid in wait_marked(server, "300.5", 3)]
        assert len(procs) == 3
        stopped: list[int | None] = []
        stopper = threading.Thread(target=lambda: stopped.append(server.stop()))
        began = time.monotonic()
        stopper.start()
        with pytest.raises(grpc.RpcError) as caught:
            for event in events:
                assert event.WhichOneof("event") != "exit", "the process ended on its own"
        ended = time.monotonic() - began
        stopper.join(30)
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), caught.value
        print(f"\nshutdown: the Start ended {caught.value.code()} after {ended:.2f} s (grace_s {LIMITS['grace_s']})")
        assert stopped == [0]
        assert still_alive(procs) == []
