"""Terminals: one pseudo-terminal per session (contract section a11), shared by every reader.

A session's terminal is started by its first ``attach``: a fresh interactive ``bash`` on a
pty (``TERM=xterm-256color``), in the session's current directory and with the environment
its shell has exported (an ``env -0`` snapshot taken in the session's shell; when the shell is
busy with a command, the environment the session's shell started with), carrying the session's
mark and moved into the session's cgroup before it runs anything, so it ends with the session.

Output goes into one bounded ring of the last ``replay_bytes`` bytes (:class:`.output.OutputRing`):
each attach gets what the ring holds (the replay), then follows it live. Readers share the
ring, so they cost no memory of their own. A reader that lags ``replay_bytes`` behind pauses
the terminal: the server stops reading the pty, so the programs in it block on their writes
(backpressure; a slow reader slows the terminal, as a slow screen would). A reader that takes
nothing for ``stalled_reader_s`` while the terminal waits for it is dropped (its stream fails
with ``OPERATION_INTERRUPTED``), and the terminal runs on for the others. Server memory is
the ring and one frame in flight per reader, however many readers and however slow.

Keys go in with ``write`` (waiting while the pty's input queue is full), the size changes
with ``resize`` (``TIOCSWINSZ``: the programs get ``SIGWINCH``). The terminal ends when its
shell exits (readers get an ``exit`` event; the next attach starts a fresh one), when its
session is deleted and when the server stops (its processes get SIGHUP, then SIGTERM and
SIGKILL after the session's grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import msgspec
from msgspec import Meta
from structlog.typing import FilteringBoundLogger

from sandbox_core.contract.models.terminals import (
    TerminalAck,
    TerminalData,
    TerminalEvent,
    TerminalExit,
    TerminalReplay,
)
from sandbox_core.errors import ErrorCode, SandboxError, not_found, validation_error
from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceContext, ServiceSpec, operation

from .output import Gap, OutputRing, RingReader
from .params import PositiveInt, PositiveSeconds
from .proctree import kill_tree, remember_tree
from .sessions import DISABLE_SESSION, SESSION_MARK, Session, SessionsService, check_session_id
from .spawn import Child, set_once, spawn

#: A terminal's width or height: the kernel keeps them as unsigned 16-bit numbers.
Dimension = Annotated[int, Meta(ge=1, le=65535)]

#: Bytes read from the pty at a time; output is handed to a reader in events of at most this.
READ_SIZE = 64 * 1024
#: At the end, output still in the pty is read up to this much before it is closed.
DRAIN_MAX = 1024 * 1024
#: How long the environment snapshot may take before the session's starting one is used.
ENV_SNAPSHOT_S = 5.0
#: The snapshot: no alias, function or shadowing builtin of the user's can stand in for it.
ENV_SNAPSHOT = "\\builtin command env -0"
TERM = "xterm-256color"
#: The terminal's shell: ``$1`` is the pty's path, ``$2`` the session's cgroup.procs (or
#: empty). The wrapper moves itself into the cgroup, then opens the pty as a session leader
#: (so it becomes the controlling terminal: job control, ^C, ^Z), then becomes ``bash``.
_START = '[ -z "$2" ] || { echo 0 >"$2"; } 2>/dev/null; [ -z "$1" ] || exec bash 0<>"$1" 1>&0 2>&0; exec bash'


class TerminalSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.terminals]``"""

    #: output kept per terminal and replayed on attach; also how far a reader may lag before
    #: the terminal waits for it
    replay_bytes: PositiveInt = 256 * 1024
    #: a reader that takes no output for this long while the terminal waits for it is dropped
    stalled_reader_s: PositiveSeconds = 10.0


def _ended(session_id: str) -> SandboxError:
    return not_found(f"Session '{session_id}' has no open terminal: attach first", sessionId=session_id)


def _parse_env(raw: bytes) -> dict[str, str]:
    """``env -0`` output as a mapping (names as the kernel has them, values undecoded bytes kept)."""
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


def _usable(directory: str) -> str | None:
    """``directory`` if it is one (a shell's cwd may have been removed since), else None."""
    return directory if os.path.isdir(directory) else None


