"""File watch (contract sections a9 and b6): change streams and change checks over inotify.

``watch`` is a stream: ``watching`` once the watches are established, then ``event`` for each
change (coalesced in ``coalesce_ms`` windows), ending with ``stopped`` or ``error``.
``check_changes`` answers whether anything changed since a version token
``"<watchId>:<cursor>"`` it returned earlier: ``unchanged``, ``changed``, or ``resync`` when the
token's watch is gone (``expired``: it ended on this server) or belongs to an earlier server run
(``restarted``). It keeps the watch alive ("retained") for ``retain_idle_ms`` after its last use.

Confinement, on every transport (upstream checks it over http only): a relative ``path`` is
resolved against the workspace; the path, normalised, must be the workspace or inside it, and so
must it be with every symbolic link resolved (403 ``PERMISSION_DENIED`` otherwise, before
anything about the target is revealed). Then it must exist (404 ``FILE_NOT_FOUND``) and be a
directory (400 ``NOT_DIRECTORY``). Links inside the watched tree are never followed.

Identical requests (same path and options) share one watcher; the number of watchers is bounded
by ``max_watchers`` (idle retained ones are evicted first, oldest first; then 409
``RESOURCE_BUSY``). The directories watched are bounded per watcher by ``max_directories``
(past it, 400 ``VALIDATION_FAILED`` naming ``path``) and across all watchers by
``max_total_directories`` (past it, or past the kernel's own limits, 409 ``RESOURCE_BUSY``);
each error names the limit and its setting. A watch that grows past a bound once established
ends with an ``error`` event saying the same.

``session_id`` is accepted for the contract's sake and not used: a watch belongs to the
sandbox, and relative paths follow the workspace, not a session's directory.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from sandbox_core.clock import now_iso
from sandbox_core.contract.models.watch import (
    DEFAULT_WATCH_EVENTS,
    DEFAULT_WATCH_EXCLUDE,
    AnyWatchEvent,
    CheckChangesResult,
    WatchEventType,
    WatchingEvent,
    WatchList,
    WatchStoppedEvent,
)
from sandbox_core.errors import ErrorCode, SandboxError, validation_error
from sandbox_core.metrics import WATCHES
from sandbox_core.registry import ServiceContext, operation

from ..files.errors import fs_error
from ..files.paths import check_path
from ..params import MAX_INT64, PositiveMs
from .globs import check_patterns
from .watcher import KIND_MASKS, DirectoryBudget, Watcher, WatchOptions

_TOKEN = re.compile(r"(?P<id>.+):(?P<cursor>[0-9]+)", re.DOTALL)
_MAX_TOKEN = 512


class WatchSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.watch]``"""

    #: watchers at once (each is one inotify instance; the kernel allows a user 128 by default)
    max_watchers: Annotated[int, Meta(ge=1, le=4096)] = 32
    #: how long a watch kept by ``check_changes`` lives without subscribers or checks
    retain_idle_ms: PositiveMs = 600_000
    #: distinct events a subscriber may have pending; past that it is ended with an ``error``
    max_pending_events: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000
    #: the coalescing window
    coalesce_ms: Annotated[int, Meta(ge=0, le=60_000)] = 75
    #: how long establishing the watches may take
    setup_timeout_ms: PositiveMs = 10_000
    #: directories one watcher may watch (inotify watches are a per-user kernel resource)
    max_directories: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000
    #: directories all the watchers together may watch (the kernel's per-user limit,
    #: fs.inotify.max_user_watches, is shared with the sandboxed code)
    max_total_directories: Annotated[int, Meta(ge=1, le=10_000_000)] = 20_000


Patterns = Annotated[list[str], Meta(max_length=64)]
Kinds = Annotated[list[WatchEventType], Meta(max_length=64)]


