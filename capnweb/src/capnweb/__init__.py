"""Cap'n Web in Python: the wire protocol of the ``capnweb`` npm package (0.12), both sides.

A sans-IO core (:class:`RpcSession`: messages in, messages out) with the whole expression
grammar, promise pipelining, ``.map()``, callbacks both ways, reference ownership as the
reference implementation does it, and streams with its flow control; plus WebSocket and HTTP
batch transports for both sides. It knows nothing of the sandbox that uses it.

    class Api(RpcTarget):
        async def add(self, a: int, b: int) -> int:
            return a + b

    # server (ASGI):  await serve_websocket(scope, receive, send, main=Api())
    async with websocket_session("ws://127.0.0.1:8000/rpc") as api:
        assert await api.add(1, 2) == 3
"""

from .batch import http_batch_session, serve_http_batch
from .flow import FlowController
from .session import RpcSession
from .streams import ReadableStream, WritableStream
from .stubs import RpcPromise, RpcStub
from .targets import RpcTarget
from .values import (
    INVALID_DATE,
    UNDEFINED,
    BigInt,
    Budget,
    Limits,
    ProtocolError,
    RpcError,
    SessionClosed,
    TypedBytes,
    Url,
)
from .websocket import HandshakeRefused, WebSocketClient, serve_websocket, websocket_session

__all__ = [
    "INVALID_DATE",
    "UNDEFINED",
    "BigInt",
    "Budget",
    "FlowController",
    "HandshakeRefused",
    "Limits",
    "ProtocolError",
    "ReadableStream",
    "RpcError",
    "RpcPromise",
    "RpcSession",
    "RpcStub",
    "RpcTarget",
    "SessionClosed",
    "TypedBytes",
    "Url",
    "WebSocketClient",
    "WritableStream",
    "http_batch_session",
    "serve_http_batch",
    "serve_websocket",
    "websocket_session",
]
