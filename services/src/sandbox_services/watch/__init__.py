"""File watch over inotify (contract sections a9 and b6): see :mod:`.service`."""

from .service import WatchService, WatchSettings

__all__ = ["WatchService", "WatchSettings"]
