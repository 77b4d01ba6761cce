"""Registers the http transport with the host.

The server and client sides are imported on first use, so a server never loads the client's
HTTP library (aiohttp) and a client never loads the server's code.
"""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.transport import ClientContext, ClientTransport, ServerContext, ServerMount, TransportSpec

from .settings import HttpSettings


def _server(ctx: ServerContext) -> ServerMount:
    from .server import make_server

    return make_server(ctx)


def _client(ctx: ClientContext) -> ClientTransport:
    from .client import HttpClientTransport

    return HttpClientTransport(ctx)


@hookimpl
def sandbox_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(
        TransportSpec(
            "http",
            server=_server,
            client=_client,
            settings=HttpSettings,
            description="REST + SSE under /api/",
        )
    )
