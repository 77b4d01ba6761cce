"""``[transports.rpc]`` settings (server side and client side share the table)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class RpcSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # both sides: what one peer accepts from the other; breaking a limit aborts the session
    max_message_bytes: Annotated[int, Meta(gt=0)] = 32 * 1024 * 1024  # one message (the reference's 32 Mi)
    max_depth: Annotated[int, Meta(gt=0)] = 256  # how deeply a message's values may nest
    max_stream_buffer_bytes: Annotated[int, Meta(gt=0)] = 64 * 1024 * 1024  # an incoming stream's unread chunks
    # every incoming stream of one session together: a write past it fails its stream
    max_session_stream_buffer_bytes: Annotated[int, Meta(gt=0)] = 64 * 1024 * 1024
    max_queued_bytes: Annotated[int, Meta(gt=0)] = 64 * 1024 * 1024  # messages waiting for a peer that does not read
    # server side
    max_batch_bytes: Annotated[int, Meta(gt=0)] = 128 * 1024 * 1024  # one HTTP batch's body; larger gets 413
    # every incoming stream of every session of the server together: a write past it fails its stream
    max_server_stream_buffer_bytes: Annotated[int, Meta(gt=0)] = 128 * 1024 * 1024
    ping_interval_s: Annotated[float, Meta(gt=0)] = 20.0  # a ping on every open socket this often
    # an empty chunk on a silent stream this often: a reader's cancel reaches the source by the
    # refusal of a write, so without it a silent command would outlive a cancelled stream
    stream_heartbeat_s: Annotated[float, Meta(gt=0)] = 1.0
    # client side (a unary call's timeout is the client's `timeout`, as over http)
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    stream_idle_timeout_s: Annotated[float, Meta(gt=0)] = 300.0  # a stream with no chunk for this long fails
    max_event_bytes: Annotated[int, Meta(gt=0)] = 64 * 1024 * 1024  # one SSE event of a stream
