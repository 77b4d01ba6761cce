"""Processes: background commands (and every streamed exec) as records with bounded output.

A record wraps a :class:`~sandbox_services.jobs.Job` started from a session's state (or
sessionless). Its output lives in the job's ring, addressed by absolute byte offsets; the log
stream replays what the ring holds and then follows it live, and a reader that asks for bytes
the ring has dropped gets a ``gap`` event naming them. Finished records are kept up to
``max_finished``, oldest dropped first. Scope is the whole sandbox, not one session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Literal

import msgspec

from sandbox_core.clock import iso_ms, now_iso
from sandbox_core.contract.models.processes import (
    AnyLogEvent,
    ExitEvent,
    LogGapEvent,
    LogStderrEvent,
    LogStdoutEvent,
    ProcessesKilled,
    ProcessGet,
    ProcessInfo,
    ProcessInfoEvent,
    ProcessKilled,
    ProcessList,
    ProcessLogs,
    ProcessStartResult,
    ProcessStatus,
)
from sandbox_core.errors import ErrorCode, SandboxError, validation_error
from sandbox_core.hookspecs import hookimpl
from sandbox_core.memory import trim_after
from sandbox_core.registry import ServiceContext, ServiceSpec, operation

from .idempotency import IdempotencyKey, IdempotencyTable
from .jobs import Job
from .output import Gap, decode_utf8
from .params import Env, NonNegativeInt, PositiveInt, PositiveMs, PositiveSeconds
from .sessions import SessionsService, check_env, check_session_id

_PROCESS_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: A generated process id: ``proc_<ms>_<runtimeId>_<random>`` (so one of an earlier runtime is known as such)
_GENERATED_ID = re.compile(r"^proc_[0-9]+_([0-9a-f]{16})_[0-9a-f]{6}$")


class ProcessSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.processes]``"""

    output_ring_bytes: PositiveInt = 1024 * 1024  # output held per process
    max_finished: NonNegativeInt = 256  # finished records kept
    max_running: PositiveInt = 1024
    # ours: at-most-once requests (``idempotencyKey`` of execute, execute_stream and start)
    idempotency_window_s: PositiveSeconds = 600.0  # a key is held this long after its request ended
    idempotency_max_keys: PositiveInt = 4096  # keys held, oldest out first
    idempotency_max_bytes: PositiveInt = 16 * 1024 * 1024  # bytes held (keys and remembered results)


def status_of(job: Job) -> ProcessStatus:
    if not job.done:
        return "running"
    code = job.exit_code
    if code is None:
        return "error"
    if code == 0:
        return "completed"
    if code in (137, 143) or (job.killed and not job.timed_out):
        return "killed"
    return "failed"


def check_process_id(process_id: str) -> str:
    if not _PROCESS_ID.match(process_id):
        raise validation_error("processId must be 1-128 characters of letters, digits, '.', '_' or '-'", "processId")
    return process_id


class ProcessRecord:
    def __init__(self, process_id: str, job: Job) -> None:
        self.id = process_id
        self.job = job

    @property
    def done(self) -> bool:
        return self.job.done

    @property
    def exit_code(self) -> int | None:
        return self.job.exit_code

    async def wait(self) -> int | None:
        return await self.job.wait()

    @property
    def status(self) -> ProcessStatus:
        return status_of(self.job)

    def info(self) -> ProcessInfo:
        job = self.job
        return ProcessInfo(
            id=self.id,
            pid=job.pid,
            command=job.command,
            status=self.status,
            start_time=iso_ms(job.started_at),
            end_time=iso_ms(job.ended_at) if job.ended_at is not None else None,
            exit_code=job.exit_code,
            session_id=job.session_id,
        )


