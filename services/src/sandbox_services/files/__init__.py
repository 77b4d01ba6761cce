"""Files: read, write, stream, list and manage files (contract a2, b4), in Python, never a shell.

Relative paths resolve against the session's *current* directory, read from its shell
without waiting for the session's lock, so a file operation never queues behind a running
foreground command. Blocking filesystem work runs in worker threads (through
:mod:`sandbox_services.offload`, at most eight at a time); streams hold at most one read or
write batch in memory whatever the file size.

Operations with an http route: ``read``, ``read_stream``, ``write``, ``delete``, ``rename``,
``move``, ``mkdir``, ``list_files``, ``exists``. For streaming transports (rpc):
``write_file_stream`` (takes an async iterable of bytes) and ``read_bytes`` (yields raw bytes,
no size cap).

Modules: :mod:`.service` (the settings and operations), :mod:`.paths` (path validation and
resolution), :mod:`.mime` (MIME types), :mod:`.errors` (OSError to the contract's error),
:mod:`.fdio` (blocking fd I/O shared with worker threads), :mod:`.atomic` (temp file and
rename writes), :mod:`.content` (a write's content, decoded batch by batch from the request
body), :mod:`.listing` (directory listings, capped at ``max_list_entries``).
"""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceSpec

from .service import FilesService, FilesSettings

__all__ = ["FilesService", "FilesSettings"]


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``files`` plugin (entry point): this service alone."""
    register(
        ServiceSpec("files", FilesService, FilesSettings, "read, write, stream and list files", requires=("sessions",))
    )
