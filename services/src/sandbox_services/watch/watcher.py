"""One watcher: an inotify instance over a directory (and, when recursive, its subdirectories),
shared by every subscriber of identical requests.

inotify comes through :mod:`asyncinotify` (its ``Inotify`` with ``sync_timeout=0`` is a
non-blocking source of parsed events); the watcher reads it from the event loop with
``add_reader``, so a caller can also catch up with the kernel's queue synchronously
(:meth:`Watcher.drain`, what ``check_changes`` does before it answers).

Changes are collected in a coalescing window (``coalesce_ms``, 75 ms by default), keyed by
``eventType|path|isDirectory``, then offered to every subscriber. A subscriber holds at most
``max_pending_events`` distinct pending events: one that falls further behind stops taking
events, is given what it holds, then an ``error`` event saying how many were dropped, and ends
(the others are unaffected; memory never grows). inotify's own overflow (``IN_Q_OVERFLOW``:
the kernel dropped events) ends the watcher with an ``error`` event to every subscriber.

Recursive watches add a watch for each new subdirectory as it appears. A directory created in
the tree is also scanned once its watch is in place: what was created in it before the watch
existed is reported as ``create`` (duplicates of events that also arrived are coalesced).
Symbolic links are never followed, so a watch never reaches outside its directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asyncinotify import Event, Inotify, Mask, Watch
from structlog.typing import FilteringBoundLogger

from sandbox_core.clock import iso_ms, now_iso
from sandbox_core.contract.models.watch import (
    FileWatchEvent,
    WatchErrorEvent,
    WatchEventType,
    WatchInfo,
    WatchStoppedEvent,
)
from sandbox_core.errors import ErrorCode, SandboxError, validation_error

from .globs import PathFilter

if TYPE_CHECKING:
    from .service import WatchSettings

#: The inotify events behind each kind (``close_write`` is a ``modify``, as upstream).
KIND_MASKS: dict[WatchEventType, Mask] = {
    "create": Mask.CREATE,
    "modify": Mask.MODIFY | Mask.CLOSE_WRITE,
    "delete": Mask.DELETE,
    "move_from": Mask.MOVED_FROM,
    "move_to": Mask.MOVED_TO,
    "attrib": Mask.ATTRIB,
}
#: What a recursive watch needs of every directory to follow its subdirectories.
_TREE_MASK = Mask.CREATE | Mask.MOVED_FROM | Mask.MOVED_TO
#: What the root's watch needs to notice the root itself going away.
_SELF_MASK = Mask.DELETE_SELF | Mask.MOVE_SELF
_FLAGS = Mask.ONLYDIR | Mask.DONT_FOLLOW | Mask.EXCL_UNLINK
#: Events read per loop callback at most (the rest on the next one: other work goes on).
_DRAIN_BATCH = 4096
#: Events one read of the inotify descriptor takes at most (asyncinotify's ``cache_size``).
_READ_EVENTS = 256
#: Directories set up between two yields to the event loop while a watch is established.
_WALK_SLICE = 64

Key = tuple[str, str, bool]


@dataclass(frozen=True)
class WatchOptions:
    """A request's watch, normalised: identical options share one watcher."""

    path: str  # as reported: the absolute path the caller named, normalised
    real: str  # what is watched: ``path`` with every symbolic link resolved
    recursive: bool
    events: tuple[WatchEventType, ...]
    include: tuple[str, ...] | None
    exclude: tuple[str, ...] | None

    @property
    def key(self) -> tuple[object, ...]:
        return (self.path, self.real, self.recursive, self.events, self.include, self.exclude)


class _Stop(Exception):
    """The watcher cannot go on (its message is the subscribers' ``error``; ``error``, when
    given, is the answer to a request still waiting for the watch to be established)."""

    def __init__(self, message: str, error: SandboxError | None = None) -> None:
        super().__init__(message)
        self.error = error


