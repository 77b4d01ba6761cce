"""gRPC server reflection (what grpcurl uses) describes what is served, under the spec's names:
a client that knows nothing but the address lists the services, reads their descriptors, builds
a request from them and calls it."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from helpers_sandboxd import grpc_target

from sandbox_core.testing import ServerProcess


def test_reflection_lists_and_describes_the_services_under_the_spec_s_names(sandboxd_server: ServerProcess) -> None:
    with grpc.insecure_channel(grpc_target(sandboxd_server)) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) >= {
            "process.v1.ProcessService",
            "sandbox.v1.WatchService",
            "sandbox.v1.JupyterService",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("process.v1.ProcessService")
        assert [m.name for m in service.methods] == ["Start", "Execute", "WriteStdin", "SendSignal", "ResizeTTY"]
        execute = service.methods_by_name["Execute"]
        assert execute.input_type.full_name == "process.v1.ExecuteRequest"
        config = execute.input_type.fields_by_name["config"].message_type
        assert config.full_name == "process.v1.ProcessConfig"
        assert pool.FindServiceByName("sandbox.v1.JupyterService").methods_by_name["ExecuteCode"].server_streaming
        # a request built from the reflected descriptors alone, as grpcurl does
        request_class = message_factory.GetMessageClass(execute.input_type)
        response_class = message_factory.GetMessageClass(execute.output_type)
        request = request_class()
        request.config.command.extend(["echo", "reflected"])
        call = channel.unary_unary(
            "/process.v1.ProcessService/Execute",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        answer = call(request, timeout=30)
        assert (answer.exit_code, answer.stdout) == (0, b"reflected\n")


class _Bearer(grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to a streaming call (reflection's is one)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self.token}")]
        return continuation(details._replace(metadata=metadata), requests)


def test_reflection_needs_the_token_when_the_server_has_one() -> None:
    with (
        ServerProcess(transports=["sandboxd"], config={"server": {"token": "t"}}) as server,
        grpc.insecure_channel(grpc_target(server)) as channel,
    ):
        with pytest.raises(grpc.RpcError) as refused:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        authorized = grpc.intercept_channel(channel, _Bearer("t"))
        assert "process.v1.ProcessService" in ProtoReflectionDescriptorDatabase(authorized).get_services()


def test_reflection_can_be_turned_off() -> None:
    config = {"transports": {"sandboxd": {"reflection": False}}}
    with (
        ServerProcess(transports=["sandboxd"], config=config) as server,
        grpc.insecure_channel(grpc_target(server)) as channel,
    ):
        with pytest.raises(grpc.RpcError) as refused:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
