"""``sandbox`` (the CLI) with one more transport, ``ptytest``, that mounts ``/ws/pty`` on the ws
plugin's :class:`~sandbox_transport_ws.pty.PtyEndpoint`: a real server for the terminal tests that
does not depend on how (or whether yet) the ws transport's own server mounts the endpoint.

Run as ``python serve_with_pty.py serve --config PATH --ready-fd N`` (what ServerProcess runs).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from sandbox_core import cli, server
from sandbox_core.hookspecs import hookimpl
from sandbox_core.transport import ServerContext, ServerMount, TransportSpec


def _server(ctx: ServerContext) -> ServerMount:
    from sandbox_transport_ws.pty import PATH, PtyEndpoint

    endpoint = PtyEndpoint(ctx.registry)
    return ServerMount(app=endpoint, websocket_paths=(PATH,), aclose=endpoint.aclose)


@hookimpl
def sandbox_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(TransportSpec("ptytest", server=_server, description="/ws/pty only (tests)"))


def main() -> int:
    this = sys.modules[__name__]
    make = server.make_plugin_manager

    def with_ptytest(**kwargs: Any) -> Any:
        return make(plugins=[("ptytest", this)], **kwargs)

    server.make_plugin_manager = with_ptytest  # type: ignore[assignment]
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
