"""File-watch stream events and change checks (contract sections a9 and b6). ``type`` is the tag.

A watch stream yields ``watching`` once the watches are established, then ``event`` for each
change (coalesced), and ends with ``stopped`` or ``error``.
"""

from __future__ import annotations

from typing import Literal

from sandbox_core.contract.models import Model

#: The kinds of change a watch reports (inotify ``close_write`` is reported as ``modify``).
WatchEventType = Literal["create", "modify", "delete", "move_from", "move_to", "attrib"]

#: The kinds watched when a request names none.
DEFAULT_WATCH_EVENTS: tuple[WatchEventType, ...] = ("create", "modify", "delete", "move_from", "move_to")

#: The excludes when a request gives neither ``include`` nor ``exclude``.
DEFAULT_WATCH_EXCLUDE: tuple[str, ...] = (".git", "node_modules", ".DS_Store")


class WatchStreamEvent(Model, tag_field="type"):
    pass


class WatchingEvent(WatchStreamEvent, tag="watching"):
    """The watches are established: every change from now on is reported."""

    path: str
    watch_id: str


class FileWatchEvent(WatchStreamEvent, tag="event"):
    """One change (several identical ones within a coalescing window count once)."""

    event_type: WatchEventType
    path: str
    is_directory: bool
    timestamp: str


class WatchStoppedEvent(WatchStreamEvent, tag="stopped"):
    """The watch ended normally (its directory went away, the server is stopping, ...)."""

    reason: str


class WatchErrorEvent(WatchStreamEvent, tag="error"):
    """The watch (or this subscriber of it) could not go on: events may have been lost."""

    error: str


AnyWatchEvent = WatchingEvent | FileWatchEvent | WatchStoppedEvent | WatchErrorEvent


class CheckChangesResult(Model):
    """``unchanged``/``changed`` relative to ``since``; ``resync`` (with ``reason``) when
    ``since`` belongs to a watch that is gone (``expired``) or to an earlier server run
    (``restarted``). ``version`` is the token to pass as ``since`` next time."""

    success: bool
    status: Literal["unchanged", "changed", "resync"]
    version: str
    timestamp: str
    reason: Literal["expired", "restarted"] | None = None


class WatchInfo(Model):
    """One active watcher (shared by every identical request)."""

    id: str
    path: str
    recursive: bool
    events: list[WatchEventType]
    subscribers: int
    retained: bool
    cursor: int
    directories: int
    started_at: str
    include: list[str] | None = None
    exclude: list[str] | None = None


class WatchList(Model):
    success: bool
    watches: list[WatchInfo]
    timestamp: str
