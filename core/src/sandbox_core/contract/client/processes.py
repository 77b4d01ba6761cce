"""``Sandbox.processes``: background processes and their logs."""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from sandbox_core.contract.client import _command_params, _params, _typed
from sandbox_core.contract.models.processes import (
    AnyLogEvent,
    AnyRunEvent,
    ProcessesKilled,
    ProcessGet,
    ProcessInfo,
    ProcessKilled,
    ProcessList,
    ProcessLogs,
    ProcessResized,
    ProcessSignalled,
    ProcessStartResult,
    ProcessStdinWritten,
)

if TYPE_CHECKING:
    from sandbox_core.contract.client import Sandbox


class ProcessesAPI:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    async def start(
        self,
        command: str | None = None,
        *,
        argv: Sequence[str] | None = None,
        session_id: str | None = None,
        process_id: str | None = None,
        timeout_ms: int | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        stdin: Literal["null", "pipe"] | None = None,
        pty: tuple[int, int] | None = None,
        idempotency_key: str | None = None,
    ) -> ProcessStartResult:
        """Start ``command`` in the background (from the session's state); returns its id and pid.

        Ours: ``argv`` instead of ``command`` runs a program with no shell parsing; ``stdin="pipe"``
        lets :meth:`write_stdin` feed it; ``pty=(cols, rows)`` runs it on a terminal of its own;
        ``idempotency_key``: a retry with the same key starts nothing and gets the same process."""
        params = _command_params(command or "", session_id, timeout_ms, env, cwd, idempotency_key)
        if command is None:
            params.pop("command")
        return await self._sb.call_as(
            ProcessStartResult,
            "processes",
            "start",
            **params,
            **_params(
                processId=process_id,
                argv=list(argv) if argv is not None else None,
                stdin=stdin,
                pty={"cols": pty[0], "rows": pty[1]} if pty is not None else None,
            ),
        )

    def run_stream(
        self,
        command: str | None = None,
        *,
        argv: Sequence[str] | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        stdin: Literal["null", "pipe"] | None = None,
        pty: tuple[int, int] | None = None,
        timeout_ms: int | None = None,
    ) -> AsyncGenerator[AnyRunEvent, None]:
        """Ours: run ``command`` (or ``argv``, no shell) sessionless as a process owned by this
        stream: a ``start`` event with its process id, ``stdout``/``stderr`` events of raw bytes,
        then ``exit``. Closing the stream before the end ends the process tree."""
        return _typed(
            self._sb.stream(
                "processes",
                "run_stream",
                **_params(
                    command=command,
                    argv=list(argv) if argv is not None else None,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    stdin=stdin,
                    pty={"cols": pty[0], "rows": pty[1]} if pty is not None else None,
                    timeoutMs=timeout_ms,
                ),
            ),
            AnyRunEvent,
        )

    async def write_stdin(
        self, process_id: str, data: str | bytes = "", *, eof: bool = False, timeout_ms: int | None = None
    ) -> int:
        """Write ``data`` (text as UTF-8, bytes as they are) to the process's stdin, waiting while it
        does not read (up to ``timeout_ms``); with ``eof``, close it after. Returns the bytes written."""
        if isinstance(data, bytes):
            text, encoding = base64.b64encode(data).decode("ascii"), "base64"
        else:
            text, encoding = data, None
        result = await self._sb.call_as(
            ProcessStdinWritten,
            "processes",
            "write_stdin",
            id=process_id,
            data=text,
            **_params(encoding=encoding, eof=eof or None, timeoutMs=timeout_ms),
        )
        return result.written

    async def close_stdin(self, process_id: str) -> None:
        """Close the process's stdin (EOF; with a terminal, its end-of-file keystroke)."""
        await self._sb.call_as(ProcessStdinWritten, "processes", "close_stdin", id=process_id)

    async def signal(self, process_id: str, signal: str | int) -> int:
        """Send ``signal`` (``"SIGUSR1"`` or a number 1-64) to the process's group; its number."""
        return (await self._sb.call_as(ProcessSignalled, "processes", "signal", id=process_id, signal=signal)).signal

    async def resize(self, process_id: str, cols: int, rows: int) -> None:
        """Resize the process's terminal (started with ``pty``)."""
        await self._sb.call_as(ProcessResized, "processes", "resize", id=process_id, cols=cols, rows=rows)

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
