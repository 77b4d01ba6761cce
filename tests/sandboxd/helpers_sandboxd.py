"""Helpers of the sandboxd transport's tests: a server serving only it (both listeners on free
ports, learned from its ``server.started`` line), the official agent-sandbox SDK pointed at it
without a cluster, and gRPC callables for the methods the SDK does not wrap."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import cmdline, descendants


def listener_port(server: ServerProcess, name: str) -> int:
    return int(server.listeners[name].rsplit(":", 1)[1])


def grpc_target(server: ServerProcess) -> str:
    """``127.0.0.1:PORT`` of the server's gRPC listener."""
    return server.listeners["sandboxd-grpc"].removeprefix("grpc://")


def rest_url(server: ServerProcess) -> str:
    return server.listeners["sandboxd-rest"]


class NoCluster:
    """What ``Sandbox`` asks its Kubernetes helper for, without a cluster: a Sandbox object
    whose pod IP is loopback, so the SDK's in-cluster connector dials our listeners."""

    injected_api_client = None

    def get_sandbox(self, name: str, namespace: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "status": {"podIPs": [{"ip": "127.0.0.1"}]}}


def sdk_sandbox(server: ServerProcess, **kwargs: Any) -> Any:
    """The SDK's ``Sandbox`` on ``server`` (close it with ``.connector.close()``)."""
    from k8s_agent_sandbox.models import SandboxdInClusterConnectionConfig
    from k8s_agent_sandbox.sandbox import Sandbox

    config = SandboxdInClusterConnectionConfig(
        mode="in-cluster-pod-ip",
        grpc_port=listener_port(server, "sandboxd-grpc"),
        rest_port=listener_port(server, "sandboxd-rest"),
    )
    return Sandbox(claim_name="test", sandbox_id="test", connection_config=config, k8s_helper=NoCluster(), **kwargs)


def unary(channel: grpc.Channel, path: str, request: type[Message], response: type[Message]) -> Any:
    """A unary-unary callable for ``path`` (``/package.Service/Method``) on ``channel``."""
    return channel.unary_unary(
        path, request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )


def server_stream(channel: grpc.Channel, path: str, request: type[Message], response: type[Message]) -> Any:
    return channel.unary_stream(
        path, request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )


def marked(server: ServerProcess, marker: str) -> list[int]:
    """The server's descendants whose command line holds ``marker``."""
    return [pid for pid in descendants(server.pid) if marker in " ".join(cmdline(pid) or [])]
