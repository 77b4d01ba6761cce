"""The server runner: one hypercorn server with every enabled transport on one port."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog
from hypercorn.asyncio import serve as hypercorn_serve

from . import hypercorn_fixes, memory
from .config import Config, ConfigError, describe_setting, enabled_transports, service_settings, transport_settings
from .edge import ANONYMOUS, CREDENTIAL_HEADERS, PROBES, EdgePolicy, bind_refusal, load_token
from .errors import SandboxError, not_found
from .intake import ByteBudget
from .metrics import Metrics
from .plugins import Hooks, make_plugin_manager
from .registry import ServiceRegistry
from .router import announces_body
from .transport import ServerContext, ServerMount

log = structlog.get_logger("sandbox.server")


def _json_response(status: int, body: bytes, headers: list[tuple[bytes, bytes]] = []) -> list[dict[str, Any]]:  # noqa: B006
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"access-control-allow-origin", b"*"), *headers],
        },
        {"type": "http.response.body", "body": body},
    ]


async def answer_lifespan(receive: Any, send: Any) -> None:
    """Acknowledge an ASGI lifespan's startup and shutdown (nothing to do at either)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _closing(scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """``Connection: close`` for an answer given without reading the request's body."""
    return [(b"connection", b"close")] if announces_body(scope.get("headers", ())) else []


class EdgeApp:
    """The ASGI app hypercorn runs: checks each request against the edge policy (Host, Origin,
    token: :mod:`.edge`), then hands it to the transport that serves its path. A request that
    passes has its ``Authorization`` and ``X-Forwarded-Authorization`` headers removed when a
    token is configured: transports never see the credential (and never read it as a session
    id). The requests that need no token are :attr:`probes`: the server's and the mounts'."""

    def __init__(self, mounts: dict[str, ServerMount], policy: EdgePolicy | None = None) -> None:
        self.policy = policy or EdgePolicy()
        self.exact: dict[tuple[str, str], Callable[..., Any]] = {}
        self.prefixes: list[tuple[str, Callable[..., Any]]] = []
        self.catch_all: Callable[..., Any] | None = None
        self.transports = sorted(mounts)
        #: the (method, path) pairs that need no token: :data:`~.edge.PROBES` and each mount's own
        self.probes: frozenset[tuple[str, str]] = PROBES.union(*(m.probes for m in mounts.values()))
        for name, mount in mounts.items():
            for method, path in mount.probes:
                prefixes = tuple(p for p in mount.http_paths if p.endswith("/"))
                if not (mount.catch_all or path in mount.http_paths or path.startswith(prefixes)):
                    raise ValueError(f"transport {name!r}: probe {method} {path} is not on its own http paths")
        for mount in mounts.values():
            for path in mount.http_paths:
                if path.endswith("/"):
                    self.prefixes.append((path, mount.app))
                else:
                    self.exact[("http", path)] = mount.app
            for path in mount.websocket_paths:
                self.exact[("websocket", path)] = mount.app
            if mount.catch_all:
                self.catch_all = mount.app
        self.prefixes.sort(key=lambda item: -len(item[0]))

    def route(self, kind: str, path: str) -> Callable[..., Any] | None:
        app = self.exact.get((kind, path))
        if app is not None:
            return app
        if kind == "http":
            for prefix, papp in self.prefixes:
                if path.startswith(prefix):
                    return papp
            return self.catch_all
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await answer_lifespan(receive, send)
            return
        headers = scope.get("headers", ())
        probe = kind == "http" and (scope.get("method"), scope.get("path")) in self.probes
        refused = self.policy.check(headers, token_exempt=probe)
        if refused is not None:
            await self.refuse(scope, refused, send)
            return
        if probe and not self.policy.authorized_headers(headers):
            scope[ANONYMOUS] = True  # a probe without the token: it learns up or down, nothing more
        if self.policy.token is not None:
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() not in CREDENTIAL_HEADERS]
        app = self.route(kind, scope.get("path", ""))
        if app is not None:
            await app(scope, receive, send)
            return
        path = scope.get("path", "")
        if kind == "websocket":
            err = not_found(
                f"No WebSocket endpoint at {path}: this server serves the transports {', '.join(self.transports)}",
                path=path,
                transports=self.transports,
            )
            await self.refuse(scope, err, send, log_as="request.not_found")
            return
        err = not_found(path=path, method=scope.get("method", ""), transports=self.transports)
        for message in _json_response(404, msgspec.json.encode(err.to_body()), _closing(scope)):
            await send(message)

    @staticmethod
    async def refuse(scope: dict[str, Any], err: SandboxError, send: Any, log_as: str = "request.refused") -> None:
        """Answer a request the edge policy refused: the contract's error body over http, and
        for a WebSocket upgrade the same answer (ASGI's websocket.http.response extension, which
        hypercorn has; without it a bodyless 403)."""
        kind = scope["type"]
        log.warning(log_as, code=err.code, **{k: v for k, v in err.details.items() if k != "header"})
        extra = [(b"www-authenticate", b'Bearer realm="sandbox"')] if err.status == 401 else []
        if kind == "http":
            extra += _closing(scope)
        messages = _json_response(err.status, msgspec.json.encode(err.to_body()), extra)
        if kind == "websocket":
            if "websocket.http.response" not in scope.get("extensions", {}):
                await send({"type": "websocket.close", "code": 1008, "reason": err.code})
                return
            for message in messages:
                message["type"] = "websocket." + message["type"]
        for message in messages:
            await send(message)


def _quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: a connection task cancelled at shutdown is not an error
    (asyncio's stream callback re-raises its CancelledError into the loop's handler, which would
    log a traceback per open connection); everything else is logged as usual."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


def hide_from_proc_environ(names: Collection[str]) -> list[str]:
    """Blank the values of ``names`` in this process's initial environment block, the memory
    ``/proc/<pid>/environ`` (and ``ps e``) shows, so that the token is not printed by user code
    that lists every process's environment. ``os.environ`` (a copy made at start-up) keeps
    them. This is against accidental disclosure only: code running as the same user can still
    read the server's memory. Returns the names blanked; nothing where ``/proc`` is missing."""
    try:
        stat = Path("/proc/self/stat").read_bytes()
        fields = stat[stat.rindex(b")") + 2 :].split()  # from field 3 (state) on
        env_start, env_end = int(fields[47]), int(fields[48])  # fields 50 and 51
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(env_start)
            block = mem.read(env_end - env_start)
            blanked = []
            offset = 0
            for entry in block.split(b"\0"):
                name, sep, value = entry.partition(b"=")
                if sep and value and name.decode(errors="replace") in names:
                    mem.seek(env_start + offset + len(name) + 1)
                    mem.write(b"\0" * len(value))
                    blanked.append(name.decode())
                offset += len(entry) + 1
            return blanked
    except (OSError, ValueError, IndexError):
        return []


