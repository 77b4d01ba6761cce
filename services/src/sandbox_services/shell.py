"""One persistent bash per session, driven through pipes, that nothing a user does can wedge.

bash reads its script from a pipe we write (``bash /dev/fd/N``); its own stdout and stderr are
/dev/null. A foreground command is one line of ours::

    \\builtin eval '<command>' </dev/null >/proc/S/fd/O 2>/proc/S/fd/E

(the user's text only inside single quotes, so it is never parsed as our script), then lines
made only of redirections, which no function, alias, option or variable can shadow, and
which ``set -x`` never traces into the command's output:

* the command's stdout and stderr are two pipes of the server's, opened by path for this command
  alone: ``exec >file`` or ``exec 1>&-`` inside it last until it ends, and a background job it
  leaves behind keeps writing to *its* pipes, which the server drains and discards, never into
  a later command's output (the pipes serve the next command only when nobody else holds them);
* its exit status and completion are the name of a file bash writes and closes in a directory
  of ours, ``r.<status>`` (``>|``, so ``noclobber`` does not matter), reported by inotify
  (:mod:`.inotify`); with per-command env or cwd, ``s.<status>`` then ``d``.

Per-command env is restored from its ``declare -p``, saved to a file of ours, so no variable of
ours ever exists in the shell; functions named ``eval`` or ``builtin`` are removed before each
command. Shell state (cwd, exports, functions, aliases) lives in the shell, so it persists.
Job control is on (``set -m``), so every job a command starts has a process group of its own: a
timeout or a cancel ends the groups of the jobs this command started, and no others. If the
shell stops executing what we send (``set -n``, a DEBUG trap that skips commands, a disabled
eval builtin), a watchdog sees it waiting for more script with the command unfinished, and the
shell is replaced.

Streamed and background commands are launched by the same shell, so they start from its state,
as a job writing to two FIFOs the server reads; the job's exit status is again a file name,
read when the job's process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from sandbox_services import procfs

from . import inotify
from .proctree import kill_tree, signal_group
from .spawn import Child, read_nonblocking, set_once, spawn

#: How long our own scripts (a job launch) may take before the call fails with TimeoutError.
INTERNAL_TIME_LIMIT = 30.0
#: Output pipes of finished commands still held open by a background job they left, per shell;
#: past this many, the oldest is closed (that job then gets SIGPIPE on its next write).
ORPHAN_PIPES_MAX = 64
#: The watchdog's first and longest interval between two looks at a running command's shell.
WATCHDOG_FIRST = 0.05
WATCHDOG_MAX = 0.5


_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]+")
#: The signals a job's leader catches (all but KILL, STOP and CHLD): see :meth:`Shell.launch`.
_LEADER_TRAPS = " ".join(str(n) for n in range(1, 65) if n not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD))


def quote(text: str) -> str:
    """POSIX single-quote ``text`` for bash: the only quoting that needs no other escapes."""
    return "'" + text.replace("'", "'\\''") + "'"


class ShellExited(Exception):
    """The shell died or became unusable while a command ran in it (``exit N``, a crash, a
    kill, or a shell that stopped executing commands: then ``reason`` says why)."""

    def __init__(
        self, exit_code: int | None, destroyed: bool = False, reason: str = "", *, stopped: bool = False
    ) -> None:
        super().__init__(reason or f"shell exited with {exit_code}")
        self.exit_code = exit_code
        self.destroyed = destroyed
        self.reason = reason
        self.stopped = stopped  # killed because a command past its time limit did not end


@dataclass
class _Capture:
    """One output stream of a foreground command: its first ``limit`` bytes, and how many more."""

    limit: int
    buf: bytearray = field(default_factory=bytearray)
    truncated: int = 0

    def feed(self, data: bytes) -> None:
        room = self.limit - len(self.buf)
        if room >= len(data):
            self.buf += data
        else:
            self.buf += data[: max(room, 0)]
            self.truncated += len(data) - max(room, 0)


@dataclass(frozen=True)
class Outcome:
    """How one of our scripts ended: the status it reported, whether the requested directory
    could not be entered, and a job's pid."""

    status: int = 0
    cd_failed: bool = False
    pid: int | None = None


