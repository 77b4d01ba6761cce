"""A session's terminal (contract section a11): the events of ``terminals.attach`` and the
answers of its unary operations. Bytes are raw terminal bytes (base64 in JSON)."""

from __future__ import annotations

from sandbox_core.contract.models import Model


class TerminalEvent(Model, tag_field="type"):
    """One event of an attached terminal's stream; ``type`` is the tag."""


class TerminalReplay(TerminalEvent, tag="replay"):
    """The first event of every attach: the terminal's most recent output (possibly empty)."""

    data: bytes


class TerminalData(TerminalEvent, tag="data"):
    """Output the terminal produced after the attach."""

    data: bytes


class TerminalExit(TerminalEvent, tag="exit"):
    """The last event: the terminal ended (its shell exited, its session was deleted, or the
    server is stopping); ``exit_code`` is the shell's status where it is known."""

    reason: str
    exit_code: int | None = None


class TerminalAck(Model):
    """The answer of ``terminals.write`` and ``terminals.resize``."""

    success: bool
    session_id: str
