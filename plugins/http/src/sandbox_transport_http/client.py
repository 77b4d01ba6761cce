"""The http transport's client side (httpx): operations to routes, errors to typed exceptions."""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping

import httpx
import msgspec
from sandbox_core.errors import SandboxError, TransportError, error_from_code
from sandbox_core.sse import SSEDecoder, SSEError
from sandbox_core.transport import ClientContext

from .routes import GENERIC_PREFIX, TABLE, Route
from .settings import HttpSettings

_decoder = msgspec.json.Decoder()


def error_from_response(status: int, content: bytes) -> SandboxError:
    try:
        body = _decoder.decode(content)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        details = body.get("context") if isinstance(body.get("context"), dict) else {}
        return error_from_code(body["code"], str(body.get("message", "")), details, status=status)
    text = content[:200].decode("utf-8", errors="replace")
    return TransportError("RPC_TRANSPORT_ERROR", f"HTTP {status}: {text}", {"status": status}, status=status)


class HttpClientTransport:
    def __init__(self, ctx: ClientContext) -> None:
        self.settings: HttpSettings = ctx.settings if ctx.settings is not None else HttpSettings()
        url = ctx.url
        if url.startswith("ws"):
            url = "http" + url[2:]
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=httpx.Timeout(ctx.timeout, connect=10.0),
                                         limits=httpx.Limits(max_keepalive_connections=64, max_connections=256))

    async def aclose(self) -> None:
        await self._client.aclose()

    def _request(self, service: str, operation: str, params: Mapping[str, Any]) -> tuple[Route | None, httpx.Request]:
        route = TABLE.by_operation.get((service, operation))
        values = dict(params)
        if route is None:
            return None, self._client.build_request("POST", f"{GENERIC_PREFIX}{service}/{operation}",
                                                    content=msgspec.json.encode(values),
                                                    headers={"content-type": "application/json"})
        path = route.format_path(values)
        if route.method in ("GET", "DELETE"):
            query = {k: str(v) for k, v in values.items() if k in route.query}
            return route, self._client.build_request(route.method, path, params=query)
        return route, self._client.build_request(route.method, path, content=msgspec.json.encode(values),
                                                 headers={"content-type": "application/json"})

    async def call(self, service: str, operation: str, params: Mapping[str, Any]) -> Any:
        route, request = self._request(service, operation, params)
        try:
            response = await self._client.send(request)
        except httpx.HTTPError as exc:
            raise TransportError("RPC_TRANSPORT_ERROR", f"{type(exc).__name__}: {exc}", {"url": str(request.url)}) from None
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        try:
            body = _decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise TransportError("RPC_TRANSPORT_ERROR", f"Invalid JSON from server: {exc}") from None
        if route is None:
            return body.get("result") if isinstance(body, dict) else body
        return route.unwrap(body) if route.unwrap is not None else body

    async def stream(self, service: str, operation: str, params: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        _, request = self._request(service, operation, params)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise TransportError("RPC_TRANSPORT_ERROR", f"{type(exc).__name__}: {exc}", {"url": str(request.url)}) from None
        try:
            if response.status_code >= 400:
                raise error_from_response(response.status_code, await response.aread())
            decoder = SSEDecoder(self.settings.max_event_bytes)
            async for chunk in response.aiter_raw():
                for event in decoder.feed(chunk):
                    if event.data in ("", "[DONE]"):
                        continue
                    try:
                        yield _decoder.decode(event.data)
                    except msgspec.DecodeError:
                        continue  # as the contract's parsers: unparsable data is skipped
            for event in decoder.close():
                if event.data not in ("", "[DONE]"):
                    yield _decoder.decode(event.data)
        except (httpx.HTTPError, SSEError) as exc:
            raise TransportError("RPC_TRANSPORT_ERROR", f"stream failed: {type(exc).__name__}: {exc}") from None
        finally:
            await response.aclose()
