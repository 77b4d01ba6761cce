"""File watch over inotify (contract sections a9 and b6): see :mod:`.service`."""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceSpec

from .service import WatchService, WatchSettings

__all__ = ["WatchService", "WatchSettings"]


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``watch`` plugin (entry point): this service alone."""
    register(ServiceSpec("watch", WatchService, WatchSettings, "watch directories for changes (inotify)"))
