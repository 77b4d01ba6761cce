"""Process records, their results and their log-stream events (contract sections a3 and b2)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from sandbox_core.contract.models import Model

ProcessStatus = Literal["starting", "running", "completed", "failed", "killed", "error"]
#: ``stdin`` of a process start (ours): ``null`` (``/dev/null``, the default) or a ``pipe`` the
#: caller writes with ``POST /api/process/{id}/stdin``.
StdinMode = Literal["null", "pipe"]
#: A terminal's width or height in characters (ours).
TerminalDimension = Annotated[int, Meta(ge=1, le=65535)]


class PtySize(Model, forbid_unknown_fields=True):
    """``pty`` of a process start (ours): run it on a terminal of this size."""

    cols: TerminalDimension
    rows: TerminalDimension


class ProcessInfo(Model):
    id: str
    pid: int | None
    command: str
    status: ProcessStatus
    start_time: str
    end_time: str | None = None
    exit_code: int | None = None
    session_id: str | None = None
    # ours (not upstream's): how it was started, and whether it now waits for input
    argv: list[str] | None = None
    stdin: StdinMode | None = None
    pty: bool | None = None
    #: a process with a stdin pipe or a terminal: whether it is blocked reading it now
    awaiting_input: bool | None = None


class ProcessStartResult(Model):
    success: bool
    process_id: str
    command: str
    timestamp: str
    pid: int | None = None


class ProcessList(Model):
    success: bool
    processes: list[ProcessInfo]
    timestamp: str


class ProcessGet(Model):
    success: bool
    process: ProcessInfo
    timestamp: str


class ProcessKilled(Model):
    success: bool
    process_id: str
    timestamp: str


class ProcessesKilled(Model):
    success: bool
    cleaned_count: int
    timestamp: str


class ProcessLogs(Model):
    success: bool
    process_id: str
    stdout: str
    stderr: str
    timestamp: str


class ProcessStdinWritten(Model):
    """Ours: the answer of a stdin write."""

    success: bool
    process_id: str
    written: int
    eof: bool
    timestamp: str


class ProcessSignalled(Model):
    """Ours: the answer of a signal sent to a process's group."""

    success: bool
    process_id: str
    signal: int
    timestamp: str


class ProcessResized(Model):
    """Ours: the answer of a terminal resize."""

    success: bool
    process_id: str
    cols: int
    rows: int
    timestamp: str


class LogEvent(Model, tag_field="type"):
    process_id: str
    timestamp: str


class ProcessInfoEvent(LogEvent, tag="process_info"):
    command: str
    status: ProcessStatus


class LogStdoutEvent(LogEvent, tag="stdout"):
    data: str
    offset: int  # our extension: the absolute byte offset just past ``data``; resume from it


class LogStderrEvent(LogEvent, tag="stderr"):
    data: str
    offset: int


class LogGapEvent(LogEvent, tag="gap"):
    """Our extension: bytes ``start`` to ``end`` were dropped from the ring before being read."""

    start: int
    end: int


class AwaitingInputEvent(LogEvent, tag="awaiting_input"):
    """Ours: the process (one of its tree) is blocked reading its stdin pipe or terminal; once
    per wait, after the output written before the wait began (``offset``)."""

    offset: int


class ExitEvent(LogEvent, tag="exit"):
    exit_code: int | None = None
    data: str | None = None


class LogErrorEvent(LogEvent, tag="error"):
    data: str


AnyLogEvent = (
    ProcessInfoEvent | LogStdoutEvent | LogStderrEvent | LogGapEvent | AwaitingInputEvent | ExitEvent | LogErrorEvent
)


class RunEvent(Model, tag_field="type"):
    """Ours: an event of ``processes.run_stream``, a process owned by its stream, output as raw bytes."""

    timestamp: str


class RunStartEvent(RunEvent, tag="start"):
    """First: the process record's id (for ``write_stdin``, ``signal``, ``resize``) and its pid."""

    process_id: str
    pid: int | None = None


class RunStdoutEvent(RunEvent, tag="stdout"):
    """Bytes the process wrote to stdout (with a pty: its terminal's output), as produced; JSON
    carries them as base64."""

    data: bytes


class RunStderrEvent(RunEvent, tag="stderr"):
    """Bytes the process wrote to stderr, as produced (base64 in JSON)."""

    data: bytes


class RunExitEvent(RunEvent, tag="exit"):
    """Last: the exit code (128 + N for a signal N, 124 after ``timeoutMs``; null when unknown)."""

    exit_code: int | None = None


AnyRunEvent = RunStartEvent | RunStdoutEvent | RunStderrEvent | RunExitEvent
