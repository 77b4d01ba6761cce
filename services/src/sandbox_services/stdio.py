"""A process's input: a stdin pipe or a pseudo-terminal, signals by name or number, and the
kernel's word on whether the process waits for input.

The server holds both ends of a process's stdin pipe (or its terminal's master and slave);
the process opens the read end (the slave) by its ``/proc/<server>/fd/N`` path, so nothing is
inherited through the session's shell, and opening a pipe's read end that way never waits for
a writer (a FIFO's open would, if the server had already closed its end). Writes are
non-blocking and wait for the kernel's buffer to have room: a process that does not read
slows its writer down, bounded by a time limit, and nothing is buffered on our side beyond
the request's own bytes. Writers to one process take turns (one lock), so two writes never
interleave.

Whether a process waits for input is read from ``/proc/PID/syscall`` of every process of its
tree: a ``read`` (or ``readv``) on a descriptor that is our pipe or terminal, or a ``poll`` /
``select`` family call by a process whose descriptor 0 is ours (what line editors block in).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import os
import platform
import shutil
import signal
import struct
import termios
from collections.abc import Callable

from sandbox_core.errors import ErrorCode, SandboxError, validation_error

from .procfs import descendants
from .spawn import set_once

#: util-linux ``setsid``: it makes a process with a terminal the leader of a session of its own
#: with that terminal as its controlling terminal (``-c``); None where it is not installed.
SETSID = shutil.which("setsid")
#: The size asked for a stdin pipe's kernel buffer (the system's ``pipe-max-size`` caps it).
PIPE_BYTES = 1024 * 1024
#: The signals a caller may send: 1 to 64 (``SIGRTMAX`` on Linux), by number or name.
SIGNAL_MAX = 64

#: System call numbers that read one descriptor (its number the first argument), and those that
#: wait on several (then the process's descriptor 0 decides), per machine.
_SYSCALLS: dict[str, tuple[frozenset[int], frozenset[int]]] = {
    "x86_64": (frozenset({0, 19, 17, 295}), frozenset({7, 23, 270, 271, 232, 281})),
    "aarch64": (frozenset({63, 65, 67, 69}), frozenset({72, 73, 22})),
}
_READS, _WAITS = _SYSCALLS.get(platform.machine(), (frozenset(), frozenset()))


def parse_signal(value: str | int) -> int:
    """A signal number from ``"SIGUSR1"``, ``"USR1"`` or 1-64; anything else is 400 naming ``signal``."""
    if isinstance(value, bool):
        raise validation_error("signal must be a signal name or a number from 1 to 64", "signal")
    if isinstance(value, int):
        if 1 <= value <= SIGNAL_MAX:
            return value
        raise validation_error(f"signal must be from 1 to {SIGNAL_MAX}, not {value}", "signal")
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        number = int(signal.Signals[name])
    except KeyError:
        raise validation_error(f"signal {value!r} is not a signal name (such as SIGUSR1) or number", "signal") from None
    if not 1 <= number <= SIGNAL_MAX:
        raise validation_error(f"signal must be from 1 to {SIGNAL_MAX}", "signal")
    return number


def decode_data(data: str, encoding: str) -> bytes:
    """The bytes of a stdin write: ``data`` as UTF-8 or base64 (400 naming the field otherwise)."""
    if encoding == "base64":
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise validation_error("data is not valid base64", "data") from None
    try:
        return data.encode("utf-8")
    except UnicodeEncodeError:
        raise validation_error("data is not valid UTF-8 (lone surrogates)", "data") from None


def winsize(cols: int, rows: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


def _unavailable(process_id: str, reason: str) -> SandboxError:
    return SandboxError(
        ErrorCode.PROCESS_STDIN_UNAVAILABLE,
        f"Cannot write to the stdin of process {process_id}: {reason}",
        {"processId": process_id, "reason": reason},
    )


class Input:
    """A process's stdin as the server writes it: a pipe's write end, or a terminal's master.

    ``keep`` are descriptors held for the process to open by path (the pipe's read end, the
    terminal's slave); :meth:`release` closes them with the rest once the process has ended."""

    def __init__(self, fd: int, *, pty: bool, keep: int) -> None:
        self.fd = fd  # non-blocking
        self.pty = pty
        self.keep = keep
        self.closed = False  # a pipe after EOF (a terminal never closes: EOF is a keystroke)
        self.ended = False  # the process has ended
        self.identity = os.fstat(keep)[1:3]  # (st_ino, st_dev): what the process's descriptor is
        self._lock = asyncio.Lock()
        self._writable: asyncio.Future[None] | None = None
        self.written = 0

    @property
    def path(self) -> str:
        """Where the process opens its end (the server's own descriptor, by path)."""
        return f"/proc/{os.getpid()}/fd/{self.keep}"

    def check(self, process_id: str) -> None:
        if self.ended:
            raise _unavailable(process_id, "the process has exited")
        if self.closed:
            raise _unavailable(process_id, "its stdin was closed (eof)")

    async def write(self, process_id: str, data: bytes, eof: bool, *, limit: float) -> int:
        """Write ``data`` (waiting while the process does not read, up to ``limit`` seconds),
        then with ``eof`` close the pipe (a terminal: send its end-of-file character). Returns
        the bytes written; a write that times out is a 408 naming how many went through."""
        self.check(process_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        sent = 0
        try:
            async with asyncio.timeout_at(deadline):
                async with self._lock:
                    self.check(process_id)
                    view = memoryview(data)
                    while view:
                        try:
                            n = os.write(self.fd, view)
                        except BlockingIOError:
                            await self._wait_writable()
                            self.check(process_id)
                            continue
                        except OSError:  # EPIPE: nobody has it open for reading any more
                            raise _unavailable(process_id, "the process closed its stdin") from None
                        view = view[n:]
                        sent += n
                        self.written += n
                    if eof:
                        if self.pty:
                            eof_char = termios.tcgetattr(self.keep)[6][termios.VEOF]
                            await self._write_all(eof_char if isinstance(eof_char, bytes) else bytes([eof_char]))
                        else:
                            self.close()
        except TimeoutError:
            raise SandboxError(
                ErrorCode.PROCESS_STDIN_TIMEOUT,
                f"Writing to the stdin of process {process_id} timed out after {limit:g} s: the process is not"
                f" reading it ({sent} of {len(data)} bytes written)",
                {"processId": process_id, "written": sent, "size": len(data), "reason": "not reading"},
            ) from None
        return sent

    async def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                await self._wait_writable()

    async def _wait_writable(self) -> None:
        loop = asyncio.get_running_loop()
        writable: asyncio.Future[None] = loop.create_future()
        self._writable = writable
        loop.add_writer(self.fd, set_once, writable)
        try:
            await writable
        finally:
            if self._writable is writable:
                loop.remove_writer(self.fd)
                self._writable = None

    def _wake(self) -> None:
        if self._writable is not None:
            asyncio.get_running_loop().remove_writer(self.fd)
            set_once(self._writable)
            self._writable = None

    def close(self) -> None:
        """EOF: close the pipe's write end (a terminal's master stays: it carries the output)."""
        if self.closed or self.pty:
            return
        self.closed = True
        self._wake()
        os.close(self.fd)

    def release(self) -> None:
        """The process has ended: fail waiting writers and close every descriptor."""
        if self.ended:
            return
        self.ended = True
        self._wake()
        if not self.closed:
            self.closed = True
            os.close(self.fd)
        os.close(self.keep)

    def unread(self) -> int:
        """Bytes written that the process has not read yet (0 when unknown or released)."""
        if self.ended:
            return 0
        try:
            raw = fcntl.ioctl(self.keep, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", raw)[0])

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.keep, termios.TIOCSWINSZ, winsize(cols, rows))

    def foreground_group(self) -> int | None:
        """A terminal's foreground process group (what a ^C would reach), None if it has none."""
        try:
            group = os.tcgetpgrp(self.keep)
        except OSError:
            return None
        return group if group > 0 else None


def open_pipe() -> Input:
    """A stdin pipe: the server writes, the process opens the read end by path."""
    r, w = os.pipe()
    with contextlib.suppress(OSError):  # fewer wake-ups per large write (kernel memory, bounded)
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    os.set_blocking(w, False)
    return Input(w, pty=False, keep=r)


def open_pty(cols: int, rows: int) -> tuple[Input, int]:
    """A pseudo-terminal of ``cols`` x ``rows``: its input (keys go to the master) and the
    master's descriptor for reading its output (non-blocking, a descriptor of its own)."""
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[0] |= getattr(termios, "IUTF8", 0)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, winsize(cols, rows))
        writer = os.dup(master)
    except OSError:
        os.close(master)
        os.close(slave)
        raise
    os.set_blocking(master, False)
    os.set_blocking(writer, False)
    return Input(writer, pty=True, keep=slave), master


def _syscall(pid: int) -> tuple[int, int] | None:
    """(system call number, first argument) ``pid`` is blocked in, or None (running, gone, unknown)."""
    try:
        with open(f"/proc/{pid}/syscall", "rb") as fh:
            fields = fh.read().split()
    except OSError:
        return None
    if len(fields) < 2 or not fields[0].isdigit():
        return None
    try:
        return int(fields[0]), int(fields[1], 16)
    except ValueError:
        return None


def _is(pid: int, fd: int, identity: tuple[int, int]) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return False
    return (st.st_ino, st.st_dev) == identity


def waiting_for_input(leader: int, identity: tuple[int, int]) -> bool:
    """Whether a process of ``leader``'s tree is blocked reading the input ``identity`` names."""
    for pid in (leader, *descendants(leader)):
        call = _syscall(pid)
        if call is None:
            continue
        number, arg = call
        if (number in _READS and arg < 1 << 31 and _is(pid, arg, identity)) or (
            number in _WAITS and _is(pid, 0, identity)
        ):
            return True
    return False


class InputWatch:
    """Polls (every ``interval`` seconds, while the process runs) whether it waits for input;
    each new wait (one seen after none, or after more input was written) bumps :attr:`waits`
    and records in :attr:`wait_offset` the output offset it began at."""

    def __init__(
        self,
        leader: int,
        identity: tuple[int, int],
        offset: Callable[[], int],
        interval: float,
        fed: Callable[[], int] = lambda: 0,
        unread: Callable[[], int] = lambda: 0,
    ) -> None:
        self.unread = unread  # input waiting in the pipe: a process in read() is about to have it
        self.leader = leader
        self.fed = fed  # bytes written to its input so far: a wait after more came is a new one
        self._fed_at_wait = -1
        self.identity = identity
        self.offset = offset
        self.interval = interval
        self.waiting = False
        self.waits = 0
        self.wait_offset = 0
        self.stopped = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name=f"input watch {self.leader}")

    async def _poll(self) -> None:
        while True:
            now = not self.unread() and waiting_for_input(self.leader, self.identity)  # small reads: no thread
            fed = self.fed()
            if now and (not self.waiting or fed != self._fed_at_wait):
                self._fed_at_wait = fed
                self.waits += 1
                self.wait_offset = self.offset()
                self._changed.set()
                self._changed = asyncio.Event()
            self.waiting = now
            await asyncio.sleep(self.interval)

    async def next_wait(self, seen: int) -> None:
        """Return once there has been a wait past the ``seen``-th, or the watch has stopped."""
        while self.waits <= seen and not self.stopped:
            await self._changed.wait()

    def stop(self) -> None:
        """The process has ended: stop polling and wake whoever waits for a wait."""
        self.waiting = False
        self.stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._changed.set()

    async def aclose(self) -> None:
        task = self._task
        self.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
