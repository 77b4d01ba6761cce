"""The gRPC listener's edge: the token (metadata ``authorization`` or
``x-forwarded-authorization``, ``Bearer <token>``) on unary and streaming methods, the bind rule
for ``transports.sandboxd.host``, and a gRPC port already in use."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from helpers_sandboxd import grpc_target

from sandbox_core.testing import ServerProcess

TIMEOUT = 30


@pytest.fixture(scope="module")
def token_server() -> Iterator[ServerProcess]:
    with ServerProcess(transports=["sandboxd"], config={"server": {"token": "t"}}) as server:
        yield server


@pytest.fixture(scope="module")
def pb() -> Any:
    from k8s_agent_sandbox.commands._process_stubs import process_pb2

    return process_pb2


@pytest.fixture
def stub(token_server: ServerProcess) -> Iterator[Any]:
    from k8s_agent_sandbox.commands._process_stubs import process_pb2_grpc

    with grpc.insecure_channel(grpc_target(token_server)) as channel:
        yield process_pb2_grpc.ProcessServiceStub(channel)


def calls(stub: Any, pb: Any, metadata: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """A unary call (Execute) and a streaming one (Start) with ``metadata``: what each gives."""
    config = pb.ProcessConfig(command=["echo", "hi"])
    out: dict[str, Any] = {}
    try:
        out["unary"] = stub.Execute(pb.ExecuteRequest(config=config), metadata=metadata, timeout=TIMEOUT).stdout
    except grpc.RpcError as exc:
        out["unary"] = exc.code()
    try:
        events = list(stub.Start(pb.StartRequest(config=config), metadata=metadata, timeout=TIMEOUT))
        out["stream"] = b"".join(event.stdout for event in events)
    except grpc.RpcError as exc:
        out["stream"] = exc.code()
    return out


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer wrong"),),
        (("x-forwarded-authorization", "Bearer tt"),),
        (("authorization", "t"),),
    ],
    ids=["none", "wrong", "wrong-forwarded", "not-bearer"],
)
def test_no_or_a_wrong_token_is_unauthenticated(stub: Any, pb: Any, metadata: tuple[tuple[str, str], ...]) -> None:
    denied = grpc.StatusCode.UNAUTHENTICATED
    assert calls(stub, pb, metadata) == {"unary": denied, "stream": denied}


@pytest.mark.parametrize("header", ["authorization", "x-forwarded-authorization"])
def test_the_token_in_either_header_is_accepted(stub: Any, pb: Any, header: str) -> None:
    assert calls(stub, pb, ((header, "Bearer t"),)) == {"unary": b"hi\n", "stream": b"hi\n"}


def test_a_denied_call_says_how_to_authenticate(stub: Any, pb: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Execute(pb.ExecuteRequest(config=pb.ProcessConfig(command=["true"])), timeout=TIMEOUT)
    assert "authorization: Bearer" in caught.value.details()


def test_a_non_loopback_host_without_a_token_refuses_to_start() -> None:
    server = ServerProcess(transports=["sandboxd"], config={"transports": {"sandboxd": {"host": "0.0.0.0"}}})
    with pytest.raises(RuntimeError, match="did not start") as caught:
        server.start()
    assert "transports.sandboxd.host" in str(caught.value)


def test_a_grpc_port_in_use_fails_start_up_naming_the_setting() -> None:
    with socket.socket() as holder:
        # the holder allows sharing: only the server's own so_reuseport=0 makes the bind fail
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = ServerProcess(transports=["sandboxd"], config={"transports": {"sandboxd": {"grpc_port": port}}})
        with pytest.raises(RuntimeError, match="did not start") as caught:
            server.start()
        assert f"transports.sandboxd.grpc_port: cannot listen on 127.0.0.1:{port}" in str(caught.value)
        print(str(caught.value).splitlines()[-1][:300])
