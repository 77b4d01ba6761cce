"""Commands: run a command in a session, whole (``execute``) or as a stream of events."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

from sandbox_core.clock import now_iso
from sandbox_core.contract.models import (
    AnyExecEvent,
    CompleteEvent,
    ExecResult,
    GapEvent,
    StartEvent,
    StderrEvent,
    StdoutEvent,
)
from sandbox_core.contract.models.processes import ProcessStartResult
from sandbox_core.errors import ErrorCode, SandboxError
from sandbox_core.hookspecs import hookimpl
from sandbox_core.memory import trim_after
from sandbox_core.metrics import COMMANDS_RUNNING
from sandbox_core.registry import ServiceContext, ServiceSpec, operation

from .idempotency import IdempotencyKey
from .output import Gap, decode_utf8
from .params import Env, PositiveMs
from .processes import ProcessesService, ProcessRecord
from .sessions import DISABLE_SESSION, SessionsService, check_env, check_session_id


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _strip_one_newline(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def _exec_size(result: ExecResult) -> int:
    """What holding a result for its ``idempotencyKey`` costs, in bytes (about)."""
    return len(result.stdout) + len(result.stderr) + len(result.command)


class CommandsService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.registry = ctx.registry
        self.metrics = ctx.registry.metrics
        self.running = 0  # foreground commands running (sandbox_commands_running)
        self.metrics.source(COMMANDS_RUNNING, lambda: self.running)

    @property
    def sessions(self) -> SessionsService:
        return self.registry.get("sessions", SessionsService)

    @property
    def processes(self) -> ProcessesService:
        return self.registry.get("processes", ProcessesService)

    @operation
    async def execute(
        self,
        command: str,
        session_id: str | None = None,
        timeout_ms: PositiveMs | None = None,
        env: Env | None = None,
        cwd: str | None = None,
        origin: Literal["user", "internal"] = "user",
        background: bool = False,
        idempotency_key: IdempotencyKey | None = None,
    ) -> ExecResult | ProcessStartResult:
        """Run ``command`` in the session's shell and return its exit code and output
        (with ``background``: start it as a process and return its id, as ``processes.start``).

        ``origin`` is log-only, as upstream: logged for a background command (``process.started``),
        accepted and ignored for a foreground one.

        ``idempotency_key`` (ours): a second request with the same key within the processes
        service's ``idempotency_window_s`` runs nothing and answers the first one's result (or
        error), waiting for it while the first still runs; with other parameters it is 409
        ``IDEMPOTENCY_KEY_REUSED``."""
        if background:
            return await self.processes.start(
                command,
                session_id=session_id,
                timeout_ms=timeout_ms,
                env=env,
                cwd=cwd,
                origin=origin,
                idempotency_key=idempotency_key,
            )
        params: dict[str, object] = {"command": command, "sessionId": session_id, "timeoutMs": timeout_ms}
        params.update(env=env, cwd=cwd)
        return await self.processes.idempotency.once(
            idempotency_key,
            "commands.execute",
            params,
            lambda: self._execute(command, session_id, timeout_ms, env, cwd),
            _exec_size,
        )

    async def _execute(
        self, command: str, session_id: str | None, timeout_ms: int | None, env: Env | None, cwd: str | None
    ) -> ExecResult:
        sid = check_session_id(session_id)
        check_env(env)
        started = time.perf_counter()
        self.running += 1
        try:
            if sid == DISABLE_SESSION:
                code, out, err = await self.sessions.run_sessionless(command, env=env, cwd=cwd, timeout_ms=timeout_ms)
                stdout, stderr = _text(out), _text(err)
            else:
                code, out, err = await self.sessions.run(sid, command, env=env, cwd=cwd, timeout_ms=timeout_ms)
                stdout, stderr = _strip_one_newline(_text(out)), _strip_one_newline(_text(err))
        finally:
            self.running -= 1
            self.metrics.observe_exec(time.perf_counter() - started)
        trim_after(len(out) + len(err))
        return ExecResult(
            success=code == 0,
            exit_code=code,
            stdout=stdout,
            stderr=stderr,
            command=command,
            duration=round((time.perf_counter() - started) * 1000, 3),
            timestamp=now_iso(),
            session_id=session_id,
        )

    @operation
    async def execute_stream(
        self,
        command: str,
        session_id: str | None = None,
        timeout_ms: PositiveMs | None = None,
        env: Env | None = None,
        cwd: str | None = None,
        origin: Literal["user", "internal"] = "user",
        idempotency_key: IdempotencyKey | None = None,
    ) -> AsyncIterator[AnyExecEvent]:
        """Run ``command`` from the session's state in the background and yield its events live.

        The command belongs to this stream: a reader that stops reading slows it (its pipes fill),
        and a stream closed before the command ended (the client left, or cancelled) ends it
        (SIGTERM to its process group, SIGKILL after the grace period; its record says killed).

        With an ``idempotency_key`` (ours) the command belongs to the sandbox instead, so that a
        client that lost the stream can get it back: closing the stream leaves the command running
        (to its timeout; kill it by the ``processId`` of the ``start`` event), and a second stream
        with the same key within the window runs nothing and replays the first one's stream from
        offset 0 of its output (the bytes its ring dropped as a ``gap`` event), then follows it."""
        spawned: list[ProcessRecord] = []

        async def run() -> str:
            record = await self.processes.spawn(
                command,
                session_id=session_id,
                env=env,
                cwd=cwd,
                timeout_ms=self.sessions.timeout_for(None, timeout_ms),
                origin=origin,
                streamed=True,
            )
            spawned.append(record)
            return record.id

        params: dict[str, object] = {"command": command, "sessionId": session_id, "timeoutMs": timeout_ms}
        params.update(env=env, cwd=cwd)
        process_id = await self.processes.idempotency.once(idempotency_key, "commands.execute_stream", params, run, len)
        if spawned:
            record = spawned[0]
            reader = record.job.ring.reader(0, blocking=True)
        else:  # a replay of the stream that started it
            found = self.processes.find(process_id)
            if found is None:
                raise SandboxError(
                    ErrorCode.PROCESS_NOT_FOUND,
                    f"The process {process_id} of the stream with idempotencyKey {idempotency_key!r} is no longer"
                    " held (finished records are kept only up to a limit), so its output cannot be replayed",
                    {"processId": process_id, "idempotencyKey": idempotency_key},
                )
            record = found
            reader = record.job.ring.reader(0)  # what the ring dropped comes as a gap
        job = record.job
        owned = idempotency_key is None
        self.running += 1
        try:
            yield StartEvent(
                command=command, timestamp=now_iso(), session_id=session_id, pid=job.pid, process_id=record.id
            )
            async with contextlib.aclosing(decode_utf8(reader)) as items:
                async for item in items:
                    if isinstance(item, Gap):
                        yield GapEvent(timestamp=now_iso(), start=item.start, end=item.end)
                    else:
                        event = StdoutEvent if item.kind == "stdout" else StderrEvent
                        yield event(timestamp=now_iso(), data=item.text)
            code = await job.wait()
            yield CompleteEvent(timestamp=now_iso(), exit_code=code)
        finally:
            self.running -= 1
            reader.close()
            if owned and not job.done:
                await job.kill(self.sessions.grace)


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``commands`` plugin (entry point): this service alone."""
    register(
        ServiceSpec(
            "commands",
            CommandsService,
            None,
            "run commands, whole or streamed",
            requires=("sessions", "processes"),
        )
    )
