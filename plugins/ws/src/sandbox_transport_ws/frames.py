"""The frames of the route-multiplexing WebSocket (section c of the contract), as msgspec structs
shared by the server and the client. Every frame is one JSON text message.

client to server::

    {"type": "request", "id": "r1", "method": "POST", "path": "/api/execute", "body": {...}, "headers": {...}}
    {"type": "cancel", "id": "r1"}

server to client::

    {"type": "response", "id": "r1", "status": 200, "body": {...}, "done": true}
    {"type": "stream", "id": "r1", "data": "<the JSON text of one event>"}
    {"type": "error", "id": "r1", "code": "INVALID_REQUEST", "message": "...", "status": 400}

A streamed answer is one ``stream`` frame per event, then a ``response`` with no body.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

#: The id of a request: a string in the contract (``ws_<ms>_<rand>``); an integer is accepted too.
FrameId = str | int

#: The ``error`` frame codes of the contract (an error answer of a route is a ``response``).
PARSE_ERROR = "PARSE_ERROR"  # the frame is not JSON
INVALID_REQUEST = "INVALID_REQUEST"  # JSON, but not a request or a cancel the server can run
INTERNAL_ERROR = "INTERNAL_ERROR"  # the server failed running the request (a bug of ours)
STREAM_ERROR = "STREAM_ERROR"  # reading the stream failed after it started (a bug of ours)

EMPTY = msgspec.Raw(b"")


class InFrame(msgspec.Struct):
    """A client's frame as the server decodes it: ``body`` stays JSON text (a view of the frame,
    not a copy) for the operation's own decoder."""

    type: str
    id: FrameId | None = None
    method: str | None = None
    path: str | None = None
    body: msgspec.Raw = EMPTY
    headers: dict[str, str] | None = None


class IdOnly(msgspec.Struct):
    """Only the id of a frame (to answer a frame that failed validation with its id)."""

    id: FrameId | None = None


class RequestFrame(msgspec.Struct, kw_only=True):
    type: str = "request"
    id: FrameId
    method: str
    path: str
    body: Any = UNSET
    headers: dict[str, str] | UnsetType = UNSET


class CancelFrame(msgspec.Struct, kw_only=True):
    type: str = "cancel"
    id: FrameId


class ResponseFrame(msgspec.Struct, kw_only=True):
    type: str = "response"
    id: FrameId
    status: int
    body: Any = UNSET
    done: bool = True


class StreamFrame(msgspec.Struct, kw_only=True):
    type: str = "stream"
    id: FrameId
    data: str


class ErrorFrame(msgspec.Struct, kw_only=True):
    type: str = "error"
    id: FrameId | UnsetType = UNSET
    code: str
    message: str
    status: int
    context: dict[str, Any] | UnsetType = UNSET


class OutFrame(msgspec.Struct):
    """A server's frame as the client decodes it (any of response, stream, error)."""

    type: str
    id: FrameId | None = None
    status: int = 0
    body: Any = None
    data: str | None = None
    code: str | None = None
    message: str | None = None
    context: dict[str, Any] | None = None
