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
import shlex
import time
import typing
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Literal

import msgspec

from sandbox_core.clock import iso_ms, now_iso
from sandbox_core.contract.models.processes import (
    AnyLogEvent,
    AnyRunEvent,
    AwaitingInputEvent,
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
    ProcessResized,
    ProcessSignalled,
    ProcessStartResult,
    ProcessStatus,
    ProcessStdinWritten,
    PtySize,
    RunExitEvent,
    RunStartEvent,
    RunStderrEvent,
    RunStdoutEvent,
    StdinMode,
    TerminalDimension,
)
from sandbox_core.errors import ErrorCode, SandboxError, validation_error
from sandbox_core.hookspecs import hookimpl
from sandbox_core.memory import trim_after
from sandbox_core.metrics import PROCESSES, Reading
from sandbox_core.registry import ServiceContext, ServiceSpec, operation

from .idempotency import IdempotencyKey, IdempotencyTable
from .jobs import Job
from .output import Gap, RingReader, Text, decode_utf8
from .params import Env, NonNegativeInt, PositiveInt, PositiveMs, PositiveSeconds
from .sessions import DISABLE_SESSION, SessionsService, check_env, check_session_id
from .stdio import InputWatch, decode_data, parse_signal

#: The largest output event of ``run_stream``: a bigger chunk of the ring is cut into pieces of this size.
RUN_CHUNK_BYTES = 64 * 1024

_PROCESS_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: A generated process id: ``proc_<ms>_<runtimeId>_<random>`` (so one of an earlier runtime is known as such)
_GENERATED_ID = re.compile(r"^proc_[0-9]+_([0-9a-f]{16})_[0-9a-f]{6}$")


class ProcessSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.processes]``"""

    output_ring_bytes: PositiveInt = 1024 * 1024  # output held per process
    max_finished: NonNegativeInt = 256  # finished records kept
    max_running: PositiveInt = 1024
    #: how long a stdin write may wait for a process that does not read (its ``timeoutMs``
    #: overrides it per call)
    stdin_timeout_ms: PositiveMs = 30_000
    #: how often a running process with a stdin pipe or a terminal is checked for a wait on it
    input_poll_ms: PositiveMs = 100
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


def command_of(command: str | None, argv: list[str] | None) -> str:
    """The command line of a start given exactly one of ``command`` and ``argv`` (checked; an
    argv is shown as the shell words that would run it); 400 naming the field otherwise."""
    if (command is None) == (argv is None):
        raise validation_error("Give exactly one of command and argv", "argv" if argv is not None else "command")
    if argv is not None:
        check_argv(argv)
        return shlex.join(argv)
    assert command is not None
    return command


def check_argv(argv: list[str]) -> list[str]:
    if not argv:
        raise validation_error("argv must name a program: it is empty", "argv")
    for index, word in enumerate(argv):
        if "\x00" in word:
            raise validation_error(f"argv[{index}] contains NUL, which no argument can hold", "argv")
    if not argv[0]:
        raise validation_error("argv[0] (the program) must not be empty", "argv")
    return argv


def check_process_id(process_id: str) -> str:
    if not _PROCESS_ID.match(process_id):
        raise validation_error("processId must be 1-128 characters of letters, digits, '.', '_' or '-'", "processId")
    return process_id


class ProcessRecord:
    def __init__(self, process_id: str, job: Job) -> None:
        self.id = process_id
        self.job = job
        self.watch: InputWatch | None = None  # whether it waits for input (stdin pipe or terminal)

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
            argv=job.argv,
            stdin="pipe" if job.input is not None and not job.input.pty else None,
            pty=True if job.input is not None and job.input.pty else None,
            awaiting_input=None if self.watch is None else self.watch.waiting,
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
        ctx.registry.metrics.source(PROCESSES, self._by_state)

    def _by_state(self) -> Reading:
        """The records held, by state (every state, 0 included), for ``sandbox_processes``."""
        counts = dict.fromkeys(typing.get_args(ProcessStatus), 0)
        for record in list(self.records.values()):
            counts[record.status] += 1
        return [((state,), count) for state, count in counts.items()]

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
        argv: list[str] | None = None,
        stdin: bool = False,
        pty: tuple[int, int] | None = None,
    ) -> ProcessRecord:
        """Start ``command`` as a process record (the lock of its session is held only until it has a pid).

        ``streamed``: the command of an exec stream (see :meth:`SessionsService.launch`).
        ``argv``, ``stdin``, ``pty``: see :meth:`SessionsService.launch` (``command`` is then
        the display name of ``argv``).

        ``timeout_ms`` ends it (exit code 124) in a session as well as sessionless; ``origin`` is
        only logged (``process.started``), as upstream."""
        sid = check_session_id(session_id)
        check_env(env)
        if argv is None and not command.strip():
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
            argv=argv,
            stdin=stdin,
            pty=pty,
        )
        record = ProcessRecord(process_id, job)
        if existing is not None:
            self._finished.pop(process_id, None)
        self.records[process_id] = record
        if job.input is not None and job.pid is not None and not job.done:
            ring, piped = job.ring, job.input
            record.watch = InputWatch(
                job.pid,
                piped.identity,
                lambda: ring.end,
                self.settings.input_poll_ms / 1000,
                fed=lambda: piped.written,
                unread=piped.unread,
            )
            record.watch.start()
        job.on_done.append(lambda _job: self._finish(record))
        if job.done:
            self._finish(record)
        self.log.info("process.started", process_id=process_id, pid=job.pid, session_id=session_id, origin=origin)
        return record

    def _finish(self, record: ProcessRecord) -> None:
        if record.watch is not None:
            record.watch.stop()
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
        command: str | None = None,
        session_id: str | None = None,
        process_id: str | None = None,
        timeout_ms: PositiveMs | None = None,
        env: Env | None = None,
        cwd: str | None = None,
        encoding: str | None = None,
        auto_cleanup: bool | None = None,
        origin: Literal["user", "internal"] = "user",
        argv: list[str] | None = None,
        stdin: StdinMode = "null",
        pty: PtySize | None = None,
        idempotency_key: IdempotencyKey | None = None,
    ) -> ProcessStartResult:
        """Start a background process from the session's state; returns its id and pid.

        ``timeout_ms`` ends the process when it passes (exit code 124); ``origin`` is only logged.
        Accepted and ignored, as upstream: ``encoding`` (output is always decoded as UTF-8, invalid
        bytes replaced) and ``auto_cleanup`` (finished records are kept up to ``max_finished``,
        oldest dropped first, whatever it says).

        Ours: ``argv`` instead of ``command`` (exactly one of them) runs that program, looked up
        on PATH, with those arguments and no shell parsing at all. ``stdin``: ``"null"`` (the
        default: ``/dev/null``, never an open stdin to block on) or ``"pipe"`` (written with
        :meth:`write_stdin`). ``pty`` (``{cols, rows}``): it runs on a terminal of its own as its
        controlling terminal; the terminal's output is its stdout, stdin writes are keystrokes
        (a ``command`` then runs in ``bash -c``: the session's cwd and exported variables).

        ``idempotency_key`` (ours): a second start with the same key within
        ``idempotency_window_s`` starts nothing and answers the first one's result (the same
        process id and pid) or error; with other parameters it is 409 ``IDEMPOTENCY_KEY_REUSED``.
        """
        text = command_of(command, argv)

        async def run() -> ProcessStartResult:
            record = await self.spawn(
                text,
                session_id=session_id,
                process_id=process_id,
                timeout_ms=timeout_ms,
                env=env,
                cwd=cwd,
                origin=origin,
                argv=argv,
                stdin=stdin == "pipe",
                pty=(pty.cols, pty.rows) if pty is not None else None,
            )
            return ProcessStartResult(
                success=True, process_id=record.id, pid=record.job.pid, command=text, timestamp=now_iso()
            )

        params: dict[str, object] = {"command": text, "argv": argv, "sessionId": session_id, "processId": process_id}
        params.update(timeoutMs=timeout_ms, env=env, cwd=cwd, stdin=stdin, pty=pty)
        return await self.idempotency.once(
            idempotency_key, "processes.start", params, run, lambda r: len(r.process_id) + len(r.command)
        )

    @operation
    async def run_stream(
        self,
        argv: list[str] | None = None,
        command: str | None = None,
        env: Env | None = None,
        cwd: str | None = None,
        stdin: StdinMode = "null",
        pty: PtySize | None = None,
        timeout_ms: PositiveMs | None = None,
    ) -> AsyncIterator[AnyRunEvent]:
        """Ours: run a process that belongs to this stream and yield its output as raw bytes.

        ``argv`` runs that program with no shell parsing, ``command`` a ``bash -c`` line (exactly
        one of them); sessionless: a fresh process in its own process group, ``cwd`` default the
        workspace, ``env`` added to the server's user environment. ``stdin`` and ``pty`` as for
        :meth:`start`; ``timeout_ms`` ends it (exit code 124), default the sessions' command
        timeout.

        Events: ``start`` (the record's ``processId``, for :meth:`write_stdin`, :meth:`signal`,
        :meth:`resize`, and its ``pid``), then ``stdout`` / ``stderr`` chunks of bytes as the
        process writes them (at most 64 KiB each; base64 in JSON; with a pty its terminal's output
        is ``stdout``), then ``exit`` (its ``exitCode``). Nothing is dropped: a reader that stops
        reading stops the process at its next write once its output ring is full (its pipes fill),
        server memory stays bounded. A stream closed before the process ended (the client left,
        the caller cancelled) ends its process tree: SIGTERM to its group, SIGKILL after the grace
        period."""
        command = command_of(command, argv)
        record = await self.spawn(
            command,
            session_id=DISABLE_SESSION,
            timeout_ms=self.sessions.timeout_for(None, timeout_ms),
            env=env,
            cwd=cwd,
            argv=argv,
            stdin=stdin == "pipe",
            pty=(pty.cols, pty.rows) if pty is not None else None,
        )
        job = record.job
        reader = job.ring.reader(0, blocking=True)  # created before any output is read: from byte 0
        try:
            yield RunStartEvent(timestamp=now_iso(), process_id=record.id, pid=job.pid)
            async for item in reader:
                if isinstance(item, Gap):  # not for a blocking reader: it is never overtaken
                    continue
                event = RunStdoutEvent if item.kind == "stdout" else RunStderrEvent
                data = item.data
                for at in range(0, len(data), RUN_CHUNK_BYTES):
                    yield event(timestamp=now_iso(), data=data[at : at + RUN_CHUNK_BYTES])
            code = await job.wait()
            yield RunExitEvent(timestamp=now_iso(), exit_code=code)
        finally:
            reader.close()
            if not job.done:  # the stream was closed (or failed) before the process ended
                await job.kill(self.sessions.grace)

    @operation
    async def write_stdin(
        self,
        id: str,
        data: str = "",
        encoding: Literal["utf-8", "base64"] = "utf-8",
        eof: bool = False,
        timeout_ms: PositiveMs | None = None,
    ) -> ProcessStdinWritten:
        """Ours: write ``data`` to the process's stdin pipe (or terminal: keystrokes), then with
        ``eof`` close it (a terminal: its end-of-file character). A process that does not read
        makes the call wait, up to ``timeout_ms`` (default: the ``stdin_timeout_ms`` setting),
        then 408 PROCESS_STDIN_TIMEOUT; writes to one process take turns. A process without a
        stdin pipe, one that has exited, or a closed stdin: 409 PROCESS_STDIN_UNAVAILABLE."""
        payload = decode_data(data, encoding)
        record = self._get(id)
        job = record.job
        if job.input is None:
            raise SandboxError(
                ErrorCode.PROCESS_STDIN_UNAVAILABLE,
                f"Process {id} has no stdin to write: start it with stdin 'pipe' or a pty",
                {"processId": id, "reason": "not piped"},
            )
        timeout = (timeout_ms or self.settings.stdin_timeout_ms) / 1000
        written = await job.input.write(id, payload, eof, limit=timeout)
        return ProcessStdinWritten(success=True, process_id=id, written=written, eof=eof, timestamp=now_iso())

    @operation
    async def close_stdin(self, id: str) -> ProcessStdinWritten:
        """Ours: close the process's stdin (EOF); as :meth:`write_stdin` with no data and ``eof``."""
        return await self.write_stdin(id, eof=True)

    @operation
    async def signal(self, id: str, signal: str | int) -> ProcessSignalled:
        """Ours: send ``signal`` (a name such as ``"SIGUSR1"``, or a number 1-64) to the process's
        group: the tree it started, nothing else (with a pty, also its terminal's foreground
        group). A process that has ended is 409 PROCESS_NOT_RUNNING: its group may be gone and
        its number another's, so nothing is sent."""
        number = parse_signal(signal)
        record = self._get(id)
        if not record.job.send_signal(number):
            raise SandboxError(
                ErrorCode.PROCESS_NOT_RUNNING,
                f"Process {id} is not running ({record.status}): no signal sent",
                {"processId": id, "status": record.status},
            )
        self.log.info("process.signalled", process_id=id, signal=number)
        return ProcessSignalled(success=True, process_id=id, signal=number, timestamp=now_iso())

    @operation
    async def resize(self, id: str, cols: TerminalDimension, rows: TerminalDimension) -> ProcessResized:
        """Ours: resize the process's terminal (its foreground programs get SIGWINCH). A process
        without a pty is 409 PROCESS_NO_TERMINAL; one that has exited, 409 PROCESS_NOT_RUNNING."""
        record = self._get(id)
        job = record.job
        if job.input is None or not job.input.pty:
            raise SandboxError(
                ErrorCode.PROCESS_NO_TERMINAL, f"Process {id} has no terminal to resize", {"processId": id}
            )
        if job.done or job.input.ended:
            raise SandboxError(
                ErrorCode.PROCESS_NOT_RUNNING,
                f"Process {id} is not running ({record.status})",
                {"processId": id, "status": record.status},
            )
        job.input.resize(cols, rows)
        return ProcessResized(success=True, process_id=id, cols=cols, rows=rows, timestamp=now_iso())

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
            if record.watch is None:
                async for item in items:
                    yield self._log_event(id, item)
            else:
                async for event in self._with_waits(id, record.watch, items, reader):
                    yield event
        code = await record.wait()
        message = (
            f"Process completed with exit code {code}" if code is not None else "Process ended with unknown status"
        )
        yield ExitEvent(process_id=id, timestamp=now_iso(), exit_code=code, data=message)

    @staticmethod
    def _log_event(id: str, item: Gap | Text) -> AnyLogEvent:
        if isinstance(item, Gap):
            return LogGapEvent(process_id=id, timestamp=now_iso(), start=item.start, end=item.end)
        cls = LogStdoutEvent if item.kind == "stdout" else LogStderrEvent
        return cls(process_id=id, timestamp=now_iso(), data=item.text, offset=item.end)

    async def _with_waits(
        self, id: str, watch: InputWatch, items: AsyncGenerator[Gap | Text, None], reader: RingReader
    ) -> AsyncIterator[AnyLogEvent]:
        """The output events, and an ``awaiting_input`` event for the wait for input under way
        when the stream starts and each one that begins while it runs, once the output written
        before it has been sent."""
        seen = watch.waits - 1 if watch.waiting else watch.waits  # a wait under way is told too
        pending: int | None = None  # the offset of a wait not yet told
        item_task: asyncio.Future[Gap | Text] | None = None
        wait_task: asyncio.Future[None] | None = None
        try:
            while True:
                if item_task is None:
                    item_task = asyncio.ensure_future(anext(items))
                if wait_task is None and pending is None and not watch.stopped:
                    wait_task = asyncio.ensure_future(watch.next_wait(seen))
                await asyncio.wait([t for t in (item_task, wait_task) if t is not None], return_when="FIRST_COMPLETED")
                if item_task.done():
                    try:
                        item = item_task.result()
                    except StopAsyncIteration:
                        break
                    item_task = None
                    yield self._log_event(id, item)
                if wait_task is not None and wait_task.done():
                    wait_task = None
                    if watch.waits > seen:
                        seen = watch.waits
                        pending = watch.wait_offset
                if pending is not None and (item_task is None or not item_task.done()) and reader.position >= pending:
                    yield AwaitingInputEvent(process_id=id, timestamp=now_iso(), offset=pending)
                    pending = None
        finally:
            for task in (item_task, wait_task):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await task

    async def aclose(self) -> None:
        for record in self.records.values():
            if record.watch is not None:
                await record.watch.aclose()


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