def _inside(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


def _normalise(path: str) -> str:
    path = os.path.normpath(path)
    return "/" + path.lstrip("/") if path.startswith("//") else path  # POSIX keeps a leading "//"


class WatchService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.settings: WatchSettings = ctx.settings
        self.log = ctx.log
        self.workspace = _normalise(os.path.abspath(ctx.workspace))
        self.boot = secrets.token_hex(4)  # tells this run's watch ids from an earlier run's
        self.counter = 0
        self.by_key: dict[tuple[object, ...], Watcher] = {}
        self.by_id: dict[str, Watcher] = {}
        self.budget = DirectoryBudget(self.settings.max_total_directories)
        ctx.registry.metrics.source(WATCHES, lambda: len(self.by_id))

    async def aclose(self) -> None:
        for watcher in list(self.by_id.values()):
            watcher.stop(WatchStoppedEvent(reason="The server is shutting down"))

    # requests ------------------------------------------------------------------------------------

    def resolve(self, path: str) -> tuple[str, str]:
        """(the path as reported, the real directory watched), confined to the workspace."""
        check_path(path)
        workspace = self.workspace
        shown = _normalise(path if os.path.isabs(path) else os.path.join(workspace, path))
        details = {"path": path, "resolvedPath": shown, "workspaceRoot": workspace}
        if not _inside(shown, workspace):
            raise SandboxError(ErrorCode.PERMISSION_DENIED, f"path must be inside {workspace}", details)
        real = os.path.realpath(shown)
        if not _inside(real, os.path.realpath(workspace)):
            raise SandboxError(
                ErrorCode.PERMISSION_DENIED,
                f"path must be inside {workspace}: {shown} leads outside it through a symbolic link",
                details,
            )
        try:
            st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            raise SandboxError(ErrorCode.FILE_NOT_FOUND, f"Path does not exist: {shown}", {"path": shown}) from None
        except PermissionError:
            raise SandboxError(ErrorCode.PERMISSION_DENIED, f"Permission denied: {shown}", {"path": shown}) from None
        except OSError as exc:  # a name too long, a loop of links...: the files service's mapping
            raise fs_error(exc, shown, "watch.start") from None
        if not stat.S_ISDIR(st.st_mode):
            raise SandboxError(
                ErrorCode.NOT_DIRECTORY, f"Not a directory: {shown} (a watch takes a directory)", {"path": shown}
            )
        return shown, real

    def options(
        self,
        path: str,
        recursive: bool,
        events: list[WatchEventType] | None,
        include: list[str] | None,
        exclude: list[str] | None,
    ) -> WatchOptions:
        """Validate a request (bad input first, then the path) into its normalised options."""
        if include and exclude:
            raise validation_error("include and exclude cannot both be given", "include")
        check_patterns(include or (), "include")
        check_patterns(exclude or (), "exclude")
        inc = tuple(sorted(set(include))) if include else None
        exc = None if inc else (tuple(sorted(set(exclude))) if exclude else DEFAULT_WATCH_EXCLUDE)
        kinds = tuple(k for k in KIND_MASKS if k in events) if events else DEFAULT_WATCH_EVENTS
        shown, real = self.resolve(path)
        return WatchOptions(shown, real, recursive, kinds, inc, exc)

    def _acquire(self, options: WatchOptions) -> tuple[Watcher, bool]:
        """The watcher for ``options`` (being set up, maybe): (watcher, whether it is new)."""
        watcher = self.by_key.get(options.key)
        if watcher is not None and not watcher.closed:
            return watcher, False
        self._make_room()
        self.counter += 1
        watcher = Watcher(
            f"watch-{self.counter}-{self.boot}", options, self.settings, self.log, self._forget, self.budget
        )
        self.by_key[options.key] = watcher
        self.by_id[watcher.id] = watcher
        return watcher, True

    def _make_room(self) -> None:
        limit = self.settings.max_watchers
        if len(self.by_id) < limit:
            return
        idle = sorted((w for w in self.by_id.values() if not w.subscribers), key=lambda w: w.last_used)
        for watcher in idle[: len(self.by_id) - limit + 1]:
            watcher.stop(WatchStoppedEvent(reason="Evicted: too many watches"))
        if len(self.by_id) >= limit:
            raise SandboxError(
                ErrorCode.RESOURCE_BUSY,
                f"Too many file watches ({len(self.by_id)}): the limit is {limit} (services.watch.max_watchers)",
                {"limit": limit},
            )

    def _forget(self, watcher: Watcher) -> None:
        if self.by_id.get(watcher.id) is watcher:
            del self.by_id[watcher.id]
        if self.by_key.get(watcher.options.key) is watcher:
            del self.by_key[watcher.options.key]

    def _parse_since(self, since: str) -> tuple[str, int]:
        m = _TOKEN.fullmatch(since) if len(since) <= _MAX_TOKEN else None
        if m is None or int(m["cursor"]) > MAX_INT64:
            raise validation_error(
                "since must be a version returned by checkChanges()", "since", since=since[:_MAX_TOKEN]
            )
        return m["id"], int(m["cursor"])

    # operations ----------------------------------------------------------------------------------

    @operation
    async def watch(
        self,
        path: str,
        recursive: bool = True,
        events: Kinds | None = None,
        include: Patterns | None = None,
        exclude: Patterns | None = None,
        session_id: str | None = None,
    ) -> AsyncIterator[AnyWatchEvent]:
        """Stream the changes under ``path``: ``watching``, ``event``..., then ``stopped``/``error``."""
        options = self.options(path, recursive, events, include, exclude)
        watcher, _ = self._acquire(options)
        sub = watcher.subscribe()
        try:
            await watcher.ready()
            yield WatchingEvent(path=options.path, watch_id=watcher.id)
            async for event in sub.events():
                yield event
        finally:
            watcher.unsubscribe(sub)

    @operation
    async def check_changes(
        self,
        path: str,
        recursive: bool = True,
        events: Kinds | None = None,
        include: Patterns | None = None,
        exclude: Patterns | None = None,
        session_id: str | None = None,
        since: str | None = None,
    ) -> CheckChangesResult:
        """Whether anything under ``path`` changed since the version ``since``."""
        token = self._parse_since(since) if since is not None else None
        options = self.options(path, recursive, events, include, exclude)
        watcher, _ = self._acquire(options)
        watcher.retained = True
        try:
            await watcher.ready()
        finally:
            watcher.touch()  # a check that was cancelled still leaves the state to expire
        watcher.drain()  # up to date with what the kernel has queued
        version = f"{watcher.id}:{watcher.cursor}"
        if token is None:
            return CheckChangesResult(success=True, status="unchanged", version=version, timestamp=now_iso())
        watch_id, cursor = token
        if watch_id == watcher.id:
            if cursor > watcher.cursor:
                raise validation_error(
                    "since refers to a newer version than the current watch state",
                    "since",
                    since=since,
                    currentVersion=version,
                )
            status: Literal["unchanged", "changed"] = "unchanged" if cursor == watcher.cursor else "changed"
            return CheckChangesResult(success=True, status=status, version=version, timestamp=now_iso())
        reason: Literal["expired", "restarted"]
        number, _, boot = watch_id.removeprefix("watch-").partition("-")
        if boot == self.boot and number.isdigit():
            if int(number) > self.counter:
                raise validation_error("since refers to a watch this server never had", "since", since=since)
            reason = "expired"
        else:
            reason = "restarted"
        return CheckChangesResult(success=True, status="resync", reason=reason, version=version, timestamp=now_iso())

    @operation(name="list")
    async def list_watches(self) -> WatchList:
        """The active watchers (diagnostics: who watches what, and how many subscribers)."""
        return WatchList(success=True, watches=[w.info() for w in self.by_id.values()], timestamp=now_iso())
