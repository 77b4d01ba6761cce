"""``Sandbox.processes``: background processes and their logs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from ..models.processes import AnyLogEvent, ProcessInfo, ProcessLogs, ProcessStartResult
from . import _convert, _params, _typed

if TYPE_CHECKING:
    from . import Sandbox


class ProcessesAPI:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    async def start(
        self,
        command: str,
        *,
        session_id: str | None = None,
        process_id: str | None = None,
        timeout_ms: int | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
    ) -> ProcessStartResult:
        """Start ``command`` in the background (from the session's state); returns its id and pid."""
        raw = await self._sb.call(
            "processes",
            "start",
            **_params(
                command=command,
                sessionId=session_id,
                processId=process_id,
                timeoutMs=timeout_ms,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            ),
        )
        return _convert(raw, ProcessStartResult)  # type: ignore[no-any-return]

    async def list(self, status: str | None = None) -> list[ProcessInfo]:
        raw = await self._sb.call("processes", "list", **_params(status=status))
        return _convert(raw["processes"], list[ProcessInfo])  # type: ignore[no-any-return]

    async def get(self, process_id: str) -> ProcessInfo:
        raw = await self._sb.call("processes", "get", id=process_id)
        return _convert(raw["process"], ProcessInfo)  # type: ignore[no-any-return]

    async def kill(self, process_id: str) -> None:
        """SIGTERM its whole tree, SIGKILL after the server's grace period."""
        await self._sb.call("processes", "kill", id=process_id)

    async def kill_all(self) -> int:
        raw = await self._sb.call("processes", "kill_all")
        return int(raw["cleanedCount"])

    async def logs(self, process_id: str) -> ProcessLogs:
        raw = await self._sb.call("processes", "logs", id=process_id)
        return _convert(raw, ProcessLogs)  # type: ignore[no-any-return]

    def stream_logs(self, process_id: str, *, offset: int | None = None) -> AsyncIterator[AnyLogEvent]:
        """process_info, the held output from ``offset`` (a gap event if it was dropped), live output, exit."""
        return _typed(self._sb.stream("processes", "stream_logs", **_params(id=process_id, offset=offset)), AnyLogEvent)