@dataclass
class Runtime:
    """Everything a running server holds; built by :func:`build_runtime`."""

    config: Config
    registry: ServiceRegistry
    app: EdgeApp
    transports: list[str]
    mounts: list[ServerMount]
    #: the same mounts by transport name
    named_mounts: dict[str, ServerMount]
    #: the server's one budget of incoming bytes, shared by every transport
    budget: ByteBudget


def edge_policy(config: Config, env: Mapping[str, str] | None = None) -> EdgePolicy:
    """The server's edge policy from ``[server]`` (and ``SANDBOX_TOKEN``); a server reachable
    from other machines with no token is a configuration error unless it says
    ``allow_unauthenticated = true``."""
    server = config.server
    try:
        token = load_token(server.token, server.token_file, os.environ if env is None else env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    refusal = bind_refusal(
        server.host, token=token is not None, allow_unauthenticated=server.allow_unauthenticated, setting="server.host"
    )
    if refusal is not None:
        raise ConfigError(refusal)
    return EdgePolicy.build(
        bind_host=server.host,
        token=token,
        allowed_hosts=server.allowed_hosts,
        allowed_origins=server.allowed_origins,
        allow_unauthenticated=server.allow_unauthenticated,
    )


async def build_runtime(config: Config, pm: Any = None) -> Runtime:
    """Load plugins, validate every table of the config, start the services, build the app."""
    policy = edge_policy(config)
    pm = pm or make_plugin_manager()
    hooks = Hooks(pm)
    service_specs = hooks.services()
    transport_specs = hooks.transports()
    if not service_specs:
        raise ConfigError(
            "no service is installed: install sandbox-services (pip install sandbox-services), or a "
            'transport with its server extra (pip install "sandbox-transport-http[server]")'
        )
    if not any(spec.server is not None for spec in transport_specs.values()):
        raise ConfigError(
            "no transport is installed: install one, for example sandbox-transport-http "
            "(pip install sandbox-transport-http)"
        )
    names = enabled_transports(config, transport_specs)
    settings = {name: transport_settings(config, transport_specs[name]) for name in names}
    for name in config.transports:
        if name not in transport_specs:
            raise ConfigError(f"[transports.{name}]: unknown transport {name!r}; installed: {sorted(transport_specs)}")
    registry = ServiceRegistry(
        service_specs,
        settings=service_settings(config, service_specs),
        workspace=config.workspace(),
        hooks=hooks,
        metrics=Metrics(enabled=config.server.metrics),
    )
    await registry.start()
    budget = ByteBudget(config.server.max_body_bytes_total, config.server.body_wait_timeout)
    mounts: dict[str, ServerMount] = {}
    try:
        for name in names:
            spec = transport_specs[name]
            if spec.server is None:
                raise ConfigError(f"server.transports: transport {name!r} has no server side")
            ctx = ServerContext(
                registry,
                settings[name],
                config,
                budget=budget,
                body_timeout=config.server.body_timeout,
                metrics=registry.metrics,
                policy=policy,
            )
            mounts[name] = spec.server(ctx)
    except BaseException:
        await registry.aclose()
        raise
    return Runtime(config, registry, EdgeApp(mounts, policy), names, list(mounts.values()), mounts, budget)


def websocket_intake(runtime: Runtime) -> hypercorn_fixes.WebsocketIntake:
    """The server's limits on incoming WebSocket messages: each mount's own limit on its own
    paths, the shared budget, and ``body_timeout`` for a message whose bytes stop coming."""
    limits = {
        path: mount.websocket_max_message_bytes or hypercorn_fixes.DEFAULT_MESSAGE_BYTES
        for mount in runtime.mounts
        for path in mount.websocket_paths
    }
    return hypercorn_fixes.WebsocketIntake(
        budget=runtime.budget, stall_timeout=runtime.config.server.body_timeout, limits=limits
    )


def listeners_of(value: object, where: str) -> dict[str, str]:
    """The listeners a lifespan reports with its entered ``value``: a mapping ``{name: url}``
    (both strings); any other value reports none."""
    if not isinstance(value, Mapping):
        return {}
    bad = [(k, v) for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str) or not k]
    if bad:
        raise TypeError(f"{where}: the listeners a lifespan reports are {{name: url}} strings, not {bad[0]!r}")
    return dict(value)