def _winsize(cols: int, rows: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


class Terminal:
    """One session's pty, its shell and the ring its output goes to."""

    def __init__(
        self,
        session: Session,
        child: Child,
        master: int,
        settings: TerminalSettings,
        log: FilteringBoundLogger,
        on_ended: Callable[[Terminal], None] | None = None,
    ) -> None:
        self.session = session
        self.session_id = session.id
        self.child = child
        self.pid = child.pid
        self.master = master
        self.ring = OutputRing(settings.replay_bytes)
        self.ring.on_pause = self._pause
        self.ring.on_resume = self._resume
        self.stall_s = settings.stalled_reader_s
        self.log = log
        self.on_ended = on_ended
        self.readers: set[RingReader] = set()
        self.dropped: set[RingReader] = set()
        self.exit_code: int | None = None
        self.reason = ""
        self.closing = False
        self.ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._reading = False
        self._stall: asyncio.TimerHandle | None = None
        self._write_lock = asyncio.Lock()
        self._writable: asyncio.Future[None] | None = None
        self._end: asyncio.Task[None] | None = None
        self._grace = 1.0
        self._start_reading()
        child.on_exit(self._child_exited)

    # output --------------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self.closing:
            self._loop.add_reader(self.master, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.master)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: no process has the terminal open any more
            data = b""
        if not data:
            self._stop_reading()
            self.end("Terminal exited")
            return
        self.ring.write("stdout", data)  # may pause us (on_pause) until a lagging reader catches up

    def _pause(self) -> None:
        """A reader lags a whole ring behind: stop reading the pty until it catches up (the
        programs block on their writes), and drop it if it takes nothing for ``stall_s``."""
        self._stop_reading()
        if self._stall is None and not self.closing:
            self._stall = self._loop.call_later(self.stall_s, self._drop_stalled)

    def _resume(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        self._start_reading()

    def _drop_stalled(self) -> None:
        self._stall = None
        for reader in list(self.readers):
            if reader.blocking and self.ring.end - reader.position >= self.ring.capacity:
                self.dropped.add(reader)
                self.log.warning("terminal.reader_dropped", session_id=self.session_id, stalled_s=self.stall_s)
                reader.close()  # no longer holds the ring back: the terminal resumes (on_resume)

    def subscribe(self, replay_limit: int | None = None) -> tuple[bytes, RingReader]:
        """The replay (the ring's last bytes, at most ``replay_limit``) and a reader of
        everything after it, taken together so that nothing is lost or repeated between them."""
        held = self.ring.held()
        limit = min(self.ring.capacity, replay_limit or self.ring.capacity)
        replay = held[-limit:] if len(held) > limit else held
        reader = self.ring.reader(self.ring.end, blocking=True)
        self.readers.add(reader)
        return replay, reader

    def unsubscribe(self, reader: RingReader) -> None:
        reader.close()
        self.readers.discard(reader)
        self.dropped.discard(reader)

    async def output(self, reader: RingReader) -> bytes | None:
        """The next output for ``reader`` (what is there, up to :data:`READ_SIZE`), waiting
        for some; None once the terminal has ended and the reader has had everything."""
        if reader in self.dropped:
            raise SandboxError(
                ErrorCode.OPERATION_INTERRUPTED,
                f"Terminal reader dropped: it took no output for {self.stall_s:g} s while the terminal waited for it",
                {"sessionId": self.session_id},
            )
        try:
            item = await reader.__anext__()
        except StopAsyncIteration:
            return None
        parts: list[bytes] = []
        size = 0
        while True:
            if isinstance(item, Gap):  # only a dropped reader is ever overtaken
                return await self.output(reader)
            parts.append(item.data)
            size += len(item.data)
            if size >= READ_SIZE or self.ring.end <= reader.position:
                break
            item = await reader.__anext__()  # there is more: returns at once
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # input ---------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Write keys to the terminal, waiting while its input queue is full."""
        async with self._write_lock:
            view = memoryview(data)
            while view:
                if self.closing:
                    raise _ended(self.session_id)
                try:
                    written = os.write(self.master, view)
                except BlockingIOError:
                    await self._wait_writable()
                    continue
                except OSError:
                    raise _ended(self.session_id) from None
                view = view[written:]

    async def _wait_writable(self) -> None:
        writable: asyncio.Future[None] = self._loop.create_future()
        self._writable = writable
        self._loop.add_writer(self.master, set_once, writable)
        try:
            await writable
        finally:
            if self._writable is writable:  # (close() removed it already otherwise)
                self._loop.remove_writer(self.master)
                self._writable = None

    def resize(self, cols: int, rows: int) -> None:
        if self.closing:
            raise _ended(self.session_id)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, _winsize(cols, rows))

    # the end -------------------------------------------------------------------------------

    def _child_exited(self, code: int) -> None:
        self.exit_code = code
        self.end("Terminal exited")

    def end(self, reason: str, *, kill: bool = False) -> asyncio.Task[None]:
        """Begin ending the terminal (once); the task finishes when it has ended."""
        if self._end is None:
            self.closing = True  # from now on: no keys, no resize, and the next attach starts a fresh one
            self._end = self._loop.create_task(self._close(reason, kill), name=f"terminal {self.session_id}")
        return self._end

    async def close(self, reason: str, grace: float) -> None:
        """End the terminal and every process on it (SIGHUP, then SIGTERM, SIGKILL after ``grace``)."""
        self._grace = grace
        await asyncio.shield(self.end(reason, kill=True))

    async def _close(self, reason: str, kill: bool) -> None:
        self._stop_reading()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        try:
            self._drain()
            known: set[int] = set()
            alive = self.child.returncode is None
            if alive and kill:
                remember_tree(self.pid, known)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGHUP)  # an interactive bash passes it on to its jobs
            if self._writable is not None:
                self._loop.remove_writer(self.master)
                if not self._writable.done():
                    self._writable.set_result(None)  # the writer sees `closing` and fails
                self._writable = None
            os.close(self.master)  # a hangup for whatever still has the terminal open
            if alive and kill:
                await kill_tree(self.pid, grace=self._grace, known=known)
            with contextlib.suppress(TimeoutError):
                self.exit_code = await asyncio.wait_for(self.child.wait(), 5.0)
        finally:  # whatever failed above, readers get what is left, then the end
            self.reason = reason
            self.ring.close()
            self.ended.set()
            if self.on_ended is not None:
                self.on_ended(self)
        self.log.info("terminal.ended", session_id=self.session_id, reason=reason, exit_code=self.exit_code)

    def _drain(self) -> None:
        """Take what the shell wrote last (still in the pty), up to :data:`DRAIN_MAX` bytes."""
        taken = 0
        while taken < DRAIN_MAX:
            try:
                data = os.read(self.master, READ_SIZE)
            except OSError:  # nothing more now (EAGAIN), or nobody has it open (EIO)
                return
            if not data:
                return
            taken += len(data)
            self.ring.write("stdout", data)


