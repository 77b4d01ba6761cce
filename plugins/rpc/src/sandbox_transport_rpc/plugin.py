"""Registers the rpc transport with the host.

The server and client sides are imported on first use, so a server never loads the client's
WebSocket library and a client never loads the server's code.
"""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.transport import ClientContext, ClientTransport, ServerContext, ServerMount, TransportSpec

from .settings import RpcSettings


def _server(ctx: ServerContext) -> ServerMount:
    from .server import make_server

    return make_server(ctx)


def _client(ctx: ClientContext) -> ClientTransport:
    from .client import RpcClientTransport

    return RpcClientTransport(ctx)


@hookimpl
def sandbox_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(
        TransportSpec(
            "rpc",
            server=_server,
            client=_client,
            settings=RpcSettings,
            description="Cap'n Web RPC (SandboxControlAPI) over WebSocket and HTTP batch at /rpc",
        )
    )