@dataclass
class _Pipe:
    """An output pipe of the shell's commands: we hold both ends; bash opens the write end by
    its /proc path for one command. It serves the next command too unless a job still holds it."""

    r: int
    w: int
    capture: _Capture | None = None


@dataclass
class _Command:
    """One script of ours in flight: its output pipes (foreground commands) and completion."""

    seq: int
    future: asyncio.Future[Outcome]
    out: _Capture | None = None
    err: _Capture | None = None
    pipes: list[_Pipe] = field(default_factory=list)  # its stdout and stderr
    last_pid: int = -1  # the system's last process id when it began
    children_before: frozenset[int] = frozenset()
    stopping: asyncio.Task[None] | None = None
    status: int = 0
    cd_failed: bool = False
    pid: int | None = None
    paths: tuple[str, str] = ("", "")  # where bash opens the output pipes


async def _end_tree(leader: int, grace: float) -> None:
    """:func:`kill_tree` for a stop: a tree that fails to end is no failure of the stop (and
    never cuts short the ending of the others, which share its task group)."""
    with contextlib.suppress(Exception):
        await kill_tree(leader, grace=grace)


async def _done_or_timeout(future: asyncio.Future[Outcome], at_most: float) -> None:
    """Wait until ``future`` is done or ``at_most`` seconds have passed, whichever is first; a
    cancelled caller leaves ``future`` alone (lighter than ``asyncio.wait`` on a hot path)."""
    if future.done():
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    future.add_done_callback(wake)
    timer = loop.call_later(at_most, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)


_LAST_PID_FD = -1


def _last_pid() -> int:
    """The last process id the kernel gave out (in our pid namespace), -1 where unknown: when it
    has not changed, no process was created (so none can hold a descriptor we lent out)."""
    global _LAST_PID_FD
    try:
        if _LAST_PID_FD < 0:
            _LAST_PID_FD = os.open("/proc/sys/kernel/ns_last_pid", os.O_RDONLY | os.O_CLOEXEC)
        return int(os.pread(_LAST_PID_FD, 32, 0))
    except (OSError, ValueError):
        return -1


def take_markers(directory: str, prefix: str) -> tuple[int | None, bool]:
    """Read and remove a job's marker files ``<prefix>r.<status>`` and ``<prefix>c`` in
    ``directory``: (its status or None, whether its cwd could not be entered)."""
    status: int | None = None
    cd_failed = False
    for name in os.listdir(directory):
        if not name.startswith(prefix):
            continue
        kind, _, value = name[len(prefix) :].partition(".")
        if kind == "r" and value.isdigit():
            status = int(value)
        elif kind == "c" and not value:
            cd_failed = True
        else:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    return status, cd_failed


def env_lines(env: Mapping[str, str | None] | None, *, saved: str | None) -> tuple[str, str]:
    """Script lines that export ``env`` (None values skipped) and, with ``saved`` (a file of
    ours), lines that put back what those variables were after the command: their
    ``declare -p`` is written there first and read back (a variable that did not exist is
    unset), so no variable of ours ever exists in the shell."""
    names = [key for key, value in (env or {}).items() if value is not None]
    if not names:
        return "", ""
    exports = "".join(
        f"\\builtin export {key}={quote(value)}\n" for key, value in (env or {}).items() if value is not None
    )
    if saved is None:
        return exports, ""
    listed = " ".join(names)
    return (
        f"\\builtin declare -p {listed} >|{saved} 2>/dev/null\n{exports}",
        f"\\builtin unset -v {listed}; \\builtin . {saved}\n",
    )


