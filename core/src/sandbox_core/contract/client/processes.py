"""``Sandbox.processes``: background processes and their logs."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING

from sandbox_core.contract.client import _command_params, _params, _typed
from sandbox_core.contract.models.processes import (
    AnyLogEvent,
    ProcessesKilled,
    ProcessGet,
    ProcessInfo,
    ProcessKilled,
    ProcessList,
    ProcessLogs,
    ProcessStartResult,
)

if TYPE_CHECKING:
    from sandbox_core.contract.client import Sandbox


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
        idempotency_key: str | None = None,
    ) -> ProcessStartResult:
        """Start ``command`` in the background (from the session's state); returns its id and pid.

        ``idempotency_key``: a retry with the same key starts nothing and gets the same process."""
        return await self._sb.call_as(
            ProcessStartResult,
            "processes",
            "start",
            **_command_params(command, session_id, timeout_ms, env, cwd, idempotency_key),
            **_params(processId=process_id),
        )

    async def list(self, status: str | None = None) -> list[ProcessInfo]:
        return (await self._sb.call_as(ProcessList, "processes", "list", **_params(status=status))).processes

    async def get(self, process_id: str) -> ProcessInfo:
        return (await self._sb.call_as(ProcessGet, "processes", "get", id=process_id)).process

    async def kill(self, process_id: str) -> None:
        """SIGTERM its whole tree, SIGKILL after the server's grace period."""
        await self._sb.call_as(ProcessKilled, "processes", "kill", id=process_id)

    async def kill_all(self) -> int:
        """Kill every running process; returns how many there were."""
        return (await self._sb.call_as(ProcessesKilled, "processes", "kill_all")).cleaned_count

    async def logs(self, process_id: str) -> ProcessLogs:
        return await self._sb.call_as(ProcessLogs, "processes", "logs", id=process_id)

    def stream_logs(self, process_id: str, *, offset: int | None = None) -> AsyncGenerator[AnyLogEvent, None]:
        """process_info, the held output from ``offset`` (a gap event if it was dropped), live output, exit."""
        return _typed(self._sb.stream("processes", "stream_logs", **_params(id=process_id, offset=offset)), AnyLogEvent)
