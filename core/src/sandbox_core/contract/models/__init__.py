"""Typed values shared by services, transports and the client: results and stream events.

Field names are snake_case in Python and camelCase on the wire (the contract's names).
"""

from __future__ import annotations

import msgspec


class Model(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Base of every wire value: camelCase keys, ``None`` fields omitted."""


class ExecResult(Model):
    success: bool
    exit_code: int
    stdout: str
    stderr: str
    command: str
    duration: float
    timestamp: str
    session_id: str | None = None


class SessionInfo(Model):
    id: str
    cwd: str
    env: dict[str, str] | None = None
    command_timeout_ms: int | None = None
    created_at: str | None = None


class SessionCreated(Model):
    success: bool
    id: str
    message: str
    data: SessionInfo
    timestamp: str
    container_placement_id: str | None = None


class SessionDeleted(Model):
    success: bool
    session_id: str
    timestamp: str


class SessionList(Model):
    """The ids of every session (the http route sends ``sessions`` as ``data``)."""

    success: bool
    sessions: list[str]
    timestamp: str


class Pong(Model):
    success: bool
    status: str
    message: str
    timestamp: str
    #: ours (not upstream's): this run of the server, new at every start (see ``ServiceRegistry``)
    runtime_id: str | None = None


class VersionInfo(Model):
    success: bool
    version: str
    timestamp: str
    #: ours (not upstream's): as :attr:`Pong.runtime_id`
    runtime_id: str | None = None


class MetadataResult(Model):
    """Ours: ``utils.metadata``: the server's environment variables whose names start with
    ``prefix``, none with a secret-looking name and none of the server's own."""

    success: bool
    prefix: str
    env: dict[str, str]
    timestamp: str


# Exec stream events (contract section b1). ``type`` is the tag.


class ExecEvent(Model, tag_field="type"):
    timestamp: str


class StartEvent(ExecEvent, tag="start"):
    command: str
    session_id: str | None = None
    pid: int | None = None
    process_id: str | None = None


class StdoutEvent(ExecEvent, tag="stdout"):
    data: str


class StderrEvent(ExecEvent, tag="stderr"):
    data: str


class CompleteEvent(ExecEvent, tag="complete"):
    exit_code: int | None = None


class ErrorEvent(ExecEvent, tag="error"):
    error: str


class GapEvent(ExecEvent, tag="gap"):
    """Our extension: output from byte ``start`` to ``end`` was dropped before it was read."""

    start: int
    end: int


AnyExecEvent = StartEvent | StdoutEvent | StderrEvent | CompleteEvent | ErrorEvent | GapEvent
