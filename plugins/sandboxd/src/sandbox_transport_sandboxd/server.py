"""The transport's server side: nothing on the server's own port; two listeners of its own
(gRPC and REST), started and stopped with the server through the mount's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sandbox_core.config import ConfigError
from sandbox_core.server import serve_listener
from sandbox_core.transport import ServerContext, ServerMount

from . import ext_api, process_api, rest
from .grpc_server import address, build_server
from .settings import SandboxdSettings

SETTING = "transports.sandboxd"


async def _nothing_here(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The mount's app on the server's port, which this transport claims no path of."""
    raise RuntimeError("the sandboxd transport serves no path on the server's port")


class Listeners:
    """Both listeners, for as long as the server runs."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.settings: SandboxdSettings = ctx.settings
        self.grpc: Any = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[dict[str, str]]:
        ctx, settings = self.ctx, self.settings
        host = settings.host
        ctx.policy.check_bind(host, f"{SETTING}.host")
        services = [process_api.service(ctx, settings), *ext_api.services(ctx, settings)]
        server = build_server(ctx.policy, settings, services)
        try:
            port = server.add_insecure_port(address(host, settings.grpc_port))
        except RuntimeError as exc:
            raise ConfigError(f"{SETTING}.grpc_port: cannot listen on {host}:{settings.grpc_port}: {exc}") from None
        await server.start()
        self.grpc = server
        try:
            async with serve_listener(
                ctx,
                rest.make_app(ctx, settings),
                host=host,
                port=settings.rest_port,
                setting=f"{SETTING}.rest_port",
                probes=rest.PROBES,
            ) as listener:
                yield {"sandboxd-grpc": f"grpc://{address(host, port)}", "sandboxd-rest": listener.url}
        finally:
            await self.aclose()
            await server.wait_for_termination(timeout=settings.grace_s + 1.0)

    async def aclose(self) -> None:
        """Shutdown begins: no new gRPC call; the calls in progress get ``grace_s``, then are
        cancelled (a ``Start``'s process ends with its stream). ``/v1/health`` answers 503 from
        now on (the registry is draining) while the REST listener waits for the server's port."""
        if self.grpc is not None:
            await self.grpc.stop(self.settings.grace_s)


def make_server(ctx: ServerContext) -> ServerMount:
    listeners = Listeners(ctx)
    return ServerMount(app=_nothing_here, lifespan=listeners.lifespan(), aclose=listeners.aclose)