class TerminalsService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.registry = ctx.registry
        self.settings: TerminalSettings = ctx.settings
        self.log = ctx.log
        self.terminals: dict[str, Terminal] = {}
        self._starting: dict[str, asyncio.Task[Terminal]] = {}
        self._grace = 1.0

    @property
    def sessions(self) -> SessionsService:
        return self.registry.get("sessions", SessionsService)

    async def startup(self) -> None:
        sessions = self.sessions
        self._grace = sessions.grace
        sessions.on_destroy.append(self._session_destroyed)

    async def aclose(self) -> None:
        for task in list(self._starting.values()):
            task.cancel()
        await asyncio.gather(
            *(t.close("Server stopping", self._stop_grace()) for t in list(self.terminals.values())),
            return_exceptions=True,
        )
        self.terminals.clear()

    def _stop_grace(self) -> float:
        """SIGTERM to SIGKILL for a terminal's processes: the sessions' grace, or less while the
        server stops (the registry's ``stop_grace``)."""
        return min(self._grace, self.registry.stop_grace) if self.registry.closing else self._grace

    async def _session_destroyed(self, session: Session) -> None:
        term = self.terminals.get(session.id)
        if term is not None and term.session is session:
            await term.close("Server stopping" if self.registry.closing else "Session deleted", self._stop_grace())

    # starting ------------------------------------------------------------------------------

    @staticmethod
    def _check(session_id: str) -> str:
        sid = check_session_id(session_id)
        if sid == DISABLE_SESSION:
            raise validation_error(f"'{DISABLE_SESSION}' has no terminal: name a session", "sessionId")
        return sid

    def _open(self, session_id: str) -> Terminal:
        term = self.terminals.get(self._check(session_id))
        if term is None or term.closing:
            raise _ended(session_id)
        return term

    def _touch(self, term: Terminal) -> None:
        """The session is in use (for ``idle_timeout_s``) while keys go in or output goes out."""
        term.session.last_used = time.monotonic()

    async def _terminal(self, session_id: str, cols: int, rows: int) -> Terminal:
        """The session's open terminal, started if it has none (concurrent attaches share one start)."""
        term = self.terminals.get(session_id)
        if term is not None and not term.closing:
            if self.sessions.sessions.get(session_id) is term.session:
                return term
            await term.close("Session replaced", self._grace)  # `create` replaced a session whose shell had died
        task = self._starting.get(session_id)
        if task is None:
            task = asyncio.ensure_future(self._start(session_id, cols, rows))
            self._starting[session_id] = task

            def done(finished: asyncio.Task[Terminal]) -> None:
                if self._starting.get(session_id) is finished:
                    del self._starting[session_id]
                if not finished.cancelled():
                    finished.exception()  # retrieved here: an attach that went away leaves no warning

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _environment(self, session: Session) -> dict[str, str]:
        """What the session's shell has exported now (``env -0`` run in it), or, while it is
        busy with a command (or the snapshot fails), the environment it started with."""
        sessions = self.sessions
        if not session.lock.locked():
            try:
                code, out, _ = await asyncio.wait_for(
                    sessions.run(session.id, ENV_SNAPSHOT, timeout_ms=int(ENV_SNAPSHOT_S * 1000)), ENV_SNAPSHOT_S
                )
            except (SandboxError, TimeoutError):
                pass
            else:
                env = _parse_env(out) if code == 0 else {}
                if env:
                    return env
        return sessions.shell_env(session)

    async def _start(self, session_id: str, cols: int, rows: int) -> Terminal:
        sessions = self.sessions
        session = sessions.get_or_create(session_id)
        env = await self._environment(session)
        if session.destroyed or sessions.sessions.get(session_id) is not session:
            raise SandboxError(
                ErrorCode.SESSION_DESTROYED, f"Session '{session_id}' was destroyed", {"sessionId": session_id}
            )
        cwd = _usable(sessions.cwd_of(session_id)) or sessions._start_dir(session)
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        env.update({"TERM": TERM, SESSION_MARK: session_id})
        master, slave = os.openpty()
        try:
            attrs = termios.tcgetattr(slave)
            attrs[0] |= getattr(termios, "IUTF8", 0)  # line editing erases whole UTF-8 characters
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize(cols, rows))
            path = os.ttyname(slave)
            procs = session.cgroup.procs if session.cgroup is not None else ""
            child = spawn(
                ["bash", "-c", _START, "bash", path, procs],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(master)
            raise SandboxError(
                ErrorCode.INTERNAL_ERROR, f"Failed to start the terminal: {exc}", {"sessionId": session_id}
            ) from None
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        term = Terminal(session, child, master, self.settings, self.log, on_ended=self._forget)
        self.terminals[session_id] = term
        self.log.info("terminal.started", session_id=session_id, pid=child.pid, cols=cols, rows=rows)
        return term

    def _forget(self, term: Terminal) -> None:
        if self.terminals.get(term.session_id) is term:
            del self.terminals[term.session_id]

    # operations ----------------------------------------------------------------------------

    @operation
    async def attach(
        self,
        session_id: str,
        cols: Dimension = 80,
        rows: Dimension = 24,
        replay_bytes: PositiveInt | None = None,
    ) -> AsyncIterator[TerminalEvent]:
        """Attach to the session's terminal (started now if it has none, ``cols`` x ``rows``):
        a ``replay`` event with its recent output (at most ``replay_bytes``), then ``data``
        events live, then an ``exit`` event when it ends. A reader that takes nothing for
        ``stalled_reader_s`` while the terminal waits for it fails with OPERATION_INTERRUPTED."""
        sid = self._check(session_id)
        term = await self._terminal(sid, cols, rows)
        replay, reader = term.subscribe(replay_bytes)
        try:
            self._touch(term)
            yield TerminalReplay(data=replay)
            while (data := await term.output(reader)) is not None:
                self._touch(term)
                yield TerminalData(data=data)
            yield TerminalExit(reason=term.reason or "Terminal exited", exit_code=term.exit_code)
        finally:
            term.unsubscribe(reader)

    @operation
    async def write(self, session_id: str, data: bytes) -> TerminalAck:
        """Type ``data`` into the session's open terminal (waits while its input queue is full)."""
        term = self._open(session_id)
        self._touch(term)
        await term.write(data)
        return TerminalAck(success=True, session_id=term.session_id)

    @operation
    async def resize(self, session_id: str, cols: Dimension, rows: Dimension) -> TerminalAck:
        """Set the size of the session's open terminal (its programs get SIGWINCH)."""
        term = self._open(session_id)
        self._touch(term)
        term.resize(cols, rows)
        return TerminalAck(success=True, session_id=term.session_id)


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``terminals`` plugin (entry point): this service alone."""
    register(
        ServiceSpec(
            "terminals",
            TerminalsService,
            TerminalSettings,
            "a shared interactive terminal per session",
            requires=("sessions",),
        )
    )