class DirectoryBudget:
    """The directories watched by all the watchers of a server (inotify watches are a per-user
    kernel resource, shared with the sandboxed code), bounded by ``max_total_directories``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class Subscriber:
    """One stream's share of a watcher: a bounded map of pending events and a wake-up."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: dict[Key, FileWatchEvent] = {}
        self.dropped = 0
        self.end: WatchStoppedEvent | WatchErrorEvent | None = None
        self._wake = asyncio.Event()

    def offer(self, batch: dict[Key, FileWatchEvent]) -> int:
        """Take ``batch``; the number of events dropped because this subscriber is full."""
        if self.end is not None:
            return 0
        if self.dropped:
            self.dropped += len(batch)
            return len(batch)
        dropped = 0
        for key, event in batch.items():
            if key in self.pending or len(self.pending) < self.limit:
                self.pending[key] = event
            else:
                dropped += 1
        self.dropped += dropped
        self._wake.set()
        return dropped

    def finish(self, end: WatchStoppedEvent | WatchErrorEvent) -> None:
        if self.end is None:
            self.end = end
            self._wake.set()

    async def events(self) -> AsyncIterator[FileWatchEvent | WatchStoppedEvent | WatchErrorEvent]:
        """The subscriber's events, then its terminal event."""
        while True:
            if self.pending:
                batch, self.pending = self.pending, {}
                for event in batch.values():
                    yield event
                continue
            if self.dropped:
                yield WatchErrorEvent(
                    error=f"Watch subscriber fell behind: {self.dropped} events dropped (more than"
                    f" {self.limit} pending); watch again and resync (checkChanges) to catch up"
                )
                return
            if self.end is not None:
                yield self.end
                return
            self._wake.clear()
            await self._wake.wait()