async def enter_lifespans(
    mounts: Mapping[str, ServerMount],
) -> tuple[list[AbstractAsyncContextManager[object]], dict[str, str]]:
    """Enter every mount's :attr:`~ServerMount.lifespan`, in order, and gather the listeners
    they report (their entered values, :func:`listeners_of`); when one fails, those entered
    are exited (in reverse) and its error raised."""
    entered: list[AbstractAsyncContextManager[object]] = []
    listeners: dict[str, str] = {}
    try:
        for name, mount in mounts.items():
            if mount.lifespan is not None:
                value = await mount.lifespan.__aenter__()
                entered.append(mount.lifespan)
                for listener, url in listeners_of(value, f"transport {name!r}").items():
                    if listener in listeners:
                        raise ValueError(f"transport {name!r}: a listener named {listener!r} is reported twice")
                    listeners[listener] = url
    except BaseException:
        await exit_lifespans(entered, None)
        raise
    return entered, listeners


async def exit_lifespans(entered: list[AbstractAsyncContextManager[object]], each_s: float | None) -> None:
    """Exit what :func:`enter_lifespans` entered, in reverse, each within ``each_s`` seconds;
    one that fails (or takes longer) is logged and stops no other's exit."""
    for lifespan in reversed(entered):
        try:
            async with asyncio.timeout(each_s):
                await lifespan.__aexit__(None, None, None)
        except Exception as exc:
            log.warning("transport.lifespan_exit_failed", lifespan=repr(lifespan), error=repr(exc))


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://{host if ':' not in host else '[' + host + ']'}:{port}"


