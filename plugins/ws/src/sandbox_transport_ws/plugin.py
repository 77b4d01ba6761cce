"""Registers the ws transport with the host.

The server and client sides are imported on first use, so a server never loads the client's
WebSocket library and a client never loads the server's code.
"""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.transport import ClientContext, ClientTransport, ServerContext, ServerMount, TransportSpec

from .settings import WsSettings
from .terminal import attach_tty  # light: httpx-ws is imported when a terminal connects


def _server(ctx: ServerContext) -> ServerMount:
    from .server import make_server

    return make_server(ctx)


def _client(ctx: ClientContext) -> ClientTransport:
    from .client import WsClientTransport

    return WsClientTransport(ctx)


@hookimpl
def sandbox_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(
        TransportSpec(
            "ws",
            server=_server,
            client=_client,
            settings=WsSettings,
            terminal=attach_tty,
            description="the REST routes multiplexed over one WebSocket (/ws, /api/ws); terminals (/ws/pty)",
        )
    )
