"""``sandbox`` (the CLI) with one more transport, ``listentest``, that binds a TCP listener of
its own, as a transport with its own server does: the seams core gives such a transport, used
the way it would use them, in a real server process.

* Its lifespan checks its bind address with the server's edge policy (``ctx.policy.check_bind``,
  the rule ``server.host`` follows), binds ``[transports.listentest] host`` on a free port (the
  listener greets and hangs up) and reports it: ``{"listentest": "tcp://HOST:PORT"}``.
* Its mount answers ``/listentest/`` on the server's port with the request's headers and whether
  the edge marked it anonymous, and declares ``GET /listentest/health`` a probe (no token).
* It serves the same app on an http listener of its own too, through core's
  ``serve_listener`` (edge, hypercorn hardening), with ``GET /v1/health`` as that listener's
  probe; reported as ``listentest-rest`` and drained by the mount's ``aclose``.

Run as ``python serve_with_listener.py serve --config PATH --ready-fd N`` (what ServerProcess runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from sandbox_core import cli, server
from sandbox_core.edge import ANONYMOUS
from sandbox_core.hookspecs import hookimpl
from sandbox_core.server import OwnListener, serve_listener
from sandbox_core.transport import ServerContext, ServerMount, TransportSpec

GREETING = b"listentest\n"
HEALTH = ("GET", "/listentest/health")


class ListenSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every http request with its headers and whether the edge marked it anonymous."""
    body = json.dumps(
        {
            "headers": sorted(k.decode("latin-1").lower() for k, _ in scope["headers"]),
            "anonymous": bool(scope.get(ANONYMOUS)),
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def own_listener(ctx: ServerContext, rest: list[OwnListener]) -> AsyncIterator[dict[str, str]]:
    host = ctx.settings.host
    ctx.policy.check_bind(host, "transports.listentest.host")

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(greet, host, 0)
    bound_host, port = listener.sockets[0].getsockname()[:2]
    try:
        async with serve_listener(
            ctx, app, host=host, port=0, setting="transports.listentest.host", probes=(("GET", "/v1/health"),)
        ) as http_listener:
            rest.append(http_listener)
            yield {"listentest": f"tcp://{bound_host}:{port}", "listentest-rest": http_listener.url}
    finally:
        listener.close()
        await listener.wait_closed()


def _server(ctx: ServerContext) -> ServerMount:
    rest: list[OwnListener] = []

    async def aclose() -> None:  # the own http listener drains with the server's port
        for listener in rest:
            await listener.aclose()

    return ServerMount(
        app=app, http_paths=("/listentest/",), lifespan=own_listener(ctx, rest), probes=(HEALTH,), aclose=aclose
    )


@hookimpl
def sandbox_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(TransportSpec("listentest", server=_server, settings=ListenSettings, description="own listener (tests)"))


def main() -> int:
    this = sys.modules[__name__]
    make = server.make_plugin_manager

    def with_listentest(**kwargs: Any) -> Any:
        return make(plugins=[("listentest", this)], **kwargs)

    server.make_plugin_manager = with_listentest  # type: ignore[assignment]
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
