"""``[transports.ws]`` settings (server side and client side share the table)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class WsSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # both sides
    max_frame_bytes: Annotated[int, Meta(gt=0)] = 64 * 1024 * 1024  # a larger incoming frame closes the socket (1009)
    # server side
    max_in_flight: Annotated[int, Meta(gt=0)] = 1024  # requests running at once per connection; more get 503
    max_queued_bytes: Annotated[int, Meta(gt=0)] = 1024 * 1024  # frames waiting for a client that does not read
    ping_interval_s: Annotated[float, Meta(gt=0)] = 20.0  # a ping on every open socket this often
    # client side (a unary call's timeout is the client's `timeout`, as over http)
    stream_idle_timeout_s: Annotated[float, Meta(gt=0)] = 300.0  # a stream with no event for this long fails
    idle_disconnect_s: Annotated[float, Meta(ge=0)] = 1.0  # close the socket this long after the last call
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    stream_buffer_bytes: Annotated[int, Meta(gt=0)] = 8 * 1024 * 1024  # events a stream's reader has not taken yet