class Watcher:
    """An inotify instance over one directory tree and its subscribers."""

    def __init__(
        self,
        watch_id: str,
        options: WatchOptions,
        settings: WatchSettings,
        log: FilteringBoundLogger,
        on_close: Callable[[Watcher], None],
        budget: DirectoryBudget,
    ) -> None:
        self.id = watch_id
        self.budget = budget
        self.options = options
        self.settings = settings
        self.log = log.bind(watch_id=watch_id, path=options.path)
        self._on_close = on_close
        self.filter = PathFilter(options.include, options.exclude)
        self.mask = _FLAGS
        for kind in options.events:
            self.mask |= KIND_MASKS[kind]
        if options.recursive:
            self.mask |= _TREE_MASK
        self.cursor = 0
        self.subscribers: set[Subscriber] = set()
        self.retained = False
        self.closed = False
        self.started_at = time.time()
        self.last_used = time.monotonic()
        self.dirs: dict[int, tuple[Watch, str]] = {}  # watch descriptor → (watch, path relative to the root)
        self.root_wd = -1
        self._inotify: Inotify | None = None
        self._reading = False
        self._window: dict[Key, FileWatchEvent] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.setup: asyncio.Task[None] = self._loop.create_task(self._start(), name=f"watch-setup {watch_id}")

    # setup -------------------------------------------------------------------------------------

    async def _start(self) -> None:
        try:
            try:
                self._inotify = Inotify(cache_size=_READ_EVENTS, sync_timeout=0)
            except OSError as exc:
                if exc.errno == errno.EMFILE:
                    raise self._busy(
                        "Cannot create an inotify instance: the system's limit of inotify instances is reached",
                        "fs.inotify.max_user_instances",
                    ) from None
                raise _Stop(f"Cannot create an inotify instance: {exc.strerror}") from None
            walked = 0
            async with asyncio.timeout(self.settings.setup_timeout_ms / 1000):
                for _ in self._add_tree("", synthetic=False):
                    walked += 1
                    if walked % _WALK_SLICE == 0:
                        await asyncio.sleep(0)
            self._loop.add_reader(self._inotify.fd, self.drain)
            self._reading = True
        except TimeoutError:
            message = (
                f"Timed out setting up watches after {self.settings.setup_timeout_ms} ms"
                f" ({len(self.dirs)} directories so far)"
            )
            self.stop(WatchErrorEvent(error=message))
            raise SandboxError(ErrorCode.WATCH_START_ERROR, message, {"path": self.options.path}) from None
        except _Stop as exc:
            self.stop(WatchErrorEvent(error=str(exc)))
            if exc.error is not None:
                raise exc.error from None
            raise SandboxError(ErrorCode.WATCH_START_ERROR, str(exc), {"path": self.options.path}) from None
        except BaseException:
            self.stop(WatchStoppedEvent(reason="The watch was stopped before it was established"))
            raise
        self.log.info("watch.started", directories=len(self.dirs), recursive=self.options.recursive)

    async def ready(self) -> None:
        """Wait until the watches are established (SandboxError when they could not be)."""
        await asyncio.wait((self.setup,))  # a waiter that is cancelled leaves the setup running
        if self.setup.cancelled():
            raise SandboxError(
                ErrorCode.WATCH_START_ERROR,
                "The watch was stopped before it was established",
                {"path": self.options.path},
            )
        exc = self.setup.exception()
        if exc is not None:
            raise exc

    def _add_tree(self, top: str, *, synthetic: bool) -> Iterator[None]:
        """Watch ``top`` (relative to the root) and, when recursive, every directory below it
        (excluded ones and symbolic links left out), yielding after each directory. With
        ``synthetic``, whatever is found below ``top`` is reported as created."""
        assert self._inotify is not None
        stack = [top]
        while stack:
            rel = stack.pop()
            full = os.path.join(self.options.real, rel) if rel else self.options.real
            mask = self.mask | _SELF_MASK if not rel else self.mask
            self._check_room()
            try:
                watch = self._inotify.add_watch(full, mask)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise self._busy(
                        "The system's limit of inotify watches is reached", "fs.inotify.max_user_watches"
                    ) from None
                if not rel:
                    raise _Stop(f"Cannot watch {self.options.path}: {exc.strerror}") from None
                continue  # gone already, replaced by a file or a link, or unreadable: not ours to watch
            if not rel:
                self.root_wd = watch.wd
            self._track(watch, rel)
            if self.options.recursive:
                try:
                    with os.scandir(full) as entries:
                        for entry in entries:
                            child = f"{rel}/{entry.name}" if rel else entry.name
                            if self.filter.excluded(child):
                                continue
                            try:
                                is_dir = entry.is_dir(follow_symlinks=False)
                            except OSError:
                                continue
                            if synthetic:
                                self._emit("create", child, is_dir)
                            if is_dir:
                                stack.append(child)
                except OSError:
                    pass  # removed or unreadable meanwhile: its own events say so
            yield None

    def _check_room(self) -> None:
        """Refuse one more directory past ``max_directories`` (this watch) or past
        ``max_total_directories`` (every watch of the server)."""
        limit = self.settings.max_directories
        if len(self.dirs) >= limit:
            message = (
                f"The watch has more than {limit} directories (services.watch.max_directories):"
                " watch a smaller tree or exclude some"
            )
            details = {"path": self.options.path, "limit": limit, "setting": "services.watch.max_directories"}
            raise _Stop(message, validation_error(message, "path", **details))
        budget = self.budget
        if budget.used >= budget.limit:
            others = budget.used - len(self.dirs)
            message = (
                f"Too many directories watched: all the watches together may watch {budget.limit}"
                f" (services.watch.max_total_directories) and other watches hold {others} of them:"
                " end other watches or watch a smaller tree"
            )
            details = {
                "path": self.options.path,
                "limit": budget.limit,
                "setting": "services.watch.max_total_directories",
                "heldByOtherWatches": others,
            }
            raise _Stop(message, SandboxError(ErrorCode.RESOURCE_BUSY, message, details))

    def _busy(self, message: str, setting: str) -> _Stop:
        """The kernel refused (a system-wide limit shared with the sandboxed code): 409 RESOURCE_BUSY."""
        details = {"path": self.options.path, "setting": setting}
        message = f"{message} ({setting}): end other watches or watch a smaller tree"
        return _Stop(message, SandboxError(ErrorCode.RESOURCE_BUSY, message, details))

    def _track(self, watch: Watch, rel: str) -> None:
        before = len(self.dirs)
        self.dirs[watch.wd] = (watch, rel)
        self.budget.used += len(self.dirs) - before  # (the same directory again is the same watch)

    def _untrack(self, wd: int) -> tuple[Watch, str] | None:
        entry = self.dirs.pop(wd, None)
        if entry is not None:
            self.budget.used -= 1
        return entry

    def _drop_tree(self, top: str) -> None:
        """Stop watching ``top`` and what is below it (it was moved away)."""
        assert self._inotify is not None
        prefix = top + "/"
        for wd, (watch, rel) in list(self.dirs.items()):
            if rel == top or rel.startswith(prefix):
                self._untrack(wd)
                with contextlib.suppress(OSError):
                    self._inotify.rm_watch(watch)

    # events ------------------------------------------------------------------------------------

    def drain(self) -> None:
        """Handle every event the kernel has queued for this watcher (the loop calls this when
        the descriptor is readable; ``check_changes`` calls it to be up to date)."""
        if self.closed or self._inotify is None or not self._reading:
            return
        try:
            for _ in range(_DRAIN_BATCH):
                event = self._inotify.sync_get()
                if event is None:
                    return
                self._handle(event)
                if self.closed:
                    return
            # more may wait in asyncinotify's buffer, where the descriptor's readiness does not
            # show them: go on soon, after the loop's other work
            self._loop.call_soon(self.drain)
        except _Stop as exc:
            self.stop(WatchErrorEvent(error=str(exc)))
        except OSError as exc:
            self.log.error("watch.read_failed", error=repr(exc))
            self.stop(WatchErrorEvent(error=f"Reading file events failed: {exc.strerror or exc}"))

    def _handle(self, event: Event) -> None:
        mask = event.mask
        if Mask.Q_OVERFLOW in mask:
            self.log.warning("watch.inotify_overflow")
            self.stop(
                WatchErrorEvent(
                    error="inotify event queue overflowed (fs.inotify.max_queued_events): events were lost;"
                    " watch again and resync (checkChanges) to catch up"
                )
            )
            return
        watch = event.watch
        if watch is None:
            return
        wd = watch.wd
        if Mask.IGNORED in mask:
            self._untrack(wd)
            if wd == self.root_wd:
                self.stop(WatchStoppedEvent(reason="The watched directory is gone"))
            return
        entry = self.dirs.get(wd)
        if entry is None:
            return  # a directory we stopped watching: its last events
        rel_dir = entry[1]
        if event.name is None:  # the directory itself (its parent reports the rest)
            if wd != self.root_wd:
                return
            if mask & (Mask.DELETE_SELF | Mask.UNMOUNT):
                self.stop(WatchStoppedEvent(reason="The watched directory was deleted"))
            elif Mask.MOVE_SELF in mask:
                self.stop(WatchStoppedEvent(reason="The watched directory was moved"))
            elif Mask.ATTRIB in mask:
                self._emit("attrib", "", True)
            return
        name = os.fsdecode(event.name)
        rel = f"{rel_dir}/{name}" if rel_dir else name
        is_dir = Mask.ISDIR in mask
        if self.filter.excluded(rel):
            return
        created = Mask.CREATE in mask
        kind = _kind(mask)
        if kind is not None:
            self._emit(kind, rel, is_dir)
        if is_dir and self.options.recursive:
            if created or Mask.MOVED_TO in mask:
                for _ in self._add_tree(rel, synthetic=created):
                    pass
            elif Mask.MOVED_FROM in mask:
                self._drop_tree(rel)

    def _emit(self, kind: WatchEventType, rel: str, is_dir: bool) -> None:
        if kind not in self.options.events or (rel and not self.filter.reported(rel)):
            return
        self.cursor += 1
        root = self.options.path
        path = root if not rel else (f"{root}/{rel}" if root != "/" else f"/{rel}")
        key = (kind, path, is_dir)
        self._window[key] = FileWatchEvent(event_type=kind, path=path, is_directory=is_dir, timestamp=now_iso())
        if len(self._window) >= self.settings.max_pending_events:
            self._flush()  # a storm: no window grows past what a subscriber may hold
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_later(self.settings.coalesce_ms / 1000, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, self._window = self._window, {}
        if not batch:
            return
        for sub in self.subscribers:
            dropped = sub.offer(batch)
            if dropped and dropped == sub.dropped:  # the first drop: say so once
                self.log.warning("watch.subscriber_overflow", limit=sub.limit)

    # subscribers and lifetime --------------------------------------------------------------------

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.settings.max_pending_events)
        self.subscribers.add(sub)
        self.last_used = time.monotonic()
        self._cancel_expiry()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self.last_used = time.monotonic()
        if self.closed or self.subscribers:
            return
        if self.retained:
            self.touch()
        else:
            self.stop(WatchStoppedEvent(reason="Watch stopped after last subscriber disconnected"))

    def touch(self) -> None:
        """Mark the watcher used now: a retained one with no subscriber expires after
        ``retain_idle_ms`` from now."""
        self.last_used = time.monotonic()
        self._cancel_expiry()
        if self.retained and not self.subscribers and not self.closed:
            self._expiry = self._loop.call_later(self.settings.retain_idle_ms / 1000, self._expire)

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expire(self) -> None:
        self._expiry = None
        self.stop(WatchStoppedEvent(reason="Retained change state expired after idle period"))

    def stop(self, end: WatchStoppedEvent | WatchErrorEvent) -> None:
        """End the watcher: subscribers get what is pending, then ``end``."""
        if self.closed:
            return
        self.closed = True
        self._flush()
        self._cancel_expiry()
        inotify, self._inotify = self._inotify, None
        if inotify is not None:
            if self._reading:
                self._loop.remove_reader(inotify.fd)
                self._reading = False
            inotify.close()
        self.budget.used -= len(self.dirs)
        self.dirs.clear()
        for sub in self.subscribers:
            sub.finish(end)
        if not self.setup.done() and self.setup is not asyncio.current_task():
            self.setup.cancel()
        self._on_close(self)
        what = end.error if isinstance(end, WatchErrorEvent) else end.reason
        self.log.info("watch.stopped", why=what, cursor=self.cursor, error=isinstance(end, WatchErrorEvent))

    def info(self) -> WatchInfo:
        o = self.options
        return WatchInfo(
            id=self.id,
            path=o.path,
            recursive=o.recursive,
            events=list(o.events),
            include=list(o.include) if o.include is not None else None,
            exclude=list(o.exclude) if o.exclude is not None else None,
            subscribers=len(self.subscribers),
            retained=self.retained,
            cursor=self.cursor,
            directories=len(self.dirs),
            started_at=iso_ms(self.started_at),
        )


def _kind(mask: Mask) -> WatchEventType | None:
    if Mask.CREATE in mask:
        return "create"
    if Mask.DELETE in mask:
        return "delete"
    if Mask.MOVED_FROM in mask:
        return "move_from"
    if Mask.MOVED_TO in mask:
        return "move_to"
    if mask & (Mask.MODIFY | Mask.CLOSE_WRITE):
        return "modify"
    if Mask.ATTRIB in mask:
        return "attrib"
    return None


__all__ = ["KIND_MASKS", "DirectoryBudget", "Subscriber", "WatchOptions", "Watcher"]
