"""A server without the interpreter service (SANDBOX_DISABLED_PLUGINS=interpreter): the gRPC
listener answers JupyterService UNIMPLEMENTED (where a server with it answers), and
ProcessService and WatchService still work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from helpers_sandboxd import grpc_target, server_stream, unary

from sandbox_core.testing import ServerProcess
from sandbox_transport_sandboxd.pb import sandbox_ext_v1_pb2 as ext
from sandbox_transport_sandboxd.pb import sandboxd_process_v1_pb2 as proc

TIMEOUT_S = 30


@pytest.fixture(scope="module")
def chan() -> Iterator[grpc.Channel]:
    env = {"SANDBOX_DISABLED_PLUGINS": "interpreter"}
    with ServerProcess(transports=["sandboxd"], env=env) as server, grpc.insecure_channel(grpc_target(server)) as c:
        yield c


def test_jupyter_is_unimplemented_without_the_interpreter_service(chan: grpc.Channel, channel: grpc.Channel) -> None:
    path = "/sandbox.v1.JupyterService/ListContexts"
    answered = unary(channel, path, ext.ListContextsRequest, ext.ListContextsResponse)  # a server with it
    assert isinstance(answered(ext.ListContextsRequest(), timeout=TIMEOUT_S), ext.ListContextsResponse)
    for method, request, response in (
        ("ListContexts", ext.ListContextsRequest, ext.ListContextsResponse),
        ("CreateContext", ext.CreateContextRequest, ext.Context),
    ):
        call = unary(chan, f"/sandbox.v1.JupyterService/{method}", request, response)
        with pytest.raises(grpc.RpcError) as caught:
            call(request(), timeout=TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    stream = server_stream(
        chan, "/sandbox.v1.JupyterService/ExecuteCode", ext.ExecuteCodeRequest, ext.ExecuteCodeResponse
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(stream(ext.ExecuteCodeRequest(context_id="x", code="1"), timeout=TIMEOUT_S))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_process_and_watch_still_work_without_the_interpreter_service(chan: grpc.Channel) -> None:
    execute = unary(chan, "/process.v1.ProcessService/Execute", proc.ExecuteRequest, proc.ExecuteResponse)
    done: Any = execute(proc.ExecuteRequest(config=proc.ProcessConfig(command=["echo", "hi"])), timeout=TIMEOUT_S)
    assert (done.exit_code, done.stdout) == (0, b"hi\n")
    watch = server_stream(chan, "/sandbox.v1.WatchService/Watch", ext.WatchRequest, ext.WatchResponse)
    call = watch(ext.WatchRequest(path="."), timeout=TIMEOUT_S)
    assert next(call).WhichOneof("event") == "watching"
    call.cancel()
