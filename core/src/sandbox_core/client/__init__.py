"""The client facade: ``Sandbox``, the same API whatever transport carries it.

    async with Sandbox("http://127.0.0.1:3000") as sb:
        result = await sb.exec("echo hi")
        async for event in sb.exec_stream("make test", session_id="build"):
            ...

The transport comes from the argument, else ``[client] transport`` of the config, else
``SANDBOX_TRANSPORT``-overridden default ``http``. Errors raise the typed subclasses of
:class:`~sandbox_core.errors.SandboxError` chosen by the error code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..config import Config, load_config
from ..errors import SandboxError, TransportError
from ..models import AnyExecEvent, ExecResult, SessionCreated
from ..plugins import Hooks, make_plugin_manager
from ..transport import ClientContext, ClientTransport

if TYPE_CHECKING:
    from .files import FilesAPI
    from .git import GitAPI
    from .ports import PortsAPI
    from .processes import ProcessesAPI

_pm_cache: dict[str, Any] = {}


def _transports() -> Mapping[str, Any]:
    if "transports" not in _pm_cache:
        _pm_cache["transports"] = Hooks(make_plugin_manager()).transports()
    return _pm_cache["transports"]  # type: ignore[no-any-return]


def _params(**kwargs: Any) -> dict[str, Any]:
    return {key: value for key, value in kwargs.items() if value is not None}


async def _typed(events: AsyncIterator[dict[str, Any]], typ: Any) -> AsyncIterator[Any]:
    """Each raw event of a stream converted to ``typ``; the stream is closed however we stop."""
    try:
        async for raw in events:
            yield _convert(raw, typ)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def _convert(raw: Any, typ: Any) -> Any:
    try:
        return msgspec.convert(raw, typ)
    except msgspec.ValidationError as exc:
        raise TransportError("RPC_TRANSPORT_ERROR", f"Unexpected answer from the server: {exc}") from None


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
    ) -> None:
        self._config = config
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
        name = self._transport_name or config.client.transport
        specs = _transports()
        spec = specs.get(name)
        if spec is None or spec.client is None:
            raise SandboxError(
                "VALIDATION_FAILED",
                f"unknown client transport {name!r}; installed: {sorted(specs)}",
                {"field": "transport"},
            )
        settings = self._settings
        if settings is None and spec.settings is not None:
            settings = msgspec.convert(config.transports.get(name, {}), spec.settings)
        self._transport_name = name
        self._t = spec.client(
            ClientContext(self._url or config.client.url, settings, self._timeout or config.client.timeout)
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

    async def call(self, service: str, operation: str, **params: Any) -> Any:
        """Call any operation of any service by name, with camelCase parameters."""
        return await self._transport.call(service, operation, params)

    def stream(self, service: str, operation: str, **params: Any) -> AsyncIterator[dict[str, Any]]:
        """Open any streaming operation by name; yields its events as dicts."""
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
    ) -> ExecResult:
        """Run a command in a session (``default`` when none) and return its result."""
        raw = await self._transport.call(
            "commands",
            "execute",
            _params(
                command=command,
                sessionId=session_id,
                timeoutMs=timeout_ms,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            ),
        )
        return _convert(raw, ExecResult)  # type: ignore[no-any-return]

    def exec_stream(
        self,
        command: str,
        *,
        session_id: str | None = None,
        timeout_ms: int | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
    ) -> AsyncIterator[AnyExecEvent]:
        """Run a command and yield its typed events as they happen: start, stdout/stderr, complete."""
        return _typed(
            self._transport.stream(
                "commands",
                "execute_stream",
                _params(
                    command=command,
                    sessionId=session_id,
                    timeoutMs=timeout_ms,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                ),
            ),
            AnyExecEvent,
        )

    @property
    def processes(self) -> ProcessesAPI:
        """Background processes and their logs."""
        from .processes import ProcessesAPI

        return ProcessesAPI(self)

    @property
    def files(self) -> FilesAPI:
        """Read, write, stream and list files."""
        from .files import FilesAPI

        return FilesAPI(self)

    @property
    def ports(self) -> PortsAPI:
        """Wait for a port in the sandbox to be ready."""
        from .ports import PortsAPI

        return PortsAPI(self)

    @property
    def git(self) -> GitAPI:
        """Clone git repositories."""
        from .git import GitAPI

        return GitAPI(self)

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
        raw = await self._transport.call(
            "sessions",
            "create",
            _params(
                id=session_id, env=dict(env) if env is not None else None, cwd=cwd, commandTimeoutMs=command_timeout_ms
            ),
        )
        created = _convert(raw, SessionCreated)
        return SessionHandle(self, created.id)

    async def delete_session(self, session_id: str) -> None:
        await self._transport.call("sessions", "delete", {"sessionId": session_id})

    async def list_sessions(self) -> list[str]:
        raw = await self._transport.call("sessions", "list", {})
        return _convert(raw.get("sessions", raw.get("data")), list[str])  # type: ignore[no-any-return]

    # utils ------------------------------------------------------------------------------------

    async def ping(self) -> str:
        raw = await self._transport.call("utils", "ping", {})
        return str(raw.get("status", raw)) if isinstance(raw, dict) else str(raw)

    async def version(self) -> str:
        raw = await self._transport.call("utils", "version", {})
        return str(raw.get("version", raw)) if isinstance(raw, dict) else str(raw)


class SessionHandle:
    """Commands bound to one session id."""

    def __init__(self, sandbox: Sandbox, session_id: str) -> None:
        self.sandbox = sandbox
        self.id = session_id

    async def exec(self, command: str, **kwargs: Any) -> ExecResult:
        return await self.sandbox.exec(command, session_id=self.id, **kwargs)

    def exec_stream(self, command: str, **kwargs: Any) -> AsyncIterator[AnyExecEvent]:
        return self.sandbox.exec_stream(command, session_id=self.id, **kwargs)

    async def delete(self) -> None:
        await self.sandbox.delete_session(self.id)
