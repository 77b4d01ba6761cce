"""One persistent bash per session, driven through pipes.

bash reads its script from a pipe we write (``bash /dev/fd/N``), so its stdin and every
command's stdin is /dev/null. Each foreground command is sent as ``eval '<command>'``
(single-quoted, so no user text is ever parsed as our script) followed by a marker that
carries a per-shell nonce, the command's sequence number and its exit status, printed on
stdout and stderr: the output of a command is everything before its marker on each pipe.
State (cwd, exports, functions, aliases) lives in the shell, so it persists between commands.

Streamed and background commands are launched by the same shell, so they start from its
state, into a background subshell whose stdout and stderr are FIFOs the server reads, and
whose exit status is reported on a control pipe shared by every shell of the service as a
line ``x <tag> <status>``; :class:`ControlParser` turns that pipe's bytes into events.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from .proctree import kill_tree
from .spawn import READ_SIZE, Child, read_nonblocking, set_once, spawn

#: How long our own scripts (a job launch) may take before the call fails with TimeoutError.
INTERNAL_TIME_LIMIT = 30.0
#: The longest control-pipe line kept; ours (``x <tag> <status>``) are a few dozen bytes.
CONTROL_LINE_MAX = 4096


def quote(text: str) -> str:
    """POSIX single-quote ``text`` for bash: the only quoting that needs no other escapes."""
    return "'" + text.replace("'", "'\\''") + "'"


# control pipe ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobExited:
    """``x <tag> <status>``: the job ``tag`` ended with exit ``status`` (None when the status
    is not an optional ``-`` followed by ASCII digits)."""

    tag: int
    status: int | None


def _number(text: bytes) -> int | None:
    digits = text[1:] if text.startswith(b"-") else text
    if not digits.isdigit():
        return None
    try:
        return int(text)
    except ValueError:  # more digits than int() converts
        return None


def parse_control_line(line: bytes) -> JobExited | None:
    """The event of one control line (without its newline); None for a line that is not ours."""
    parts = line.split()
    if len(parts) != 3 or parts[0] != b"x" or not parts[1].isdigit():
        return None
    tag = _number(parts[1])
    return None if tag is None else JobExited(tag, _number(parts[2]))


class ControlParser:
    """Sans-IO parser of the control pipe: bytes in through :meth:`feed`, :class:`JobExited` out.

    Lines end with ``\n``; a line that is not ``x <tag> <status>`` (whitespace-separated, ``tag``
    ASCII digits) gives no event. Only the unfinished last line is buffered, and never more than
    ``max_line`` bytes of it: a longer line is not ours, and is discarded up to its newline.
    """

    def __init__(self, max_line: int = CONTROL_LINE_MAX) -> None:
        if max_line <= 0:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False  # inside a line that grew past max_line

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held (at most ``max_line``)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[JobExited]:
        events: list[JobExited] = []
        start = 0
        while (nl := data.find(b"\n", start)) != -1:
            piece = data[start:nl]
            start = nl + 1
            if not self._skipping and len(self._buf) + len(piece) <= self.max_line:
                self._buf += piece
                event = parse_control_line(bytes(self._buf))
                if event is not None:
                    events.append(event)
            self._skipping = False
            self._buf.clear()
        if not self._skipping:
            if len(self._buf) + len(data) - start > self.max_line:
                self._buf.clear()
                self._skipping = True
            else:
                self._buf += data[start:]
        return events


# the shell -------------------------------------------------------------------------------------


class ShellExited(Exception):
    """The shell died while a command ran in it (``exit N``, a crash, or a kill)."""

    def __init__(self, exit_code: int | None, destroyed: bool = False) -> None:
        super().__init__(f"shell exited with {exit_code}")
        self.exit_code = exit_code
        self.destroyed = destroyed


@dataclass
class _Capture:
    """Output of one stream (stdout or stderr) of the running foreground command."""

    limit: int
    buf: bytearray = field(default_factory=bytearray)
    scanned: int = 0
    truncated: int = 0
    done: bool = False
    tail: bytes = b""  # what followed the marker on its line (the exit status on stdout)


@dataclass
class _Pending:
    seq: int
    out: _Capture
    err: _Capture
    future: asyncio.Future[None]


def env_prelude(env: Mapping[str, str | None] | None, *, restore: bool) -> tuple[str, str]:
    """Script lines that export ``env`` (None values skipped) and, if asked, restore it after."""
    if not env:
        return "", ""
    setup: list[str] = []
    undo: list[str] = []
    for i, (key, value) in enumerate(env.items()):
        if value is None:
            continue
        if restore:
            setup.append(f'__sbx_h{i}=${{{key}+1}}; __sbx_v{i}="${{{key}-}}"')
            undo.append(
                f'if [[ -n "$__sbx_h{i}" ]]; then \\builtin export {key}="$__sbx_v{i}"; '
                f"else \\builtin unset {key}; fi; \\builtin unset __sbx_h{i} __sbx_v{i}"
            )
        setup.append(f"\\builtin export {key}={quote(value)}")
    return "\n".join(setup) + "\n", ("\n".join(undo) + "\n") if undo else ""


class Shell:
    """A running ``bash`` owned by one session."""

    def __init__(self, *, cwd: str, env: Mapping[str, str], ctl_fd: int, max_output: int) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.ctl_fd = ctl_fd
        self.max_output = max_output
        self.nonce = "k" + secrets.token_hex(8)  # a letter first: printf reads "\\0" + digits as octal
        self._marker = b"\x00" + self.nonce.encode() + b":"
        self._seq = 0
        self._pending: _Pending | None = None
        self._proc: Child | None = None
        self._script_w = -1
        self._out_r = -1
        self._err_r = -1
        self._write_lock = asyncio.Lock()
        self.exit_code: int | None = None
        self.destroyed = False
        self._exit: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._exit.done()

    async def start(self) -> None:
        script_r, self._script_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self._proc = spawn(
                ["bash", "--norc", "--noprofile", f"/dev/fd/{script_r}"],
                stdout=out_w,
                stderr=err_w,
                cwd=self.cwd,
                env=self.env,
                pass_fds=(script_r, self.ctl_fd),
                start_new_session=True,
            )
        finally:
            os.close(script_r)
            os.close(out_w)
            os.close(err_w)
        self._out_r, self._err_r = out_r, err_r
        for fd in (out_r, err_r, self._script_w):
            os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()
        loop.add_reader(out_r, self._on_readable, out_r, True)
        loop.add_reader(err_r, self._on_readable, err_r, False)
        self._proc.on_exit(self._on_exit)
        # bash reads its script through a descriptor of its own (the one that is the same pipe
        # as ours): close every other descriptor it inherited but 0-2 and the control pipe, so
        # that commands inherit neither the script pipe nor the event loop's internals.
        me = "/proc/$$/fd"
        await self._write(
            f"for __sbx_fd in {me}/*; do __sbx_fd=${{__sbx_fd##*/}}\n"
            f"case $__sbx_fd in 0|1|2|{self.ctl_fd}|{script_r}) continue;; esac\n"
            f"[[ ! -e {me}/$__sbx_fd || {me}/$__sbx_fd -ef {me}/{script_r} ]] && continue\n"
            f'\\builtin eval "\\command exec $__sbx_fd>&-"\n'
            f"done\n\\builtin unset __sbx_fd\n"
            f"\\command exec {script_r}<&-\n\\builtin shopt -s expand_aliases\n".encode()
        )

    def _on_exit(self, code: int) -> None:
        self.exit_code = code
        set_once(self._exit)
        self._close_fds()
        pending, self._pending = self._pending, None
        if pending is not None and not pending.future.done():
            pending.future.set_exception(ShellExited(code, self.destroyed))

    def _close_fds(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self._out_r, self._err_r):
            if fd >= 0:
                loop.remove_reader(fd)
                os.close(fd)
        if self._script_w >= 0:
            loop.remove_writer(self._script_w)
            os.close(self._script_w)
        self._out_r = self._err_r = self._script_w = -1

    # output ------------------------------------------------------------------------------

    def _on_readable(self, fd: int, is_out: bool) -> None:
        data = read_nonblocking(fd)
        if data is None:
            return
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            return
        pending = self._pending
        if pending is None:
            return  # output of a stray background job between commands
        capture = pending.out if is_out else pending.err
        if capture.done:
            return
        self._feed(capture, data)
        if pending.out.done and pending.err.done and not pending.future.done():
            pending.future.set_result(None)

    def _feed(self, capture: _Capture, data: bytes) -> None:
        buf = capture.buf
        buf += data
        marker = self._marker
        start = max(0, capture.scanned - len(marker))
        while True:
            i = buf.find(marker, start)
            if i == -1:
                break
            nl = buf.find(b"\n", i)
            if nl == -1:
                capture.scanned = i  # the marker line is not complete yet
                return
            fields = bytes(buf[i + len(marker) : nl]).split(b":", 1)
            if fields[0] == str(self._pending.seq if self._pending else -1).encode():
                capture.tail = fields[1] if len(fields) > 1 else b""
                del buf[i:]
                capture.done = True
                return
            del buf[i : nl + 1]  # a stale marker; drop it
            start = i
        capture.scanned = len(buf)
        if len(buf) > capture.limit + READ_SIZE:
            keep = len(marker) + 32
            cut = len(buf) - keep
            capture.truncated += cut - capture.limit
            del buf[capture.limit : cut]
            capture.scanned = len(buf)

    # input -------------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            view = memoryview(data)
            loop = asyncio.get_running_loop()
            while view:
                if self._script_w < 0:
                    raise ShellExited(self.exit_code, self.destroyed)
                try:
                    n = os.write(self._script_w, view)
                    view = view[n:]
                except BlockingIOError:  # bash is busy: wait until the pipe has room (or bash died)
                    ready: asyncio.Future[None] = loop.create_future()
                    fd = self._script_w
                    loop.add_writer(fd, set_once, ready)
                    try:
                        await asyncio.wait([ready, self._exit], return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        if self._script_w == fd:
                            loop.remove_writer(fd)
                except OSError as exc:
                    if exc.errno == errno.EPIPE:
                        raise ShellExited(self.exit_code, self.destroyed) from None
                    raise

    # commands ----------------------------------------------------------------------------

    async def _exchange(
        self,
        script: str,
        *,
        time_limit: float | None,
        grace: float | None = None,
        exclude: frozenset[int] = frozenset(),
    ) -> tuple[_Pending, bool]:
        """Send ``script`` (ours: user text only inside quotes), then the end marker that reports
        ``$__sbx_rc``, and wait for that marker on both pipes; return the captures and whether
        ``time_limit`` (seconds, None for none) passed first.

        Past ``time_limit``, with ``grace`` None the call raises TimeoutError; otherwise the
        shell's children (but the subtrees of ``exclude``) get SIGTERM, then SIGKILL after
        ``grace``, and if the shell itself is still stuck (a builtin loop) it is killed and
        ShellExited is raised.
        """
        if not self.alive:
            raise ShellExited(self.exit_code, self.destroyed)
        self._seq += 1
        loop = asyncio.get_running_loop()
        pending = _Pending(self._seq, _Capture(self.max_output), _Capture(self.max_output), loop.create_future())
        self._pending = pending
        marker = f"\\0{self.nonce}:{pending.seq}"
        script += f"\\builtin printf '{marker}:%d\\n' \"$__sbx_rc\"; \\builtin printf '{marker}\\n' >&2\n"
        timed_out = False
        try:
            await self._write(script.encode())
            try:
                await asyncio.wait_for(asyncio.shield(pending.future), time_limit)
            except TimeoutError:
                if grace is None:
                    raise
                timed_out = True
                await kill_tree(self.pid, include_root=False, grace=grace, exclude=exclude)
                try:
                    await asyncio.wait_for(asyncio.shield(pending.future), max(grace, 0.5))
                except TimeoutError:
                    await self.kill(destroy=False)  # a builtin loop: only the shell itself can stop
                    raise ShellExited(None, self.destroyed) from None
        finally:
            if self._pending is pending:
                self._pending = None
        return pending, timed_out

    async def run(
        self,
        command: str,
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        time_limit: float | None = None,
        grace: float = 2.0,
        exclude: frozenset[int] = frozenset(),
    ) -> tuple[int, bytes, bytes, bool]:
        """Run a foreground command; return (exit code, stdout, stderr, timed out).

        ``time_limit`` (seconds) is a kill deadline, not a cancellation timeout: when it passes,
        the command's processes get SIGTERM, then SIGKILL after ``grace``, and the call returns
        with timed out set; if the shell itself is still stuck (a builtin loop), it is killed and
        ShellExited is raised. Processes in the subtrees of ``exclude`` (the session's jobs) are spared.
        """
        setup, undo = env_prelude(env, restore=True)
        body = f"\\builtin eval {quote(command)} {self.ctl_fd}>&-\n__sbx_rc=$?\n"
        if cwd is not None:
            body = (
                f'__sbx_pwd="$PWD"\nif \\builtin cd -- {quote(cwd)} 2>/dev/null; then\n{body}'
                f'\\builtin cd -- "$__sbx_pwd" 2>/dev/null\nelse\n'
                f"\\builtin printf \"Failed to change directory to '%s'\\n\" {quote(cwd)} >&2\n"
                f"__sbx_rc=1\nfi\n"
            )
        pending, timed_out = await self._exchange(
            f"{setup}{body}{undo}", time_limit=time_limit, grace=grace, exclude=exclude
        )
        try:
            code = int(pending.out.tail or b"-1")
        except ValueError:
            code = -1
        out = bytes(pending.out.buf)
        err = bytes(pending.err.buf)
        for capture, name in ((pending.out, "stdout"), (pending.err, "stderr")):
            if capture.truncated:
                err += f"\n[sandbox: {name} truncated: {capture.truncated} bytes dropped]\n".encode()
        return code, out, err, timed_out

    async def launch(
        self,
        command: str,
        *,
        fifo_out: str,
        fifo_err: str,
        tag: int,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
    ) -> int:
        """Start ``command`` in a background subshell writing to the two FIFOs; return its pid.

        The FIFOs' read ends must already be open. The exit status arrives on the control
        pipe as ``x <tag> <status>``.
        """
        setup, _ = env_prelude(env, restore=False)
        if cwd is not None:
            setup = (
                f"\\builtin cd -- {quote(cwd)} 2>/dev/null || {{ \\builtin printf "
                f"\"Failed to change directory to '%s'\\n\" {quote(cwd)} >&2; \\builtin exit 1; }}\n" + setup
            )
        inner = f"{setup}\\builtin eval {quote(command)}"
        pending, _ = await self._exchange(
            f"\\command exec {{__sbx_o}}>{quote(fifo_out)} {{__sbx_e}}>{quote(fifo_err)}\n"
            f'{{ ( {inner}\n) >&"$__sbx_o" 2>&"$__sbx_e" {{__sbx_o}}>&- {{__sbx_e}}>&- {self.ctl_fd}>&-\n'
            f"\\builtin printf 'x {tag} %d\\n' \"$?\" >&{self.ctl_fd}\n"
            f"}} </dev/null >/dev/null 2>&1 &\n"
            f"__sbx_rc=$!\n"
            f"\\command exec {{__sbx_o}}>&- {{__sbx_e}}>&-\n",
            time_limit=INTERNAL_TIME_LIMIT,
        )
        return int(pending.out.tail or b"-1")

    async def kill(self, grace: float = 1.0, *, destroy: bool = True) -> None:
        """End the shell and everything it started (``destroy``: the session is being deleted)."""
        self.destroyed = self.destroyed or destroy
        if not self.alive:
            return
        await kill_tree(self.pid, include_root=True, grace=grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exit), 5)