def hypercorn_config(
    config: Config, sock: socket.socket, intake: hypercorn_fixes.WebsocketIntake, ping_interval: float | None
) -> Any:
    """The hardened hypercorn config of one listener of the server (its port, or a transport's
    own, :func:`serve_listener`), serving on ``sock`` (hypercorn then owns it): the connection
    fixes with ``[server]``'s settings, WebSocket messages bounded by ``intake``, keep-alive and
    shutdown times of ``[server]``."""
    # the fixes' settings are this server's own (two servers in one process keep theirs)
    policy = hypercorn_fixes.ConnectionPolicy(http2=config.server.http2, header_timeout=config.server.header_timeout)
    hconfig = hypercorn_fixes.make_config(intake, policy)
    hconfig.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) the listening socket
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")  # through the root handler, warnings and up
    # on shutdown, open connections get the shutdown timeout less what ending the services'
    # processes may take (at most a second of it), so the process is gone within the timeout
    timeout = config.server.shutdown_timeout
    hconfig.graceful_timeout = timeout - min(1.0, timeout / 2)
    # an idle connection (and one whose request head has not fully arrived) is closed after this
    hconfig.keep_alive_timeout = config.server.keep_alive_timeout
    hypercorn_fixes.apply()
    hconfig.keep_alive_max_requests = 10_000_000  # hypercorn's default (1000) recycles busy clients' connections
    hconfig.include_server_header = False
    # a path no mount names (nothing is accepted there); each mount's paths have its own limit
    budget = intake.budget.total if intake.budget is not None else hypercorn_fixes.DEFAULT_MESSAGE_BYTES
    hconfig.websocket_max_message_size = min(hypercorn_fixes.DEFAULT_MESSAGE_BYTES, budget)
    hconfig.websocket_ping_interval = ping_interval
    return hconfig


class OwnListener:
    """A listener :func:`serve_listener` runs: its ``url``, and :meth:`aclose` to stop it."""

    def __init__(self, url: str, task: asyncio.Task[None], stop: asyncio.Event, grace: float) -> None:
        self.url = url
        self._task = task
        self._stop = stop
        self._grace = grace

    async def aclose(self) -> None:
        """Stop taking connections and end the open ones (each given the server's shutdown
        grace); idempotent. Call it from the mount's ``aclose`` to drain with the server's port."""
        self._stop.set()
        done, _ = await asyncio.wait([self._task], timeout=max(self._grace, 0.1))
        if not done:  # hypercorn bounds its own close by the grace: this is a last resort
            log.warning("transport.listener_stop_timeout", url=self.url)
            self._task.cancel()
            await asyncio.wait([self._task], timeout=1.0)
        elif not self._task.cancelled() and self._task.exception() is not None:
            log.warning("transport.listener_failed", url=self.url, error=repr(self._task.exception()))


