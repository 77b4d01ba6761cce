"""Port-watch stream events (contract sections a4 and b5). ``type`` is the tag.

``watching`` comes first, then exactly one of ``ready``, ``process_exited`` or ``error``,
then the stream ends. The events carry no timestamp (as upstream).
"""

from __future__ import annotations

from sandbox_core.contract.models import Model


class PortWatchEvent(Model, tag_field="type"):
    port: int


class PortWatchingEvent(PortWatchEvent, tag="watching"):
    """The watch has started polling."""


class PortReadyEvent(PortWatchEvent, tag="ready"):
    """The port answered: a TCP connect succeeded, or an HTTP GET had a status in range."""

    status_code: int | None = None  # http mode only


class PortProcessExitedEvent(PortWatchEvent, tag="process_exited"):
    """The watched process ended before the port became ready."""

    exit_code: int | None = None


class PortErrorEvent(PortWatchEvent, tag="error"):
    """The watch could not go on (e.g. ``Process not found``)."""

    error: str


AnyPortWatchEvent = PortWatchingEvent | PortReadyEvent | PortProcessExitedEvent | PortErrorEvent
