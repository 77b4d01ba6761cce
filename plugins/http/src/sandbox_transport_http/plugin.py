"""Registers the http transport with the host."""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.transport import ClientContext, ServerContext, ServerMount, TransportSpec

from .settings import HttpSettings


def _server(ctx: ServerContext) -> ServerMount:
    from .server import make_server

    return make_server(ctx)


def _client(ctx: ClientContext) -> object:
    from .client import HttpClientTransport

    return HttpClientTransport(ctx)


@hookimpl
def sandbox_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(
        TransportSpec(
            "http",
            server=_server,
            client=_client,
            settings=HttpSettings,  # type: ignore[arg-type]
            description="REST + SSE under /api/",
        )
    )
