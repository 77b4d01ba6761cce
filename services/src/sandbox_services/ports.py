"""Ports: watch a local port until it is ready (contract sections a4 and b5).

``watch_port`` is a stream: ``watching``, then one of ``ready`` / ``process_exited`` /
``error``, then the end. It polls the port every ``interval`` ms (clamped to 100..10000):
in ``tcp`` mode a connect, in ``http`` mode a ``GET path`` whose status must fall in
``statusMin..statusMax``. Each probe is bounded by ``probe_timeout_ms`` (5 s, as upstream).
The probe goes to 127.0.0.1 and, when that refuses, to ::1 (a server bound to "localhost"
may listen on either). Redirects are not followed: a 3xx is a status like any other.

With ``processId`` the watch also ends, with ``process_exited``, when that background process
exits first; an unknown id gives the ``error`` event "Process not found". The watch never
times out by itself: the client ends it by closing the stream (as upstream: the SDK's
``waitForPort`` owns the deadline).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal, TypeVar

import msgspec

from sandbox_core.contract.models.ports import (
    AnyPortWatchEvent,
    PortErrorEvent,
    PortProcessExitedEvent,
    PortReadyEvent,
    PortWatchingEvent,
)
from sandbox_core.errors import ErrorCode, SandboxError, validation_error
from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceContext, ServiceSpec, operation

from .params import HttpStatus, PositiveMs
from .processes import ProcessesService, ProcessRecord

T = TypeVar("T")

MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 10_000
_MAX_STATUS_LINE = 8192
_MAX_INFORMATIONAL = 8  # 1xx responses skipped before the final status


class PortsSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.ports]``"""

    probe_timeout_ms: PositiveMs = 5000  # one connect or GET, as upstream


class _NotReady(Exception):
    """A probe found the port not (yet) ready."""


async def _read_status(reader: asyncio.StreamReader) -> int:
    """The final status code of an HTTP/1.x response, skipping 1xx interim responses."""
    for _ in range(_MAX_INFORMATIONAL + 1):
        line = await reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
            raise _NotReady(f"not an HTTP response: {line[:80]!r}")
        code = int(parts[1])
        if not 100 <= code < 200 or code == 101:
            return code
        while (await reader.readline()).strip():  # skip the interim response's headers
            pass
    raise _NotReady("too many informational responses")


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (its outcome stays with the task)."""
    if not task.done():
        task.cancel()
        await asyncio.wait((task,))


def request_target(path: str) -> str:
    """The request target for ``path``: a leading ``/``, no fragment, unsafe bytes percent-encoded."""
    path = path.split("#", 1)[0] or "/"
    if not path.startswith("/"):
        path = "/" + path
    return urllib.parse.quote(path, safe="/:@!$&'()*+,;=?%~")


class PortsService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.registry = ctx.registry
        self.log = ctx.log
        settings: PortsSettings = ctx.settings
        self.probe_timeout = settings.probe_timeout_ms / 1000

    # probes ---------------------------------------------------------------------------------

    async def _connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection("127.0.0.1", port, limit=_MAX_STATUS_LINE)
        except OSError as first:
            try:
                return await asyncio.open_connection("::1", port, limit=_MAX_STATUS_LINE)
            except OSError:
                raise _NotReady(str(first)) from None

    async def probe(
        self, port: int, mode: str, target: str, status_min: int, status_max: int
    ) -> tuple[bool, int | None]:
        """One check of the port: (ready, HTTP status or None). Never raises for a port that is down."""
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.probe_timeout):
                reader, writer = await self._connect(port)
                if mode == "tcp":
                    return True, None
                writer.write(
                    (
                        f"GET {target} HTTP/1.1\r\nHost: localhost:{port}\r\n"
                        "User-Agent: sandbox-port-watch\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                    ).encode("ascii")
                )
                await writer.drain()
                code = await _read_status(reader)
                return status_min <= code <= status_max, code
        except (_NotReady, OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False, None
        finally:
            if writer is not None:
                writer.close()  # the request fits the socket buffer, so this closes at once

    # process lookup ----------------------------------------------------------------------------

    def _find_process(self, process_id: str) -> ProcessRecord | None:
        if not self.registry.has("processes"):
            return None
        return self.registry.get("processes", ProcessesService).find(process_id)

    @staticmethod
    async def _race(work: Coroutine[Any, Any, T], exited: asyncio.Task[int | None] | None) -> tuple[T | None, bool]:
        """Run ``work`` until it completes or the watched process exits: (result, exited first)."""
        if exited is None:
            return await work, False
        task = asyncio.create_task(work)
        try:
            await asyncio.wait((task, exited), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(task)
        if not task.cancelled():
            return task.result(), False
        return None, True

    @staticmethod
    def _exit_code(record: ProcessRecord, exited: asyncio.Task[int | None]) -> int | None:
        if exited.done() and not exited.cancelled() and exited.exception() is None:
            code = exited.result()
            if isinstance(code, int):
                return code
        return record.exit_code

    # operations -------------------------------------------------------------------------------

    @operation
    async def watch_port(
        self,
        port: int,
        mode: Literal["http", "tcp"],
        path: str = "/",
        status_min: HttpStatus = 200,
        status_max: HttpStatus = 399,
        process_id: str | None = None,
        interval: float = 500,
    ) -> AsyncIterator[AnyPortWatchEvent]:
        """Poll ``port`` until it is ready; yield ``watching`` then ``ready``/``process_exited``/``error``."""
        if not 1 <= port <= 65535:
            raise SandboxError(
                ErrorCode.INVALID_PORT_NUMBER,
                f"Invalid port number {port}: must be between 1 and 65535",
                {"port": port, "field": "port"},
            )
        if status_min > status_max:  # no status could ever match: the watch would never end
            raise validation_error(
                f"statusMin ({status_min}) must not be greater than statusMax ({status_max})", "statusMin"
            )
        delay = max(MIN_INTERVAL_MS, min(float(interval), MAX_INTERVAL_MS)) / 1000
        target = request_target(path)
        record = self._find_process(process_id) if process_id is not None else None
        yield PortWatchingEvent(port=port)
        if process_id is not None and record is None:
            yield PortErrorEvent(port=port, error="Process not found")
            return
        exited = asyncio.create_task(record.wait()) if record is not None else None
        try:
            while True:
                if record is not None and exited is not None and (exited.done() or record.done):
                    yield PortProcessExitedEvent(port=port, exit_code=self._exit_code(record, exited))
                    return
                try:
                    outcome, gone = await self._race(self.probe(port, mode, target, status_min, status_max), exited)
                except Exception as exc:  # a bug of ours: end the watch with an error event
                    self.log.error("port_watch.failed", port=port, error=repr(exc), exc_info=exc)
                    yield PortErrorEvent(port=port, error=f"Port watch failed: {type(exc).__name__}")
                    return
                if outcome is not None and outcome[0]:
                    yield PortReadyEvent(port=port, status_code=outcome[1])
                    return
                if not gone:
                    await self._race(asyncio.sleep(delay), exited)
        finally:
            if exited is not None:
                await _cancel(exited)


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``ports`` plugin (entry point): this service alone."""
    register(ServiceSpec("ports", PortsService, PortsSettings, "wait for a local port to be ready"))
