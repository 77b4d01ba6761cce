"""Process records, their results and their log-stream events (contract sections a3 and b2)."""

from __future__ import annotations

from typing import Literal

from sandbox_core.contract.models import Model

ProcessStatus = Literal["starting", "running", "completed", "failed", "killed", "error"]


class ProcessInfo(Model):
    id: str
    pid: int | None
    command: str
    status: ProcessStatus
    start_time: str
    end_time: str | None = None
    exit_code: int | None = None
    session_id: str | None = None


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


class ExitEvent(LogEvent, tag="exit"):
    exit_code: int | None = None
    data: str | None = None


class LogErrorEvent(LogEvent, tag="error"):
    data: str


AnyLogEvent = ProcessInfoEvent | LogStdoutEvent | LogStderrEvent | LogGapEvent | ExitEvent | LogErrorEvent
