"""``Sandbox.watch``: watch a directory in the sandbox for changes, or check whether it changed."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING

from sandbox_core.contract.client import _params, _typed
from sandbox_core.contract.models.watch import AnyWatchEvent, CheckChangesResult, WatchEventType, WatchList

if TYPE_CHECKING:
    from sandbox_core.contract.client import Sandbox


def _watch_params(
    path: str,
    recursive: bool | None,
    events: Sequence[WatchEventType] | None,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
    session_id: str | None,
) -> dict[str, object]:
    return _params(
        path=path,
        recursive=recursive,
        events=list(events) if events is not None else None,
        include=list(include) if include is not None else None,
        exclude=list(exclude) if exclude is not None else None,
        sessionId=session_id,
    )


class WatchAPI:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def watch(
        self,
        path: str,
        *,
        recursive: bool | None = None,
        events: Sequence[WatchEventType] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        session_id: str | None = None,
    ) -> AsyncGenerator[AnyWatchEvent, None]:
        """Watch the directory ``path`` (relative: to the server's workspace, which it must be in).

        Yields ``watching`` once the watches are established, then an ``event`` per change, and
        ends with ``stopped`` or ``error``. It has no deadline: stop iterating to end it.
        ``recursive`` defaults to true; ``events`` to every kind but ``attrib``; ``include`` and
        ``exclude`` (globs with ``*``, ``**``, ``?``) are exclusive, and the default excludes
        ``.git``, ``node_modules`` and ``.DS_Store``.
        """
        return _typed(
            self._sb.stream("watch", "watch", **_watch_params(path, recursive, events, include, exclude, session_id)),
            AnyWatchEvent,
        )

    async def check_changes(
        self,
        path: str,
        *,
        since: str | None = None,
        recursive: bool | None = None,
        events: Sequence[WatchEventType] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        session_id: str | None = None,
    ) -> CheckChangesResult:
        """Whether anything under ``path`` changed since ``since`` (a ``version`` this returned).

        Without ``since`` the answer is ``unchanged`` with the current version. ``resync`` means
        the watch behind ``since`` is gone (``expired``) or the server restarted (``restarted``):
        rescan, and use the new ``version``. The same options must be given each time.
        """
        params = _watch_params(path, recursive, events, include, exclude, session_id)
        if since is not None:
            params["since"] = since
        return await self._sb.call_as(CheckChangesResult, "watch", "check_changes", **params)

    async def list(self) -> WatchList:
        """The server's active watches (diagnostics)."""
        return await self._sb.call_as(WatchList, "watch", "list")