@contextlib.asynccontextmanager
async def serve_listener(
    ctx: ServerContext,
    app: Callable[..., Any],
    *,
    host: str,
    port: int,
    setting: str,
    probes: tuple[tuple[str, str], ...] = (),
    websocket_paths: tuple[str, ...] = (),
    websocket_max_message_bytes: int | None = None,
) -> AsyncIterator[OwnListener]:
    """Serve the ASGI ``app`` on a listener of its own (``host``:``port``, the transport's
    ``setting`` names it in errors) with the protections of the server's port: the bind rule
    of ``server.host`` (:meth:`EdgePolicy.check_bind`), the edge (Host, Origin, token, both
    credential headers stripped; ``probes`` need no token) for that address, the hypercorn
    fixes and ``[server]`` times (:func:`hypercorn_config`), WebSocket messages on
    ``websocket_paths`` bounded and counted against the server's budget. The app receives every
    http request the edge lets through; it counts the request bodies it holds against
    ``ctx.budget`` itself, as every transport does. For use in a mount's ``lifespan``: yields
    the running :class:`OwnListener` (report ``listener.url``), stopped on exit."""
    ctx.policy.check_bind(host, setting)
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot listen on {host}:{port}: {exc.strerror}") from None
    config = ctx.config
    limit = websocket_max_message_bytes or hypercorn_fixes.DEFAULT_MESSAGE_BYTES
    intake = hypercorn_fixes.WebsocketIntake(
        budget=ctx.budget, stall_timeout=ctx.body_timeout, limits={p: limit for p in websocket_paths}
    )
    url = socket_url(sock)
    mount = ServerMount(app=app, catch_all=True, websocket_paths=websocket_paths, probes=probes)
    edge = EdgeApp({setting: mount}, ctx.policy.for_bind(host))
    hconfig = hypercorn_config(config, sock, intake, None)
    stop = asyncio.Event()
    task = asyncio.create_task(hypercorn_serve(edge, hconfig, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    listener = OwnListener(url, task, stop, hconfig.graceful_timeout)
    try:
        yield listener
    finally:
        await listener.aclose()


async def serve(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    on_started: Callable[[str], None] | None = None,
    pm: Any = None,
) -> None:
    """Serve until ``shutdown_trigger`` completes (default: SIGTERM or SIGINT), then stop cleanly."""
    memory.tune_malloc()  # before any worker thread allocates
    runtime = await build_runtime(config, pm)
    try:
        sock = bind_socket(config.server.host, config.server.port)
    except OSError as exc:
        await runtime.registry.aclose()
        hint = " (choose another with --port, or 0 for a free one)" if exc.errno == errno.EADDRINUSE else ""
        where = describe_setting(config, "server.port")
        raise ConfigError(
            f"{where}: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}{hint}"
        ) from None
    try:
        lifespans, listeners = await enter_lifespans(runtime.named_mounts)
    except BaseException:
        sock.close()
        await runtime.registry.aclose()
        raise
    url = socket_url(sock)
    pings = [m.websocket_ping_interval for m in runtime.mounts if m.websocket_ping_interval]
    hconfig = hypercorn_config(config, sock, websocket_intake(runtime), min(pings) if pings else None)
    # the services stop at once after the connections, each giving its processes half the
    # reserve (hypercorn_config) from SIGTERM to SIGKILL, so that they are all gone (and the
    # process with them) within the timeout
    runtime.registry.stop_grace = (config.server.shutdown_timeout - hconfig.graceful_timeout) / 2

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_cancellation)
    if shutdown_trigger is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        shutdown_trigger = stop.wait
    log.info(
        "server.started",
        url=url,
        listeners=listeners,
        transports=runtime.transports,
        services=sorted(runtime.registry.specs),
        workspace=runtime.registry.workspace,
        token=runtime.app.policy.token is not None,
        http2=config.server.http2,
        config=config.source,
    )
    if on_started is not None:
        on_started(url)
    trigger = shutdown_trigger

    async def shutting_down() -> None:
        """The trigger fired: transports close their connections (bounded), then hypercorn
        waits for what is left."""
        await trigger()
        runtime.registry.draining = True  # readiness answers 503 from now on
        log.info("server.shutting_down", drain_delay=config.server.drain_delay)
        if config.server.drain_delay:  # still serving, not ready: a load balancer stops sending
            await asyncio.sleep(config.server.drain_delay)
        for mount in runtime.mounts:
            if mount.aclose is not None:
                try:
                    await asyncio.wait_for(mount.aclose(), max(hconfig.graceful_timeout, 0.1))
                except Exception as exc:  # one transport's failure must not stop the others' close
                    log.warning("transport.close_failed", error=repr(exc))

    try:
        await hypercorn_serve(runtime.app, hconfig, shutdown_trigger=shutting_down)  # type: ignore[arg-type]
    finally:
        log.info("server.stopping")
        await exit_lifespans(lifespans, max(hconfig.graceful_timeout, 0.1))
        await runtime.registry.aclose()
        log.info("server.stopped")
