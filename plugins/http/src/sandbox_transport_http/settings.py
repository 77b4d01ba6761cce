"""``[transports.http]`` settings."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class HttpSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_body_bytes: Annotated[int, Meta(gt=0)] = 128 * 1024 * 1024  # larger bodies get 413
    # the former names of [server] max_body_bytes_total and body_wait_timeout (the budget is now
    # the whole server's, shared by every transport); when set, they set it
    max_body_bytes_total: Annotated[int, Meta(gt=0)] | None = None
    body_wait_s: Annotated[float, Meta(ge=0, le=3600)] | None = None
    sse_heartbeat_s: Annotated[float, Meta(gt=0)] = 15.0  # comment line on a silent stream
    max_event_bytes: Annotated[int, Meta(gt=0)] = 64 * 1024 * 1024  # client: largest SSE event accepted
