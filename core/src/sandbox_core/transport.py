"""What a transport plugin registers: its server side (an ASGI app and the paths it serves)
and its client side (a :class:`ClientTransport` the ``Sandbox`` facade drives)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from .edge import EdgePolicy
from .intake import DEFAULT_BODY_TIMEOUT_S, ByteBudget
from .metrics import Metrics
from .registry import ServiceRegistry


@dataclass(frozen=True)
class ServerContext:
    """Given to a transport's server factory."""

    registry: ServiceRegistry
    settings: Any
    config: Any
    #: The server's one budget of incoming bytes (``[server] max_body_bytes_total``): every
    #: transport counts the request bodies and messages it holds against it.
    budget: ByteBudget = field(default_factory=ByteBudget)
    #: ``[server] body_timeout``: a body whose bytes stop coming for this long is given up.
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT_S
    #: The server's metrics (the registry's): a transport reports its connections there and
    #: counts the bytes it moves (:mod:`sandbox_core.metrics`). Default: off.
    metrics: Metrics = field(default_factory=lambda: Metrics(enabled=False))
    #: The server's edge policy (``[server]`` token, hosts, origins, allow_unauthenticated), for
    #: a transport that serves a listener of its own: ``policy.check_bind(host, setting)`` before
    #: it binds (the rule ``server.host`` follows), ``policy.for_bind(host).check(headers)`` on
    #: each http request there, ``policy.authorized(value)`` for a credential that comes another
    #: way. Read only. Default: no token, any host.
    policy: EdgePolicy = field(default_factory=EdgePolicy)


@dataclass(frozen=True)
class ServerMount:
    """A transport's server side: an ASGI app and the paths it answers, and optionally what it
    runs for as long as the server does (:attr:`lifespan`).

    ``http_paths`` are exact paths or prefixes ending in ``/``; ``catch_all`` takes every
    http request no other transport claims; ``websocket_paths`` are exact paths.
    """

    app: Callable[..., Any]
    http_paths: tuple[str, ...] = ()
    websocket_paths: tuple[str, ...] = ()
    catch_all: bool = False
    #: Called once when the server begins to shut down, before open connections are waited
    #: for: a connection transport closes its sockets and fails every pending call there.
    aclose: Callable[[], Awaitable[None]] | None = None
    #: A ping on every open WebSocket this often (the server pings at the smallest interval any
    #: mount asks for; None: no pings).
    websocket_ping_interval: float | None = None
    #: The largest incoming WebSocket message the server assembles on this mount's
    #: ``websocket_paths`` (bytes; a larger one closes the socket with 1009 before the app sees
    #: it). None: 64 MiB. Never more than the server's budget.
    websocket_max_message_bytes: int | None = None
    #: What the transport runs beside the server's port (its own listener, say): the server
    #: enters it once the services have started, before it serves (a failure to enter stops the
    #: server from starting), and exits it at shutdown, after :attr:`aclose` and once the
    #: server's connections are over, before the services stop (its exit given as long as
    #: :attr:`aclose` is; a failure there is logged).
    #: Its entered value may be a mapping ``{name: url}`` of the listeners it bound: the server
    #: logs them in ``server.started`` (field ``listeners``; ``sandbox_core.testing.ServerProcess``
    #: reads them there as ``.listeners``). Names are unique across mounts.
    lifespan: AbstractAsyncContextManager[object] | None = None
    #: The (method, path) pairs on this mount's paths that need no token (a health probe of its
    #: own, say), beside the server's ``sandbox_core.edge.PROBES``: exact paths, an explicit list.
    probes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ClientContext:
    """Given to a transport's client factory."""

    url: str
    settings: Any
    timeout: float
    token: str | None = None  # sent with every request (``Authorization: Bearer``)


class ClientTransport(Protocol):
    """The client side of a transport, as the ``Sandbox`` facade uses it.

    Operations are named by service and operation with camelCase parameters, exactly as the
    registry names them; the transport maps them to its wire (routes, frames, rpc calls).
    """

    async def call(self, service: str, operation: str, params: Mapping[str, object]) -> object:
        """Run a unary operation and return its result as decoded JSON; raise SandboxError on failure."""
        ...

    def stream(self, service: str, operation: str, params: Mapping[str, object]) -> AsyncGenerator[object, None]:
        """Run a streaming operation and yield its events as decoded JSON objects; closing the
        generator (``aclose``) ends the stream on the server too."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class TransportSpec:
    """What a plugin registers for a transport."""

    name: str
    server: Callable[[ServerContext], ServerMount] | None = None
    client: Callable[[ClientContext], ClientTransport] | None = None
    settings: type[msgspec.Struct] | None = None
    description: str = ""
    #: ``sandbox attach``: ``terminal(ctx, session_id)`` runs the session's terminal on this
    #: process's own tty (raw mode, resized with it, restored on every exit) until the user
    #: detaches or the terminal ends, and returns the command's exit status.
    terminal: Callable[[ClientContext, str], Awaitable[int]] | None = None
    #: The settings that are the port of a listener of the transport's own (beside the server's
    #: port): ``sandbox_core.testing.ServerProcess`` sets each to 0 (a free port) unless the test
    #: sets it, as it does ``server.port``, so that servers started side by side never collide.
    listener_ports: tuple[str, ...] = ()
