"""``[transports.http]`` settings."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class HttpSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_body_bytes: Annotated[int, Meta(gt=0)] = 128 * 1024 * 1024  # larger bodies get 413
    # request body bytes held at once across all requests; past it a request waits for room
    max_body_bytes_total: Annotated[int, Meta(gt=0)] = 256 * 1024 * 1024
    body_wait_s: Annotated[float, Meta(ge=0)] = 30.0  # how long it waits before 503
    sse_heartbeat_s: Annotated[float, Meta(gt=0)] = 15.0  # comment line on a silent stream
    max_event_bytes: Annotated[int, Meta(gt=0)] = 64 * 1024 * 1024  # client: largest SSE event accepted
