"""The REST listener: ``/v1/files/{path}``, ``/v1/health`` and ``/v1/metadata`` (the spec's
``filesystem/v1`` API), a raw ASGI app over the files and utils services."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from sandbox_core.transport import ServerContext

from .settings import SandboxdSettings

#: Answered without the token (the kubelet's probe has none).
PROBES = (("GET", "/v1/health"),)

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _json(send: Any, status: int, body: object) -> None:
    data = msgspec.json.encode(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def make_app(ctx: ServerContext, settings: SandboxdSettings) -> Asgi:
    started = time.monotonic()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/v1/health":
            if ctx.registry.draining:
                await _json(send, 503, {"code": "UNAVAILABLE", "message": "the server is shutting down"})
            else:
                await _json(send, 200, {"status": "ok", "uptime_seconds": int(time.monotonic() - started)})
            return
        await _json(send, 404, {"code": "NOT_FOUND", "message": f"no route {path}"})

    return app