class Shell:
    """A running ``bash`` owned by one session; ``workdir`` is a private directory of its own."""

    def __init__(
        self, *, cwd: str, env: Mapping[str, str], workdir: str, max_output: int, watcher: inotify.DirectoryWatcher
    ) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.workdir = workdir
        self.max_output = max_output
        self.nonce = "k" + secrets.token_hex(6)
        # marker files are written with >| (noclobber or not); the path is kept short (see run)
        self._marker = (workdir if _SAFE_PATH.fullmatch(workdir) else quote(workdir)) + "/"
        self._seq = 0
        self._current: _Command | None = None
        self._proc: Child | None = None
        self._script_w = -1
        self._watcher = watcher  # reports the marker files bash writes in workdir
        self._watch = -1
        self._pipes: list[_Pipe | None] = [None, None]
        self._me = os.getpid()
        self._children_fd = -1
        self._orphans: dict[int, None] = {}  # read ends of finished commands' pipes, oldest first
        self._write_lock = asyncio.Lock()
        self._idle_signature: tuple[str, str] | None = None
        self.exit_code: int | None = None
        self.destroyed = False
        self.ended_by_server = False  # kill() was called: its end is the server's doing
        self.unusable = ""
        self._exit: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._exit.done()

    def lost(self) -> bool:
        """Whether the shell has died, or is being killed, of something other than the server
        (a command's ``kill -9 $$``, the OOM killer, ...)."""
        if self.ended_by_server:
            return False
        return not self.alive or procfs.dying(self.pid)

    async def lost_status(self, wait: float = 2.0) -> int | None:
        """When the shell is :meth:`lost`: its exit status once it has exited (a shell being
        killed is waited for, up to ``wait`` seconds); otherwise None."""
        if not self.lost():
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exit), wait)
        return None if self.ended_by_server or self.alive else self.exit_code

    def current_dir(self) -> str:
        """The shell's working directory now (``/proc/<pid>/cwd``)."""
        return os.readlink(f"/proc/{self.pid}/cwd")

    async def start(self) -> None:
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)
        self._watch = self._watcher.watch(self.workdir, self._on_markers)
        script_r, self._script_w = os.pipe()
        try:
            self._proc = spawn(
                ["bash", "--norc", "--noprofile", f"/dev/fd/{script_r}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.cwd,
                env=self.env,
                pass_fds=(script_r,),
                start_new_session=True,
            )
        finally:
            os.close(script_r)
        os.set_blocking(self._script_w, False)
        self._proc.on_exit(self._on_exit)
        # bash reads its script through a descriptor of its own (the one that is the same pipe
        # as ours): close every other descriptor it inherited but 0-2, so that commands inherit
        # neither the script pipe nor the event loop's internals. Then job control, so that every
        # job has a process group of its own, and aliases, as an interactive shell has them.
        me = "/proc/$$/fd"
        await self._exchange(
            await self._begin(),
            f"for __sbx_fd in {me}/*; do __sbx_fd=${{__sbx_fd##*/}}\n"
            f"case $__sbx_fd in 0|1|2|{script_r}) continue;; esac\n"
            f"[[ ! -e {me}/$__sbx_fd || {me}/$__sbx_fd -ef {me}/{script_r} ]] && continue\n"
            f'\\builtin eval "\\command exec $__sbx_fd>&-"\n'
            f"done\n\\builtin unset -v __sbx_fd\n"
            f"\\command exec {script_r}<&-\n\\builtin set -m\n\\builtin shopt -s expand_aliases\n"
            f">|{self._marker}d\n",
            time_limit=INTERNAL_TIME_LIMIT,
        )
        self._idle_signature = await self._learn_idle_signature()

    async def _learn_idle_signature(self) -> tuple[str, str] | None:
        """What ``/proc/<pid>/syscall`` says while bash waits for more script (the system call
        and its descriptor: the same twice in a row); None where the kernel does not tell (then
        there is no watchdog)."""
        last = None
        for _ in range(100):
            signature = self._blocked_in()
            if signature is not None and signature == last:
                return signature
            last = signature
            await asyncio.sleep(0.002)
        return None

    def _children(self) -> list[int]:
        """The shell's children (bash has one thread: its task's list is the whole list), read
        through a descriptor kept open for it."""
        try:
            if self._children_fd < 0:
                self._children_fd = os.open(f"/proc/{self.pid}/task/{self.pid}/children", os.O_RDONLY | os.O_CLOEXEC)
            return [int(pid) for pid in os.pread(self._children_fd, 65536, 0).split()]
        except OSError:
            return []

    def _blocked_in(self) -> tuple[str, str] | None:
        try:
            with open(f"/proc/{self.pid}/syscall") as fh:
                fields = fh.read().split()
        except OSError:
            return None
        if len(fields) < 2 or not fields[0].isdigit():  # "running", or no permission
            return None
        return fields[0], fields[1]

    def _on_exit(self, code: int) -> None:
        self.exit_code = code
        set_once(self._exit)
        if self._script_w >= 0:
            os.close(self._script_w)
            self._script_w = -1
        command, self._current = self._current, None
        if command is not None:
            self._release(command, drain=True)
            if not command.future.done():
                command.future.set_exception(ShellExited(code, self.destroyed, self.unusable))
        loop = asyncio.get_running_loop()
        for i, pipe in enumerate(self._pipes):
            if pipe is not None:
                loop.remove_reader(pipe.r)
                os.close(pipe.r)
                os.close(pipe.w)
                self._pipes[i] = None
        if self._children_fd >= 0:
            os.close(self._children_fd)
            self._children_fd = -1
        for fd in list(self._orphans):
            self._close_orphan(fd)
        self._watcher.unwatch(self._watch)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # output --------------------------------------------------------------------------------

    def _open_outputs(self, command: _Command) -> tuple[str, str]:
        """The command's stdout and stderr pipes (the shell's own, or new ones where a job of an
        earlier command still holds those); the paths bash opens them by."""
        loop = asyncio.get_running_loop()
        paths: list[str] = []
        for i, capture in enumerate((command.out, command.err)):
            pipe = self._pipes[i]
            if pipe is None:
                r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                pipe = self._pipes[i] = _Pipe(r, w)
                loop.add_reader(r, self._on_output, pipe)
            pipe.capture = capture
            command.pipes.append(pipe)
            paths.append(f"/proc/{self._me}/fd/{pipe.w}")
        command.last_pid = _last_pid()
        return paths[0], paths[1]

    def _on_output(self, pipe: _Pipe) -> None:
        data = read_nonblocking(pipe.r)
        if data and pipe.capture is not None:
            pipe.capture.feed(data)

    def _release(self, command: _Command, *, drain: bool) -> None:
        """The command is over: take what its pipes still hold; a pipe that a job it started
        still holds open is left to be drained and discarded until it closes, and replaced."""
        forked = command.last_pid < 0 or _last_pid() != command.last_pid
        for pipe in command.pipes:
            if drain and not forked:  # no process was created meanwhile: nobody else can hold it
                while data := read_nonblocking(pipe.r):
                    if pipe.capture is not None:
                        pipe.capture.feed(data)
                pipe.capture = None
                continue
            os.close(pipe.w)  # then reading to the end tells whether anyone else holds the write end
            while (data := read_nonblocking(pipe.r)) and drain:
                if pipe.capture is not None:
                    pipe.capture.feed(data)
            pipe.capture = None
            if data == b"":  # no writer left: the same pipe serves the next command
                pipe.w = os.open(f"/proc/self/fd/{pipe.r}", os.O_WRONLY | os.O_CLOEXEC)
            else:  # a job of this command holds it (or we stopped draining): drain and discard elsewhere
                asyncio.get_running_loop().remove_reader(pipe.r)
                self._pipes[self._pipes.index(pipe)] = None
                self._adopt_orphan(pipe.r)
        command.pipes.clear()

    def _adopt_orphan(self, fd: int) -> None:
        if len(self._orphans) >= ORPHAN_PIPES_MAX:
            self._close_orphan(next(iter(self._orphans)))
        self._orphans[fd] = None
        asyncio.get_running_loop().add_reader(fd, self._on_orphan, fd)

    def _on_orphan(self, fd: int) -> None:
        while (data := read_nonblocking(fd)) is not None:
            if not data:
                self._close_orphan(fd)
                return

    def _close_orphan(self, fd: int) -> None:
        if self._orphans.pop(fd, 0) is None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    # input ---------------------------------------------------------------------------------

    def _write_now(self, data: bytes) -> int:
        """Write what the script pipe takes at once (the whole of a usual script); how much."""
        if self._write_lock.locked():
            return 0
        if self._script_w < 0:
            raise ShellExited(self.exit_code, self.destroyed, self.unusable)
        try:
            return os.write(self._script_w, data)
        except BlockingIOError:
            return 0
        except BrokenPipeError:
            raise ShellExited(self.exit_code, self.destroyed, self.unusable) from None

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            view = memoryview(data)
            loop = asyncio.get_running_loop()
            while view:
                if self._script_w < 0:
                    raise ShellExited(self.exit_code, self.destroyed, self.unusable)
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
                        raise ShellExited(self.exit_code, self.destroyed, self.unusable) from None
                    raise

    # one script in flight ------------------------------------------------------------------

    def _on_markers(self, names: list[str]) -> None:
        """Marker files bash wrote (``x``: our eval ran; ``c``: cd failed; ``s.N``: status;
        ``p.N``: a job's pid; ``d`` or ``r.N``, status N: the script is complete)."""
        command = self._current
        for name in names:
            if command is None or command.future.done():
                return  # a marker of a script given up (the shell is being replaced)
            kind, _, value = name.partition(".")
            if name == "c":
                command.cd_failed = True
            elif kind in ("s", "r") and value.isdigit():
                command.status = int(value)
            elif kind == "p" and value.isdigit():
                command.pid = int(value)
                with contextlib.suppress(FileNotFoundError):  # a new name per job: never let them pile up
                    os.unlink(os.path.join(self.workdir, name))
            if name == "d" or kind == "r":
                self._complete(command)

    def _complete(self, command: _Command) -> None:
        if self._current is command:
            self._current = None
        self._release(command, drain=True)
        if not command.future.done():
            command.future.set_result(Outcome(command.status, command.cd_failed, command.pid))

    async def _idle(self) -> None:
        """Wait until no script of ours is in flight (a cancelled command still being ended)."""
        while (command := self._current) is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(command.future)
            if command.stopping is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(command.stopping)

    async def _begin(self, *, outputs: bool = False) -> _Command:
        """A new command, once none is in flight: completion armed, and with ``outputs`` its two
        output pipes open (their paths in ``out_path``/``err_path`` of the result)."""
        await self._idle()
        if not self.alive:
            raise ShellExited(self.exit_code, self.destroyed, self.unusable)
        self._seq += 1
        loop = asyncio.get_running_loop()
        command = _Command(self._seq, loop.create_future())
        command.future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        if outputs:
            command.out, command.err = _Capture(self.max_output), _Capture(self.max_output)
            command.paths = self._open_outputs(command)
        command.children_before = frozenset(self._children())
        self._current = command
        return command

    async def _exchange(
        self, command: _Command, script: str, *, time_limit: float | None, grace: float | None = None
    ) -> Outcome | None:
        """Send ``script`` followed by our completion line and wait for it to complete.

        Returns the outcome, or None when ``time_limit`` (seconds) passed first: then, with
        ``grace`` None the call raises TimeoutError; otherwise the jobs the script started get
        SIGTERM, then SIGKILL after ``grace``, and if the shell itself is still stuck (a builtin
        loop) it is killed and ShellExited is raised. A caller that is cancelled leaves the same
        ending to a task of the shell's (the next command waits for it).
        """
        data = script.encode()
        sent = self._write_now(data)
        writer = None if sent == len(data) else asyncio.ensure_future(self._write(data[sent:]))
        try:
            if writer is not None:
                await asyncio.shield(writer)
            outcome = await self._wait(command, time_limit)
            if outcome is not None:
                return outcome
            if grace is None:
                raise TimeoutError
            await self._stop(command, grace)
            return None
        except asyncio.CancelledError:
            if not command.future.done() and self.alive:
                command.stopping = asyncio.create_task(
                    self._stop(command, 0.0 if grace is None else grace, quiet=True, writer=writer),
                    name=f"stop command {command.seq} of shell {self.nonce}",
                )
                # it outlives its caller (the next command waits for it): its failure is retrieved
                command.stopping.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
            raise

    async def _wait(self, command: _Command, time_limit: float | None) -> Outcome | None:
        """The command's outcome, or None once ``time_limit`` has passed; meanwhile a watchdog
        replaces a shell that waits for more script with the command unfinished."""
        loop = asyncio.get_running_loop()
        deadline = None if time_limit is None else loop.time() + time_limit
        interval = WATCHDOG_FIRST
        while True:
            wait = interval if deadline is None else max(0.0, min(interval, deadline - loop.time()))
            await _done_or_timeout(command.future, wait)
            if command.future.done():
                return command.future.result()
            if deadline is not None and loop.time() >= deadline:
                return None
            if self._idle_signature is not None and self._blocked_in() == self._idle_signature:
                self._watcher.poll()  # its completion may be waiting in the loop's queue
                if not command.future.done():
                    await self._replace(command, "the shell stopped executing commands (for example after `set -n`)")
            interval = min(interval * 2, WATCHDOG_MAX)

    async def _replace(self, command: _Command, reason: str) -> NoReturn:
        """The shell can no longer run commands: kill it; the command fails with ``reason``."""
        self.unusable = reason
        await self.kill(destroy=False)
        if not command.future.done():
            command.future.set_exception(ShellExited(None, self.destroyed, reason))
        raise ShellExited(None, self.destroyed, reason)

    def _command_jobs(self, command: _Command) -> list[int]:
        """The process groups of the jobs ``command`` started (children of the shell it did
        not have before), never the shell's own group."""
        groups: list[int] = []
        own = os.getpgid(self.pid) if self.alive else -1
        for child in self._children():
            if child in command.children_before:
                continue
            with contextlib.suppress(ProcessLookupError):
                group = os.getpgid(child)
                if group != own and group not in groups:
                    groups.append(group)
        return groups

    async def _stop(
        self, command: _Command, grace: float, *, quiet: bool = False, writer: asyncio.Future[None] | None = None
    ) -> None:
        """End the jobs ``command`` started (their process groups and what is below them):
        SIGTERM, then SIGKILL after ``grace``; a shell still busy after that is killed (raising
        ShellExited, unless ``quiet``: the ending of a cancelled command, ``writer`` the rest of
        its script)."""
        try:
            if writer is not None:
                with contextlib.suppress(Exception):
                    await writer  # the whole script, so that the next one is not glued to half of it
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(grace, 0.05)
            groups: list[int] = []
            seen: set[int] = set()
            # one task per job's tree, in a task group: leaving it waits for every one of them
            # (and a stop that is cancelled leaves none of them running)
            async with asyncio.TaskGroup() as trees:
                # the command's list goes on after a job of it ends: every job it starts until
                # it is over (or the grace period is) gets SIGTERM too, not only those running now
                while not command.future.done():
                    for group in self._command_jobs(command):
                        if group not in groups:
                            groups.append(group)
                            signal_group(group, signal.SIGTERM)
                    for leader in self._children():
                        if leader not in command.children_before and leader not in seen:
                            seen.add(leader)
                            trees.create_task(_end_tree(leader, max(deadline - loop.time(), 0.0)))
                    if loop.time() >= deadline:
                        break
                    await _done_or_timeout(command.future, min(0.02, max(deadline - loop.time(), 0.0)))
                for group in groups:
                    signal_group(group, signal.SIGKILL)  # and members forked meanwhile
            if not command.future.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(command.future), 0.5)
            if not command.future.done():  # a builtin loop: only the shell itself can stop
                await self.kill(destroy=False)
                if not quiet:
                    raise ShellExited(None, self.destroyed, stopped=True)
        except ShellExited:
            if not quiet:
                raise

    # commands ------------------------------------------------------------------------------

    async def run(
        self,
        command: str,
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        time_limit: float | None = None,
        grace: float = 2.0,
    ) -> tuple[int, bytes, bytes, bool]:
        """Run a foreground command; return (exit code, stdout, stderr, timed out).

        ``time_limit`` (seconds) is a kill deadline, not a cancellation timeout: when it passes,
        the jobs the command started get SIGTERM, then SIGKILL after ``grace``, and the call
        returns with timed out set; if the shell itself is still stuck (a builtin loop), it is
        killed and ShellExited is raised. Jobs earlier commands left running are never touched.
        """
        sent = await self._begin(outputs=True)
        setup, undo = env_lines(env, saved=f"{self._marker}e")
        out_path, err_path = sent.paths
        m = self._marker
        # bash reads a script from a pipe one byte per read(2): every byte of ours costs, so the
        # line is short. The marker shares the eval's line: after an eval whose text ends inside a
        # quote, bash does not see keywords on the next line it reads (a parser bug), so what
        # follows an eval on a line of its own is always a plain command. `\unset -f eval` first:
        # a function named eval would take the builtin's place. Markers go through descriptor 99
        # (rarely open), which bash need not save and restore as it would 1.
        run = f"\\unset -f eval;\\eval {quote(command)} </dev/null >{out_path} 2>{err_path}"
        if cwd is None and not setup:
            body = f'{run};99>|{m}"r.$?"\n'  # status and completion at once
        elif cwd is None:  # (these use `\builtin`: a function of that name goes too)
            body = f'\\unset -f builtin\n{setup}{run};99>|{m}"s.$?"\n{undo}99>|{m}d\n'
        else:
            back = quote(self.current_dir())
            body = (
                f"\\unset -f builtin\n"
                f'if \\builtin cd -- {quote(cwd)} 2>/dev/null; then\n{setup}{run};99>|{m}"s.$?"\n{undo}'
                f"\\builtin cd -- {back} 2>/dev/null\nelse 99>|{m}c; fi\n99>|{m}d\n"
            )
        outcome = await self._exchange(sent, body, time_limit=time_limit, grace=grace)
        assert sent.out is not None and sent.err is not None
        out, err = bytes(sent.out.buf), bytes(sent.err.buf)
        if outcome is None:
            return -1, out, err, True
        if outcome.cd_failed:
            return 1, b"", f"Failed to change directory to '{cwd}'\n".encode(), False
        if outcome.status == 127 and b"eval: command not found" in err:
            await self._replace(sent, "the shell's eval builtin is disabled (`enable -n eval`)")
        for capture, name in ((sent.out, "stdout"), (sent.err, "stderr")):
            if capture.truncated:
                err += f"\n[sandbox: {name} truncated: {capture.truncated} bytes dropped]\n".encode()
        return outcome.status, out, err, False

    async def launch(
        self,
        command: str,
        *,
        fifo_out: str,
        fifo_err: str,
        markers: str,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        cgroup_procs: str | None = None,
        gate: str | None = None,
        argv: Sequence[str] | None = None,
        stdin: str = "/dev/null",
        setsid: str | None = None,
    ) -> int:
        """Start ``command`` as a job of its own (a process group) writing to the two FIFOs;
        return its pid. The FIFOs' read ends must already be open, and stay linked until the job
        ends. Its status is then the name of a file ``<markers>r.<status>`` (``<markers>c``:
        ``cwd`` could not be entered), read with :func:`take_markers`. With ``cgroup_procs`` (a
        cgroup's ``cgroup.procs``), the command's subshell moves itself there before it runs.

        With ``argv``, the job runs that program (looked up on PATH) with those arguments and no
        shell parsing at all: every word is single-quoted into ``\\builtin exec -- 'w0' 'w1' ...``
        (so the text is never script), and ``command`` is only its name in the records. ``stdin``
        is the path the command's standard input is opened from (the output paths may be a
        terminal too); with ``setsid`` (util-linux ``setsid``), the command runs as the leader of
        a session of its own with its standard input as controlling terminal (a ``command`` then
        runs in ``bash -c``: the session's cwd and exported variables, not its functions).

        The job's first process (the group's leader, which waits for the command and writes its
        status) catches every catchable signal and does nothing with it, so a signal sent to the
        group reaches the command and its status is still reported; the command itself starts
        with the default dispositions (a subshell resets traps).

        With ``gate`` (a FIFO the caller holds open), the job first reads a line from it and
        runs nothing until then, and exits at its end of file: so the command cannot run before
        its launch is complete (a ``kill -9 $$`` would kill the shell before it reported the
        job), nor when the launch failed (the caller then unlinks the FIFO and closes it)."""
        setup, _ = env_lines(env, saved=None)
        move = ""
        if cgroup_procs is not None:  # "0" moves the writer; `builtin` so that no function named printf matters
            move = f"\\unset -f builtin; \\builtin printf 0 >{quote(cgroup_procs)} 2>/dev/null\n"
        if argv is not None:
            target = "-- " + " ".join(quote(word) for word in argv)
            run = f"\\builtin exec {target}"
        else:
            target = f"-- bash -c {quote(command)}"
            run = f"\\builtin eval {quote(command)}"
        if setsid is not None:
            run = f"\\builtin exec {quote(setsid)} -c -w {target}"
        body = (  # a subshell of its own, so that an `exit` in the command still leaves its status
            f"\\builtin trap : {_LEADER_TRAPS}\n"
            f"( {move}{setup}{run}\n) <{quote(stdin)} >{quote(fifo_out)} 2>{quote(fifo_err)}\n"
            f'>|"{markers}r.$?"\n'
        )
        if cwd is not None:
            body = f"if \\builtin cd -- {quote(cwd)} 2>/dev/null; then\n{body}else >|{quote(markers + 'c')}; fi\n"
        if gate is not None:  # (`_` is the last argument of the previous command: bash resets it anyway)
            body = f"\\builtin read -r _ <{quote(gate)} || \\builtin exit 1\n{body}"
        sent = await self._begin()
        outcome = await self._exchange(
            sent,
            f'\\builtin set -m\n{{ {body}}} </dev/null >/dev/null 2>&1 &\n>|{self._marker}"p.$!"\n>|{self._marker}d\n',
            time_limit=INTERNAL_TIME_LIMIT,
        )
        if outcome is None or outcome.pid is None:
            raise ShellExited(None, self.destroyed, "the shell did not start the job")
        return outcome.pid

    async def kill(self, grace: float = 1.0, *, destroy: bool = True) -> None:
        """End the shell and everything it started (``destroy``: the session is being deleted)."""
        self.destroyed = self.destroyed or destroy
        if not self.alive:
            return
        self.ended_by_server = True
        groups = []
        for child in procfs.children(self.pid):  # its jobs, each a process group
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(child) == child:
                    groups.append(child)
                    signal_group(child, signal.SIGTERM)
        await kill_tree(self.pid, include_root=True, grace=grace)
        for group in groups:  # and what joined those groups while the tree was being walked
            signal_group(group, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exit), 5)
