"""``[transports.sandboxd]`` settings."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

MiB = 1024 * 1024

Port = Annotated[int, Meta(ge=0, le=65535)]


class SandboxdSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Where both listeners bind. Loopback by default (sandboxd itself binds every address): any
    #: other address needs the server's token, as ``server.host`` does, or
    #: ``server.allow_unauthenticated`` (the agent-sandbox SDK sends no credential; see the README).
    host: str = "127.0.0.1"
    grpc_port: Port = 9090  # sandboxd's, what SANDBOXD_GRPC_ADDR names; 0: a free port
    rest_port: Port = 8080  # sandboxd's, what SANDBOXD_REST_ADDR names; 0: a free port
    #: ``GET /v1/metadata`` lists the environment variables with this prefix (secret-looking
    #: names and the server's own variables never)
    metadata_env_prefix: str = "SANDBOX_"
    #: the largest gRPC message either side accepts from the other (gRPC's default is 4 MiB:
    #: the SDK's channel refuses a larger answer)
    max_receive_message_bytes: Annotated[int, Meta(ge=1024, le=1024 * MiB)] = 4 * MiB
    max_send_message_bytes: Annotated[int, Meta(ge=1024, le=1024 * MiB)] = 64 * MiB
    #: ``Execute`` keeps at most this much of each of stdout and stderr; a command that writes
    #: more fails with RESOURCE_EXHAUSTED (use ``Start`` to stream it), and is ended
    execute_max_output_bytes: Annotated[int, Meta(ge=0, le=1024 * MiB)] = 16 * MiB
    #: streams (calls) at once on one gRPC connection
    max_concurrent_streams: Annotated[int, Meta(ge=1, le=65536)] = 256
    #: a ping on an idle gRPC connection this often; one unanswered for ``keepalive_timeout_s``
    #: ends the connection (and with it every ``Start`` on it: its processes end)
    keepalive_time_s: Annotated[float, Meta(gt=0)] = 30.0
    keepalive_timeout_s: Annotated[float, Meta(gt=0)] = 20.0
    #: at shutdown, calls in progress get this long before they are cancelled
    grace_s: Annotated[float, Meta(ge=0)] = 2.0
    #: gRPC server reflection (what ``grpcurl`` lists and describes), as sandboxd serves it;
    #: with a token, it needs the token like every call
    reflection: bool = True