class ProcessesService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.settings: ProcessSettings = ctx.settings
        self.registry = ctx.registry
        self.log = ctx.log
        self.records: dict[str, ProcessRecord] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        #: the ``idempotencyKey`` table of this service and the commands service
        self.idempotency = IdempotencyTable(
            window_s=self.settings.idempotency_window_s,
            max_keys=self.settings.idempotency_max_keys,
            max_bytes=self.settings.idempotency_max_bytes,
        )

    @property
    def sessions(self) -> SessionsService:
        return self.registry.get("sessions", SessionsService)

    # for other services ---------------------------------------------------------------------

    def find(self, process_id: str) -> ProcessRecord | None:
        return self.records.get(process_id)

    async def spawn(
        self,
        command: str,
        *,
        session_id: str | None = None,
        process_id: str | None = None,
        timeout_ms: int | None = None,
        env: Env | None = None,
        cwd: str | None = None,
        origin: Literal["user", "internal"] = "user",
        streamed: bool = False,
    ) -> ProcessRecord:
        """Start ``command`` as a process record (the lock of its session is held only until it has a pid).

        ``streamed``: the command of an exec stream (see :meth:`SessionsService.launch`).

        ``timeout_ms`` ends it (exit code 124) in a session as well as sessionless; ``origin`` is
        only logged (``process.started``), as upstream."""
        sid = check_session_id(session_id)
        check_env(env)
        if not command.strip():
            raise SandboxError(ErrorCode.INVALID_COMMAND, "Command must not be empty", {"command": command})
        if process_id is None:
            process_id = f"proc_{int(time.time() * 1000)}_{self.registry.runtime_id}_{os.urandom(3).hex()}"
        check_process_id(process_id)
        existing = self.records.get(process_id)
        if existing is not None and not existing.done:
            raise SandboxError(
                ErrorCode.PROCESS_ALREADY_EXISTS, f"Process {process_id} is already running", {"processId": process_id}
            )
        running = sum(1 for r in self.records.values() if not r.done)
        if running >= self.settings.max_running:
            raise SandboxError(
                ErrorCode.RESOURCE_BUSY,
                f"Too many running processes (limit {self.settings.max_running})",
                {"limit": self.settings.max_running},
            )
        job = await self.sessions.launch(
            sid,
            command,
            env=env,
            cwd=cwd,
            timeout_ms=timeout_ms,
            ring_bytes=self.settings.output_ring_bytes,
            streamed=streamed,
        )
        record = ProcessRecord(process_id, job)
        if existing is not None:
            self._finished.pop(process_id, None)
        self.records[process_id] = record
        job.on_done.append(lambda _job: self._finish(record))
        if job.done:
            self._finish(record)
        self.log.info("process.started", process_id=process_id, pid=job.pid, session_id=session_id, origin=origin)
        return record

    def _finish(self, record: ProcessRecord) -> None:
        if self.records.get(record.id) is not record:
            return
        self._finished[record.id] = None
        self._finished.move_to_end(record.id)
        while len(self._finished) > self.settings.max_finished:
            oldest, _ = self._finished.popitem(last=False)
            self.records.pop(oldest, None)

    def _get(self, process_id: str) -> ProcessRecord:
        record = self.records.get(process_id)
        if record is None:
            raise self.not_found(process_id)
        return record

    def not_found(self, process_id: str) -> SandboxError:
        """404 for a process this runtime does not know, saying when it is one of an earlier runtime."""
        runtime = self.registry.runtime_id
        details = {"processId": process_id, "runtimeId": runtime}
        generated = _GENERATED_ID.match(process_id)
        if generated is not None and generated.group(1) != runtime:
            details["processRuntimeId"] = generated.group(1)
            message = (
                f"Process {process_id} not found: it belongs to an earlier runtime ({generated.group(1)}); the"
                f" server has restarted since and its processes are gone (current runtime {runtime})"
            )
        else:
            message = (
                f"Process {process_id} not found (runtime {runtime}; processes of an earlier runtime are gone"
                " after a restart, and finished ones are kept only up to a limit)"
            )
        return SandboxError(ErrorCode.PROCESS_NOT_FOUND, message, details)

    # operations ----------------------------------------------------------------------------

    @operation
    async def start(
        self,
        command: str,
        session_id: str | None = None,
        process_id: str | None = None,
        timeout_ms: PositiveMs | None = None,
        env: Env | None = None,
        cwd: str | None = None,
        encoding: str | None = None,
        auto_cleanup: bool | None = None,
        origin: Literal["user", "internal"] = "user",
        idempotency_key: IdempotencyKey | None = None,
    ) -> ProcessStartResult:
        """Start a background process from the session's state; returns its id and pid.

        ``timeout_ms`` ends the process when it passes (exit code 124); ``origin`` is only logged.
        Accepted and ignored, as upstream: ``encoding`` (output is always decoded as UTF-8, invalid
        bytes replaced) and ``auto_cleanup`` (finished records are kept up to ``max_finished``,
        oldest dropped first, whatever it says).

        ``idempotency_key`` (ours): a second start with the same key within
        ``idempotency_window_s`` starts nothing and answers the first one's result (the same
        process id and pid) or error; with other parameters it is 409 ``IDEMPOTENCY_KEY_REUSED``.
        """

        async def run() -> ProcessStartResult:
            record = await self.spawn(
                command,
                session_id=session_id,
                process_id=process_id,
                timeout_ms=timeout_ms,
                env=env,
                cwd=cwd,
                origin=origin,
            )
            return ProcessStartResult(
                success=True, process_id=record.id, pid=record.job.pid, command=command, timestamp=now_iso()
            )

        params: dict[str, object] = {"command": command, "sessionId": session_id, "processId": process_id}
        params.update(timeoutMs=timeout_ms, env=env, cwd=cwd)
        return await self.idempotency.once(
            idempotency_key, "processes.start", params, run, lambda r: len(r.process_id) + len(r.command)
        )

    @operation
    async def list(self, status: ProcessStatus | None = None) -> ProcessList:
        """Every process record, optionally only those with ``status``."""
        infos = [r.info() for r in self.records.values()]
        if status is not None:
            infos = [i for i in infos if i.status == status]
        return ProcessList(success=True, processes=infos, timestamp=now_iso())

    @operation
    async def get(self, id: str) -> ProcessGet:
        """One process record; never waits for the process."""
        return ProcessGet(success=True, process=self._get(id).info(), timestamp=now_iso())

    @operation
    async def kill(self, id: str) -> ProcessKilled:
        """SIGTERM the process tree, SIGKILL after the grace period; unknown is 404, finished 404 COMMAND_NOT_FOUND."""
        record = self._get(id)
        if record.done:
            raise SandboxError(
                ErrorCode.COMMAND_NOT_FOUND,
                f"Process {id} not found or already completed",
                {"processId": id, "status": record.status},
            )
        await record.job.kill(self.sessions.grace)
        self.log.info("process.killed", process_id=id, exit_code=record.exit_code)
        return ProcessKilled(success=True, process_id=id, timestamp=now_iso())

    @operation
    async def kill_all(self) -> ProcessesKilled:
        """Kill every running process; returns how many."""
        running = [r for r in self.records.values() if not r.done]
        await asyncio.gather(*(record.job.kill(self.sessions.grace) for record in running))
        return ProcessesKilled(success=True, cleaned_count=len(running), timestamp=now_iso())

    @operation
    async def logs(self, id: str) -> ProcessLogs:
        """The output the process's ring still holds, per stream."""
        ring = self._get(id).job.ring
        stdout, stderr = ring.held("stdout"), ring.held("stderr")
        trim_after(len(stdout) + len(stderr))
        return ProcessLogs(
            success=True,
            process_id=id,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
            timestamp=now_iso(),
        )

    @operation
    async def stream_logs(self, id: str, offset: NonNegativeInt | None = None) -> AsyncIterator[AnyLogEvent]:
        """``process_info``, then the held output from ``offset`` (default: the oldest byte held), then live
        output, then ``exit``. Bytes the ring dropped before they were read come as a ``gap`` event."""
        record = self._get(id)
        ring = record.job.ring
        yield ProcessInfoEvent(process_id=id, timestamp=now_iso(), command=record.job.command, status=record.status)
        reader = ring.reader(ring.start if offset is None else offset)
        if offset is not None and offset > ring.end:
            reader.position = offset  # a future offset: wait for it
        async with contextlib.aclosing(decode_utf8(reader)) as items:
            async for item in items:
                if isinstance(item, Gap):
                    yield LogGapEvent(process_id=id, timestamp=now_iso(), start=item.start, end=item.end)
                else:
                    cls = LogStdoutEvent if item.kind == "stdout" else LogStderrEvent
                    yield cls(process_id=id, timestamp=now_iso(), data=item.text, offset=item.end)
        code = await record.wait()
        message = (
            f"Process completed with exit code {code}" if code is not None else "Process ended with unknown status"
        )
        yield ExitEvent(process_id=id, timestamp=now_iso(), exit_code=code, data=message)


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``processes`` plugin (entry point): this service alone."""
    register(
        ServiceSpec(
            "processes",
            ProcessesService,
            ProcessSettings,
            "background processes with bounded output",
            requires=("sessions",),
        )
    )
