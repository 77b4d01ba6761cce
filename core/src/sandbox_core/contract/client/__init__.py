"""The client facade: ``Sandbox``, the same API whatever transport carries it.

    async with Sandbox("http://127.0.0.1:3000") as sb:
        result = await sb.exec("echo hi")
        async for event in sb.exec_stream("make test", session_id="build"):
            ...

The transport comes from the argument, else ``SANDBOX_TRANSPORT``, else ``[client] transport``
of the config (default: ``http`` if installed, else the only transport installed); an unknown one
is :class:`~sandbox_core.errors.ValidationFailed` saying where the name came from. The token
(sent as ``Authorization: Bearer``) likewise comes from the argument, else ``SANDBOX_TOKEN``, else
``[client] token``. Errors raise the typed subclasses of :class:`~sandbox_core.errors.SandboxError`
chosen by the error code.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import urlsplit

import msgspec

from sandbox_core.config import Config, ConfigError, load_config, transport_settings
from sandbox_core.contract.models import (
    AnyExecEvent,
    ExecResult,
    MetadataResult,
    Pong,
    SessionCreated,
    SessionDeleted,
    SessionList,
    VersionInfo,
)
from sandbox_core.errors import ErrorCode, TransportError, ValidationFailed
from sandbox_core.plugins import Hooks, make_plugin_manager
from sandbox_core.transport import ClientContext, ClientTransport, TransportSpec

if TYPE_CHECKING:
    from sandbox_core.contract.client.files import FilesAPI
    from sandbox_core.contract.client.git import GitAPI
    from sandbox_core.contract.client.ports import PortsAPI
    from sandbox_core.contract.client.processes import ProcessesAPI

_specs: dict[str, TransportSpec] = {}

T = TypeVar("T")


def _transports() -> Mapping[str, TransportSpec]:
    """The installed transports, found once per process."""
    if not _specs:
        _specs.update(Hooks(make_plugin_manager()).transports())
    return _specs


def _params(**kwargs: object) -> dict[str, object]:
    return {key: value for key, value in kwargs.items() if value is not None}


def _command_params(
    command: str,
    session_id: str | None,
    timeout_ms: int | None,
    env: Mapping[str, str | None] | None,
    cwd: str | None,
    idempotency_key: str | None = None,
) -> dict[str, object]:
    """The wire parameters every way of running a command shares (None values left out)."""
    return _params(
        command=command,
        sessionId=session_id,
        timeoutMs=timeout_ms,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        idempotencyKey=idempotency_key,
    )


async def _typed(events: AsyncIterator[object], typ: object) -> AsyncGenerator[Any, None]:
    """Each raw event of a stream converted to ``typ`` (a union of event models; the caller's
    return annotation names it); the stream is closed however we stop."""
    try:
        async for raw in events:
            yield _convert(raw, typ)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


@overload
def _convert(raw: object, typ: type[T]) -> T: ...
@overload
def _convert(raw: object, typ: object) -> Any: ...
def _convert(raw: object, typ: object) -> Any:
    try:
        return msgspec.convert(raw, typ)
    except msgspec.ValidationError as exc:
        raise TransportError(ErrorCode.RPC_TRANSPORT_ERROR, f"Unexpected answer from the server: {exc}") from None


def _default_transport(specs: Mapping[str, TransportSpec]) -> str:
    """The client transport when none is named: http if it is installed, else the only installed
    transport with a client side (else http, which then fails naming what is installed)."""
    with_client = sorted(name for name, spec in specs.items() if spec.client is not None)
    if "http" in with_client or len(with_client) != 1:
        return "http"
    return with_client[0]


class Sandbox:
    """A connection to one sandbox server."""

    def __init__(
        self,
        url: str | None = None,
        *,
        transport: str | None = None,
        config: Config | None = None,
        timeout: float | None = None,
        settings: Any = None,
        token: str | None = None,
    ) -> None:
        self._config = config
        self._token = token
        self._url = url
        self._transport_name = transport
        self._timeout = timeout
        self._settings = settings
        self._t: ClientTransport | None = None

    @property
    def transport(self) -> str:
        return self._transport_name or "http"

    async def __aenter__(self) -> Sandbox:
        config = self._config or load_config()
        specs = _transports()
        name = self._transport_name or config.client.transport or _default_transport(specs)
        url = self._url or config.client.url
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValidationFailed(
                ErrorCode.VALIDATION_FAILED,
                f"the server URL {url!r} must start with http:// or https:// (for example http://127.0.0.1:3000)",
                {"field": "url", "value": url},
            )
        spec = specs.get(name)
        if spec is None or spec.client is None:
            # where the name came from: the argument, SANDBOX_TRANSPORT, or [client] transport
            origin = None if self._transport_name else config.origins.get("client.transport")
            details: dict[str, Any] = {"field": "transport", "value": name}
            source = ""
            if origin is not None:
                details["source"] = origin
                source = f" (from {origin})"
            elif not self._transport_name:
                details["source"] = "client.transport"
                source = f" (from client.transport in {config.source or 'the default config'})"
            with_client = sorted(n for n, s in specs.items() if s.client is not None)
            problem = "unknown client transport" if spec is None else "transport without a client side"
            raise ValidationFailed(
                ErrorCode.VALIDATION_FAILED,
                f"{problem} {name!r}{source}; installed: {with_client}",
                details,
            )
        settings = self._settings
        if settings is None:
            try:
                settings = transport_settings(config, spec)
            except ConfigError as exc:
                raise ValidationFailed(ErrorCode.VALIDATION_FAILED, str(exc), {"field": "settings"}) from None
        self._transport_name = name
        self._t = spec.client(
            ClientContext(
                url,
                settings,
                self._timeout or config.client.timeout,
                token=self._token or config.client.token,
            )
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._t is not None:
            t, self._t = self._t, None
            await t.aclose()

    @property
    def _transport(self) -> ClientTransport:
        if self._t is None:
            raise RuntimeError("Sandbox is not open: use `async with Sandbox(...) as sb`")
        return self._t

    # generic --------------------------------------------------------------------------------

    async def call(self, service: str, operation: str, **params: object) -> object:
        """Call any operation of any service by name, with camelCase parameters; returns its
        result as decoded JSON (see :meth:`call_as` for a typed result)."""
        return await self._transport.call(service, operation, params)

    async def call_as(self, result: type[T], service: str, operation: str, **params: object) -> T:
        """Call an operation and convert its result to ``result`` (a model or any msgspec type)."""
        return _convert(await self._transport.call(service, operation, params), result)

    def stream(self, service: str, operation: str, **params: object) -> AsyncGenerator[object, None]:
        """Open any streaming operation by name; yields its events as decoded JSON."""
        return self._transport.stream(service, operation, params)

    # commands ---------------------------------------------------------------------------------

    async def exec(
        self,
        command: str,
        *,
        session_id: str | None = None,
        timeout_ms: int | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        idempotency_key: str | None = None,
    ) -> ExecResult:
        """Run a command in a session (``default`` when none) and return its result.

        ``idempotency_key`` (1-128 characters): a retry with the same key runs nothing and gets
        the first request's result (or error), waiting for it while it still runs."""
        return await self.call_as(
            ExecResult,
            "commands",
            "execute",
            **_command_params(command, session_id, timeout_ms, env, cwd, idempotency_key),
        )

    def exec_stream(
        self,
        command: str,
        *,
        session_id: str | None = None,
        timeout_ms: int | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncGenerator[AnyExecEvent, None]:
        """Run a command and yield its typed events as they happen: start, stdout/stderr, complete.

        With ``idempotency_key`` the command outlives the stream, and a retry with the same key
        runs nothing: it replays the first stream from the start of the command's output."""
        return _typed(
            self._transport.stream(
                "commands",
                "execute_stream",
                _command_params(command, session_id, timeout_ms, env, cwd, idempotency_key),
            ),
            AnyExecEvent,
        )

    @property
    def processes(self) -> ProcessesAPI:
        """Background processes and their logs."""
        from sandbox_core.contract.client.processes import ProcessesAPI

        return ProcessesAPI(self)

    @property
    def files(self) -> FilesAPI:
        """Read, write, stream and list files."""
        from sandbox_core.contract.client.files import FilesAPI

        return FilesAPI(self)

    @property
    def ports(self) -> PortsAPI:
        """Wait for a port in the sandbox to be ready."""
        from sandbox_core.contract.client.ports import PortsAPI

        return PortsAPI(self)

    @property
    def git(self) -> GitAPI:
        """Clone git repositories."""
        from sandbox_core.contract.client.git import GitAPI

        return GitAPI(self)

    if TYPE_CHECKING:
        from sandbox_core.contract.client.interpreter import InterpreterAPI

    @property
    def interpreter(self) -> InterpreterAPI:
        """Code contexts (Python kernels, JavaScript, TypeScript) and their streamed runs."""
        from sandbox_core.contract.client.interpreter import InterpreterAPI

        return InterpreterAPI(self)

    if TYPE_CHECKING:
        from sandbox_core.contract.client.watch import WatchAPI

    @property
    def watch(self) -> WatchAPI:
        """Watch directories for changes; check whether anything changed since a version."""
        from sandbox_core.contract.client.watch import WatchAPI

        return WatchAPI(self)

    if TYPE_CHECKING:
        from sandbox_core.contract.client.backup import BackupAPI

    @property
    def backup(self) -> BackupAPI:
        """Archive a directory to a squashfs file in the sandbox, and restore it."""
        from sandbox_core.contract.client.backup import BackupAPI

        return BackupAPI(self)

    # sessions ---------------------------------------------------------------------------------

    def session(self, session_id: str) -> SessionHandle:
        """A handle that runs every command in ``session_id``."""
        return SessionHandle(self, session_id)

    async def create_session(
        self,
        session_id: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        command_timeout_ms: int | None = None,
    ) -> SessionHandle:
        created = await self.call_as(
            SessionCreated,
            "sessions",
            "create",
            **_params(
                id=session_id, env=dict(env) if env is not None else None, cwd=cwd, commandTimeoutMs=command_timeout_ms
            ),
        )
        return SessionHandle(self, created.id)

    async def delete_session(self, session_id: str) -> None:
        await self.call_as(SessionDeleted, "sessions", "delete", sessionId=session_id)

    async def list_sessions(self) -> list[str]:
        return (await self.call_as(SessionList, "sessions", "list")).sessions

    # utils ------------------------------------------------------------------------------------

    async def ping(self) -> str:
        """The server's health status (``healthy`` while it answers)."""
        return (await self.call_as(Pong, "utils", "ping")).status

    async def version(self) -> str:
        return (await self.call_as(VersionInfo, "utils", "version")).version

    async def metadata(self, prefix: str | None = None) -> dict[str, str]:
        """Ours: the sandbox's environment variables named ``prefix``... (default ``SANDBOX_``),
        without secret-looking names and without the server's own."""
        return (await self.call_as(MetadataResult, "utils", "metadata", **_params(prefix=prefix))).env

    async def runtime_id(self) -> str:
        """This run of the server: it changes when the server restarts, and with it every process
        id the server knew (``call_as(Pong, "utils", "ping")`` has it as ``runtime_id`` too)."""
        runtime = (await self.call_as(Pong, "utils", "ping")).runtime_id
        if runtime is None:
            raise TransportError(ErrorCode.RPC_TRANSPORT_ERROR, "The server did not say its runtimeId")
        return runtime


class SessionHandle:
    """Commands bound to one session id."""

    def __init__(self, sandbox: Sandbox, session_id: str) -> None:
        self.sandbox = sandbox
        self.id = session_id

    async def exec(self, command: str, **kwargs: Any) -> ExecResult:
        return await self.sandbox.exec(command, session_id=self.id, **kwargs)

    def exec_stream(self, command: str, **kwargs: Any) -> AsyncGenerator[AnyExecEvent, None]:
        return self.sandbox.exec_stream(command, session_id=self.id, **kwargs)

    async def delete(self) -> None:
        await self.sandbox.delete_session(self.id)
