"""Registers the sandboxd transport with the host (its server side is imported on first use)."""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.transport import ServerContext, ServerMount, TransportSpec

from .settings import SandboxdSettings


def _server(ctx: ServerContext) -> ServerMount:
    from .server import make_server

    return make_server(ctx)


@hookimpl
def sandbox_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(
        TransportSpec(
            "sandboxd",
            server=_server,
            settings=SandboxdSettings,
            description="the Kubernetes agent-sandbox runtime API (sandboxd): gRPC process.v1 on grpc_port, "
            "REST /v1/files on rest_port",
            listener_ports=("grpc_port", "rest_port"),
        )
    )
