"""The http transport's client side (aiohttp): operations to routes, errors to typed exceptions.

aiohttp rather than httpx: on this workload (small JSON calls on keep-alive connections) it
costs about half the client CPU per call, which the exec latency target needs.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import msgspec

from sandbox_core.contract.routes import request_for
from sandbox_core.errors import ErrorCode, SandboxError, TransportError, error_from_code
from sandbox_core.routing import Route
from sandbox_core.sse import SSEDecoder, SSEError
from sandbox_core.transport import ClientContext

from .settings import HttpSettings

_decoder = msgspec.json.Decoder()
JSON_HEADERS = {"Content-Type": "application/json"}


def error_from_response(status: int, content: bytes) -> SandboxError:
    try:
        body = _decoder.decode(content)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        details = body.get("context") if isinstance(body.get("context"), dict) else {}
        return error_from_code(body["code"], str(body.get("message", "")), details, status=status)
    text = content[:200].decode("utf-8", errors="replace")
    return TransportError(ErrorCode.RPC_TRANSPORT_ERROR, f"HTTP {status}: {text}", {"status": status}, status=status)


class HttpClientTransport:
    """Unary calls and SSE streams over one pooled aiohttp session (made on first use)."""

    def __init__(self, ctx: ClientContext) -> None:
        self.settings: HttpSettings = ctx.settings if ctx.settings is not None else HttpSettings()
        url = ctx.url
        if url.startswith("ws"):
            url = "http" + url[2:]
        self.base_url = url.rstrip("/")
        self.timeout = ctx.timeout
        self._session: aiohttp.ClientSession | None = None
        # the session sends it with every request (and never to another origin: one server per client)
        self._headers = {"Authorization": f"Bearer {ctx.token}"} if ctx.token else None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=10),
                connector=aiohttp.TCPConnector(limit=256, force_close=False),
                skip_auto_headers=("User-Agent",),
                headers=self._headers,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _request(
        self, service: str, operation: str, params: Mapping[str, Any]
    ) -> tuple[Route | None, str, str, dict[str, str] | None, bytes | None]:
        """(route, method, url, query, body) for an operation."""
        route, method, path, query, values = request_for(service, operation, params)
        body = msgspec.json.encode(values) if values is not None else None
        return route, method, self.base_url + path, query, body

    async def call(self, service: str, operation: str, params: Mapping[str, Any]) -> Any:
        route, method, url, query, body = self._request(service, operation, params)
        # aiohttp sends a large bytes body in one piece and warns about it; a file object streams
        data: bytes | io.BytesIO | None = io.BytesIO(body) if body is not None and len(body) > 1 << 20 else body
        try:
            async with self._client().request(
                method, url, params=query, data=data, headers=JSON_HEADERS if body is not None else None
            ) as response:
                status = response.status
                content = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(ErrorCode.RPC_TRANSPORT_ERROR, f"{type(exc).__name__}: {exc}", {"url": url}) from None
        if status >= 400:
            raise error_from_response(status, content)
        try:
            decoded = _decoder.decode(content)
        except msgspec.DecodeError as exc:
            raise TransportError(ErrorCode.RPC_TRANSPORT_ERROR, f"Invalid JSON from server: {exc}") from None
        if route is None:
            return decoded.get("result") if isinstance(decoded, dict) else decoded
        return route.unwrap(decoded) if route.unwrap is not None else decoded

    async def stream(
        self, service: str, operation: str, params: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        _, method, url, query, body = self._request(service, operation, params)
        # A stream may be long: no total deadline, but a silent connection (the server sends a
        # comment every few seconds) is given up after the client timeout.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.timeout)
        try:
            response = await self._client().request(
                method,
                url,
                params=query,
                data=body,
                timeout=timeout,
                headers=JSON_HEADERS if body is not None else None,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(ErrorCode.RPC_TRANSPORT_ERROR, f"{type(exc).__name__}: {exc}", {"url": url}) from None
        try:
            if response.status >= 400:
                raise error_from_response(response.status, await response.read())
            decoder = SSEDecoder(self.settings.max_event_bytes)
            async for chunk in response.content.iter_any():
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
        except (TimeoutError, aiohttp.ClientError, SSEError) as exc:
            raise TransportError(ErrorCode.RPC_TRANSPORT_ERROR, f"stream failed: {type(exc).__name__}: {exc}") from None
        finally:
            response.release()
