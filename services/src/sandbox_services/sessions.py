"""Sessions: one persistent shell each, created lazily, isolated from one another.

Operations: ``create``, ``delete``, ``list``. Other services run commands through
:meth:`SessionsService.run` (foreground, under the session's lock) and
:meth:`SessionsService.launch` (a job started from the session's state; the lock is held
only until it has a pid). The id ``__DISABLE_SESSION__`` runs each command in a fresh
``bash -c`` instead (sessionless).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import msgspec

from sandbox_core.clock import now_iso
from sandbox_core.config import user_environment
from sandbox_core.contract.models import SessionCreated, SessionDeleted, SessionInfo, SessionList
from sandbox_core.errors import ErrorCode, SandboxError, validation_error
from sandbox_core.hookspecs import hookimpl
from sandbox_core.metrics import SESSIONS
from sandbox_core.registry import ServiceContext, ServiceSpec, operation

from .cgroups import Cgroup, open_tree
from .inotify import DirectoryWatcher
from .jobs import Job
from .orphans import Reaper, end_adopted
from .output import Gap
from .params import NonNegativeInt, PositiveInt, PositiveMs, PositiveSeconds
from .shell import Shell, ShellExited, take_markers
from .spawn import spawn
from .stdio import SETSID, open_pipe, open_pty

DISABLE_SESSION = "__DISABLE_SESSION__"
#: In the environment of every process a session starts (and of a job's): how what escaped
#: its tree is still found when its session is deleted or its job killed (see orphans.py).
SESSION_MARK = "SANDBOX_SESSION"
JOB_MARK = "SANDBOX_JOB"
DEFAULT_SESSION = "default"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CD_FAILED = 'printf "Failed to change directory to \'%s\'\\n" "$1" >&2; exit 1'  # the cwd is $1


class SessionSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.sessions]``"""

    command_timeout_ms: PositiveMs | None = None  # default foreground timeout (else COMMAND_TIMEOUT_MS)
    kill_grace_ms: NonNegativeInt = 2000  # TERM to KILL when a command is stopped
    max_output_bytes: PositiveInt = 64 * 1024 * 1024  # per stream of one foreground exec
    output_ring_bytes: PositiveInt = 1024 * 1024  # per streamed/background command
    max_sessions: PositiveInt = 1000
    #: a session with no command for this long (and no process running) is deleted; None: never
    idle_timeout_s: PositiveSeconds | None = None


def check_env(env: Mapping[str, str | None] | None) -> None:
    for key, value in (env or {}).items():
        if not _ENV_NAME.match(key):
            raise validation_error(f"Invalid environment variable name: {key}", f"env.{key}")
        if value is not None and "\x00" in value:
            raise validation_error(f"Environment variable {key} must not contain NUL", f"env.{key}")


def _memory_dir() -> str | None:
    """/dev/shm where it is a writable directory (shells write a marker file per command in our
    directory: memory is quicker than disk), else None (the system's temporary directory)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _unlink(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def check_command(command: str) -> None:
    """A command a shell can be given: bash cannot hold a NUL byte in a string."""
    if "\x00" in command:
        raise validation_error("command must not contain NUL bytes", "command")


def check_session_id(session_id: str | None, fieldname: str = "sessionId") -> str:
    if session_id is None:
        return DEFAULT_SESSION
    if not session_id.strip():
        raise validation_error("sessionId must not be empty or whitespace", fieldname)
    if len(session_id) > 256 or "\x00" in session_id:
        raise validation_error("sessionId must be at most 256 characters without NUL", fieldname)
    return session_id


def _ended(code: int | None) -> str:
    """How a shell ended, in words: "was killed by signal 9 (SIGKILL)" or "exited with code 3"."""
    if code is not None and code > 128:
        try:
            name = f" ({signal.Signals(code - 128).name})"
        except ValueError:
            name = ""
        return f"was killed by signal {code - 128}{name}"
    return f"exited with code {code}"


def _terminated(session_id: str, code: int | None, reason: str = "") -> SandboxError:
    """410 SESSION_TERMINATED: the session's shell is gone (the next call starts a fresh one)."""
    if reason:
        message = f"Session '{session_id}' terminated: {reason}; the next call starts a fresh shell"
        return SandboxError(ErrorCode.SESSION_TERMINATED, message, {"sessionId": session_id, "reason": reason})
    return SandboxError(
        ErrorCode.SESSION_TERMINATED,
        f"Session '{session_id}' terminated: its shell {_ended(code)}",
        {"sessionId": session_id, "exitCode": code},
    )


def _destroyed(session_id: str) -> SandboxError:
    return SandboxError(ErrorCode.SESSION_DESTROYED, f"Session '{session_id}' was destroyed", {"sessionId": session_id})


def _sessionless_argv(command: str, cwd: str | None) -> tuple[list[str], str | None]:
    """``bash -c command`` and its cwd; for a cwd that is no directory, a script that fails as a
    session's ``cd`` would (exit code 1 and the shell's message), run from the workspace."""
    if cwd and not os.path.isdir(cwd):
        return ["bash", "-c", _CD_FAILED, "bash", cwd], None
    return ["bash", "-c", command], cwd


@dataclass
class Session:
    id: str
    cwd: str
    env: dict[str, str]
    command_timeout_ms: int | None
    created_at: str = field(default_factory=now_iso)
    shell: Shell | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    jobs: set[Job] = field(default_factory=set)
    destroyed: bool = False
    last_used: float = field(default_factory=time.monotonic)
    cgroup: Cgroup | None = None

    def idle_for(self, now: float) -> float:
        """How long the session has had nothing to do (0 while a command or a process runs)."""
        if self.lock.locked() or any(not job.done for job in self.jobs):
            return 0.0
        return now - self.last_used

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            cwd=self.cwd,
            env=self.env or None,
            command_timeout_ms=self.command_timeout_ms,
            created_at=self.created_at,
        )


class SessionsService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.settings: SessionSettings = ctx.settings
        self.registry = ctx.registry
        self.workspace = ctx.workspace
        self.log = ctx.log
        self.sessions: dict[str, Session] = {}
        self.jobs: dict[int, Job] = {}
        self._next_tag = 0
        self._next_shell = 0
        self._fifo_dir = ""
        default = self.settings.command_timeout_ms
        if default is None and os.environ.get("COMMAND_TIMEOUT_MS", "").isdigit():
            default = int(os.environ["COMMAND_TIMEOUT_MS"]) or None
        self.default_timeout_ms: int | None = default
        self.grace = self.settings.kill_grace_ms / 1000
        #: Awaited with each session being deleted (or expired, or ended at shutdown), once its
        #: foreground command is done and before its processes are ended: how other services
        #: end what they hold for it (its terminal). A hook's failure is logged, not raised.
        self.on_destroy: list[Callable[[Session], Awaitable[None]]] = []
        #: the shell each streamed job was started from (until the job ends)
        self._stream_shells: dict[int, Shell] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        ctx.registry.metrics.source(SESSIONS, lambda: len(self.sessions))

    async def startup(self) -> None:
        self._fifo_dir = tempfile.mkdtemp(prefix="sbx", dir=_memory_dir())  # short: shells name it often
        self._cgroups = open_tree()
        self.log.debug("sessions.cgroups", base=self._cgroups.base if self._cgroups else None)
        self._reaper = Reaper()
        self._reaper.start()
        self._expiry: asyncio.Task[None] | None = None
        if self.settings.idle_timeout_s is not None:
            self._expiry = asyncio.create_task(self._expire_idle(self.settings.idle_timeout_s), name="idle sessions")
        if not self._reaper.active:
            self.log.warning("sessions.no_subreaper", detail="orphaned processes go to init and outlive their session")
        self._watcher = DirectoryWatcher()

    async def _expire_idle(self, limit: float) -> None:
        """Delete the sessions idle for ``limit`` seconds, looking every ``limit / 2`` (at most 30 s)."""
        while True:
            await asyncio.sleep(min(max(limit / 2, 0.05), 30.0))
            now = time.monotonic()
            for session in [s for s in self.sessions.values() if s.idle_for(now) >= limit]:
                try:
                    await self._destroy(session, grace=self.grace)
                    self.log.info("session.expired", session_id=session.id, idle_s=round(now - session.last_used, 1))
                except Exception:
                    self.log.exception("session.expire_failed", session_id=session.id)

    async def aclose(self) -> None:
        """End everything at once: every session (its shell, foreground command and jobs, not
        waiting for the command) and every sessionless job, each given the registry's
        ``stop_grace`` (at most) between SIGTERM and SIGKILL."""
        grace = min(self.grace, self.registry.stop_grace)
        tasks = [t for t in (self._expiry, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sessions = list(self.sessions.values())
        owned = {job for session in sessions for job in session.jobs}
        loose = [job for job in self.jobs.values() if job not in owned and job.pid is not None and not job.done]
        results = await asyncio.gather(
            *(job.kill(grace=grace) for job in loose),
            *(self._destroy(session, grace=grace, wait=0.0) for session in sessions),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                self.log.error("sessions.close_failed", error=repr(result))
        for job in list(self.jobs.values()):
            await job.aclose()
        self.sessions.clear()
        await end_adopted(None, grace=grace)
        if self._cgroups is not None:
            await self._cgroups.close()
        await self._reaper.aclose()
        self._watcher.close()
        shutil.rmtree(self._fifo_dir, ignore_errors=True)

    # jobs' ends ----------------------------------------------------------------------------

    def _on_job_pid_exit(self, job: Job) -> None:
        """A session job's process ended: its status is the marker file it left."""
        status, cd_failed = take_markers(self._fifo_dir, f"j{job.tag}.")
        if job.done:
            return
        if job.killed:
            job.unwatch_pid()  # Job.kill() finishes it with the signal it used
            return
        if cd_failed:
            job.ring.write("stderr", f"Failed to change directory to '{job.cwd}'\n".encode())
            status = 1
        shell = self._stream_shells.pop(job.tag, None)
        if shell is not None and shell.lost():  # the session's shell died while the stream ran
            job.unwatch_pid()
            task = asyncio.create_task(self._finish_with_shell(job, shell, status), name=f"job {job.tag} shell lost")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        job.finish(status)

    async def _finish_with_shell(self, job: Job, shell: Shell, status: int | None) -> None:
        """A streamed command is the session's: when the session's shell died while it ran (a
        ``kill -9 $$`` in it, say), it ends with the shell's status (128 + the signal), and says
        so on its stderr; the next call on the session answers 410 (see :meth:`_shell`)."""
        code = await shell.lost_status()
        if code is None:
            job.finish(status)
            return
        note = f"the session's shell {_ended(code)} while this command ran (the command's own exit status: {status})"
        session = self.sessions.get(job.session_id or "")
        if session is not None and session.shell is shell:  # not yet told to a call
            note += f"; the next call on session '{session.id}' answers 410 SESSION_TERMINATED"
        job.finish(code, note=f"\n[sandbox: {note}]\n")

    # sessions ------------------------------------------------------------------------------

    def _new_session(
        self,
        session_id: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        command_timeout_ms: int | None = None,
    ) -> Session:
        if len(self.sessions) >= self.settings.max_sessions:
            raise SandboxError(
                ErrorCode.RESOURCE_BUSY,
                f"Too many sessions (limit {self.settings.max_sessions})",
                {"limit": self.settings.max_sessions},
            )
        session = Session(session_id, cwd or self.workspace, dict(env or {}), command_timeout_ms)
        self.sessions[session_id] = session
        return session

    def get_or_create(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            session = self._new_session(session_id)
        return session

    def _start_dir(self, session: Session) -> str:
        """Where a fresh shell of ``session`` starts: its cwd, else the workspace, else home."""
        for cwd in (session.cwd, self.workspace):
            if os.path.isdir(cwd):
                return cwd
        return os.path.expanduser("~")

    def shell_env(self, session: Session) -> dict[str, str]:
        """The environment a fresh shell of ``session`` starts with: the server's (less its own
        configuration: :func:`~sandbox_core.config.user_environment`), the session's own, UTF-8
        locale and the session's mark."""
        return {**user_environment(), **session.env, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", SESSION_MARK: session.id}

    async def _shell(self, session: Session) -> Shell:
        """The session's live shell, starting a fresh one if it has none or the server ended it.

        A shell that died of something else since the last call (a streamed or background
        command's ``kill -9 $$``, the OOM killer) took the session's state with it: the call
        answers 410 SESSION_TERMINATED, as a foreground command's ``exit`` does, and the next one
        starts a fresh shell."""
        shell = session.shell
        if shell is not None and shell.alive:
            return shell
        if shell is not None and not shell.ended_by_server:
            session.shell = None
            raise _terminated(session.id, shell.exit_code)
        env = self.shell_env(session)
        self._next_shell += 1
        shell = Shell(
            cwd=self._start_dir(session),
            env=env,
            workdir=os.path.join(self._fifo_dir, str(self._next_shell)),
            max_output=self.settings.max_output_bytes,
            watcher=self._watcher,
        )
        await shell.start()
        if self._cgroups is not None and session.cgroup is None:
            session.cgroup = self._cgroups.new(f"session-{self._next_shell}")
        if session.cgroup is not None:
            session.cgroup.add(shell.pid)  # before any command: everything it starts is in there
        session.shell = shell
        self.log.debug("session.shell_started", session_id=session.id, pid=shell.pid)
        return shell

    def cwd_of(self, session_id: str | None) -> str:
        """The session's current directory, read from its shell without waiting for its lock
        (``/proc/<pid>/cwd``); the workspace for sessionless calls and unknown sessions."""
        session = self.sessions.get(session_id or DEFAULT_SESSION)
        if session is None or session_id == DISABLE_SESSION:
            return self.workspace
        shell = session.shell
        if shell is not None and shell.alive:
            try:
                return os.readlink(f"/proc/{shell.pid}/cwd")
            except OSError:
                pass
        return session.cwd

    def timeout_for(self, session: Session | None, timeout_ms: int | None) -> int | None:
        if timeout_ms is not None:
            return timeout_ms
        if session is not None and session.command_timeout_ms is not None:
            return session.command_timeout_ms
        return self.default_timeout_ms

    async def run(
        self,
        session_id: str,
        command: str,
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        timeout_ms: int | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run a foreground command in the session; raise on timeout or shell death.

        A caller that goes away (its task cancelled) leaves the command to be ended by the shell
        (SIGTERM to the jobs it started, SIGKILL after the grace period); the session's lock is
        free at once, and the next command runs as soon as that one has ended."""
        check_command(command)
        session = self.get_or_create(session_id)
        timeout = self.timeout_for(session, timeout_ms)
        session.last_used = time.monotonic()
        async with session.lock:
            if session.destroyed:
                raise _destroyed(session_id)
            shell = await self._shell(session)
            try:
                code, out, err, timed_out = await shell.run(
                    command,
                    env=env,
                    cwd=cwd,
                    time_limit=timeout / 1000 if timeout else None,
                    grace=self.grace,
                )
            except ShellExited as exc:
                session.shell = None
                if exc.destroyed or session.destroyed:
                    raise _destroyed(session_id) from None
                if exc.stopped:  # we killed a shell still stuck after a timeout (a builtin loop)
                    raise self._timeout_error(session_id, command, timeout) from None
                raise _terminated(session_id, exc.exit_code, exc.reason) from None
            if session.destroyed or shell.destroyed:
                # the session was deleted while the command ran: its result (killed) is not the answer
                raise _destroyed(session_id)
        if timed_out:
            raise self._timeout_error(session_id, command, timeout)
        return code, out, err

    @staticmethod
    def _timeout_error(session_id: str, command: str, timeout: int | None) -> SandboxError:
        return SandboxError(
            ErrorCode.COMMAND_EXECUTION_ERROR,
            f"Command timeout after {timeout} ms",
            {"sessionId": session_id, "command": command, "timeoutMs": timeout},
        )

    # jobs ----------------------------------------------------------------------------------

    def _new_job(self, command: str, session_id: str | None, ring_bytes: int | None) -> Job:
        self._next_tag += 1
        job = Job(
            self._next_tag, command, session_id=session_id, ring_bytes=ring_bytes or self.settings.output_ring_bytes
        )
        job.mark = f"{JOB_MARK}={job.tag}"
        self.jobs[job.tag] = job
        job.on_done.append(self._job_done)
        return job

    def _new_cgroup(self, job: Job) -> Cgroup | None:
        """A cgroup for a job (its command moves itself in before it runs), where we may make one."""
        return self._cgroups.new(f"job-{job.tag}") if self._cgroups is not None else None

    def _job_done(self, job: Job) -> None:
        self.jobs.pop(job.tag, None)
        self._stream_shells.pop(job.tag, None)
        if job.cgroup is not None and not job.cgroup.pids():
            job.cgroup.remove()  # (one its children still use stays until the session or server ends)
        session = self.sessions.get(job.session_id or "")
        if session is not None:
            session.jobs.discard(job)

    async def launch(
        self,
        session_id: str,
        command: str,
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
        timeout_ms: int | None = None,
        ring_bytes: int | None = None,
        streamed: bool = False,
        argv: list[str] | None = None,
        stdin: bool = False,
        pty: tuple[int, int] | None = None,
    ) -> Job:
        """Start a job from the session's current state and return it once it has a pid.

        A ``streamed`` job (an exec stream's command) is the session's: if the session's shell
        dies while it runs, it ends with the shell's status (see :meth:`_finish_with_shell`).

        ``argv``: run that program with those arguments, no shell parsing (``command`` is then
        only its display name). ``stdin``: its standard input is a pipe the server writes
        (:attr:`Job.input`), else ``/dev/null``. ``pty`` (cols, rows): it runs on a terminal of
        its own, its controlling terminal, whose output is its stdout (see :mod:`.stdio`)."""
        if pty is not None and SETSID is None:
            raise SandboxError(
                ErrorCode.PROCESS_ERROR, "A terminal per process needs util-linux `setsid`, which is not installed"
            )
        if session_id == DISABLE_SESSION:
            return await self._spawn(
                command,
                env=env,
                cwd=cwd,
                timeout_ms=timeout_ms,
                ring_bytes=ring_bytes,
                argv=argv,
                stdin=stdin,
                pty=pty,
            )
        if argv is None:
            check_command(command)
        session = self.get_or_create(session_id)
        job = self._new_job(command, session_id, ring_bytes)
        job.argv = argv
        env = {**(env or {}), JOB_MARK: str(job.tag)}
        job.cwd = cwd
        job.group = True  # job control: the shell starts it as a process group of its own
        job.cgroup = self._new_cgroup(job)
        fifo_out = os.path.join(self._fifo_dir, f"{job.tag}.out")
        fifo_err = os.path.join(self._fifo_dir, f"{job.tag}.err")
        fifos = (fifo_out, fifo_err)
        gate = os.path.join(self._fifo_dir, f"{job.tag}.go")  # the job waits there (see Shell.launch)
        fds: list[int] = []
        gate_fd = -1
        master = -1
        try:
            if pty is not None:
                job.input, master = open_pty(*pty)
                fifo_out = fifo_err = job.input.path  # the job opens the terminal for all three
            else:
                if stdin:
                    job.input = open_pipe()
                for path in (fifo_out, fifo_err):
                    os.mkfifo(path, 0o600)
                    fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            os.mkfifo(gate, 0o600)
            gate_fd = os.open(gate, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)  # a writer: the job's open never waits
            session.last_used = time.monotonic()
            async with session.lock:
                if session.destroyed:
                    raise _destroyed(session_id)
                shell = await self._shell(session)
                try:
                    job.pid = await shell.launch(
                        command,
                        fifo_out=fifo_out,
                        fifo_err=fifo_err,
                        markers=os.path.join(self._fifo_dir, f"j{job.tag}."),
                        env=env,
                        cwd=cwd,
                        cgroup_procs=job.cgroup.procs if job.cgroup is not None else None,
                        gate=gate,
                        argv=argv,
                        stdin=job.input.path if job.input is not None else "/dev/null",
                        setsid=SETSID if pty is not None else None,
                    )
                except ShellExited as exc:
                    session.shell = None
                    raise _terminated(session_id, exc.exit_code, exc.reason) from None
                session.jobs.add(job)
                if streamed:
                    self._stream_shells[job.tag] = shell
        except BaseException:
            for fd in fds:
                os.close(fd)
            if job.input is not None:
                job.input.release()
            if master >= 0:
                os.close(master)
            self.jobs.pop(job.tag, None)
            _unlink(*fifos, gate)  # the gate first gone, then closed: a job started
            if gate_fd >= 0:  # meanwhile reads its end (or cannot open it) and exits unrun
                os.close(gate_fd)
            raise

        # the job opens its FIFOs itself, so they stay linked (and the gate open) until it has ended
        def release(_: Job) -> None:
            os.close(gate_fd)
            _unlink(*fifos, gate)

        job.on_done.append(release)
        if master >= 0:
            job.attach(master, None)
        else:
            job.attach(fds[0], fds[1])
        job.watch_pid(self._on_job_pid_exit)
        if timeout_ms:
            job.set_timeout(timeout_ms / 1000, self.grace)
        os.write(gate_fd, b"\n")  # the launch is complete: the command may run
        return job

    async def _spawn(
        self,
        command: str,
        *,
        env: Mapping[str, str | None] | None,
        cwd: str | None,
        timeout_ms: int | None,
        ring_bytes: int | None,
        argv: list[str] | None = None,
        stdin: bool = False,
        pty: tuple[int, int] | None = None,
    ) -> Job:
        """A sessionless job: a fresh ``bash -c`` in its own process group (with ``argv``, a
        bash that execs it: no parsing, and a missing program is 127 as in a session)."""
        for name, value in (("command", command), ("cwd", cwd or "")):
            if "\x00" in value:  # an argv or cwd cannot hold NUL
                raise validation_error(f"{name} must not contain NUL", name)
        words = argv
        argv, cwd = _sessionless_argv(command, cwd)
        if words is not None and argv[2] != _CD_FAILED:
            argv = ["bash", "-c", 'exec -- "$@"', "bash", *words]
        job = self._new_job(command, None, ring_bytes)
        job.argv = words
        job.group = True  # a session of its own, so a group of its own
        job.cgroup = self._new_cgroup(job)
        if pty is not None:  # setsid makes it a session's leader with the terminal as its own
            assert SETSID is not None
            argv = [SETSID, "-c", "-w", "--", *argv]
        if job.cgroup is not None:  # sh moves itself into the job's cgroup, then becomes the command
            argv = ["sh", "-c", '{ echo 0 > "$0"; } 2>/dev/null; exec "$@"', job.cgroup.procs, *argv]
        master = -1
        if pty is not None:
            job.input, master = open_pty(*pty)
            out_r, out_w = master, os.dup(job.input.keep)
            err_r, err_w = -1, os.dup(job.input.keep)
        else:
            if stdin:
                job.input = open_pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
        full_env = {
            **user_environment(),
            **{k: v for k, v in (env or {}).items() if v is not None},
            JOB_MARK: str(job.tag),
        }
        try:
            proc = spawn(
                argv,
                stdin=job.input.keep if job.input is not None else subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                cwd=cwd or self.workspace,
                env=full_env,
                start_new_session=pty is None,  # (setsid makes the session itself)
            )
        except OSError as exc:
            os.close(out_r)
            if err_r >= 0:
                os.close(err_r)
            if job.input is not None:
                job.input.release()
            self.jobs.pop(job.tag, None)
            raise SandboxError(
                ErrorCode.COMMAND_EXECUTION_ERROR, f"Failed to start command: {exc}", {"command": command, "cwd": cwd}
            ) from None
        finally:
            os.close(out_w)
            os.close(err_w)
        os.set_blocking(out_r, False)
        if err_r >= 0:
            os.set_blocking(err_r, False)
        job.pid = proc.pid
        job.attach(out_r, err_r if err_r >= 0 else None)
        job.watch_child(proc)
        if timeout_ms:
            job.set_timeout(timeout_ms / 1000, self.grace)
        return job

    async def run_sessionless(
        self, command: str, *, env: Mapping[str, str | None] | None, cwd: str | None, timeout_ms: int | None
    ) -> tuple[int, bytes, bytes]:
        """Run ``command`` in a fresh shell and collect its raw output (bounded).

        The command belongs to its caller: a caller that goes away before it has ended (its task
        cancelled: the client left, or its deadline passed) ends its process tree (SIGTERM to
        its process group, SIGKILL after the grace period), as a session's command is ended."""
        timeout = self.timeout_for(None, timeout_ms)
        job = await self._spawn(
            command, env=env, cwd=cwd, timeout_ms=timeout, ring_bytes=2 * self.settings.max_output_bytes
        )
        reader = job.ring.reader(0, blocking=True)
        out = bytearray()
        err = bytearray()
        limit = self.settings.max_output_bytes
        try:
            async for item in reader:
                if isinstance(item, Gap):  # not for a blocking reader: it is never overtaken
                    continue
                target = out if item.kind == "stdout" else err
                room = limit - len(target)
                if room > 0:
                    target += item.data[:room]
            code = await job.wait()
        finally:
            reader.close()
            if not job.done:  # the caller left (or failed) before the command ended
                await job.kill(self.grace)
        return (code if code is not None else -1), bytes(out), bytes(err)

    # operations ----------------------------------------------------------------------------

    @operation
    async def create(
        self,
        id: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        command_timeout_ms: PositiveMs | None = None,
    ) -> SessionCreated:
        """Create a session (its shell starts now); a duplicate live id is 409."""
        session_id = id if id is not None else f"session_{int(time.time() * 1000)}_{os.urandom(6).hex()}"
        check_session_id(session_id, "id")
        if session_id == DISABLE_SESSION:
            raise validation_error(f"'{DISABLE_SESSION}' is reserved", "id")
        check_env(env)
        existing = self.sessions.get(session_id)
        if existing is not None:
            if existing.shell is None or existing.shell.alive:
                raise SandboxError(
                    ErrorCode.SESSION_ALREADY_EXISTS,
                    f"Session '{session_id}' already exists",
                    {"sessionId": session_id, "containerPlacementId": None},
                )
            del self.sessions[session_id]
        session = self._new_session(session_id, cwd=cwd, env=env, command_timeout_ms=command_timeout_ms)
        try:
            await self._shell(session)
        except OSError as exc:
            del self.sessions[session_id]
            raise SandboxError(
                ErrorCode.INTERNAL_ERROR, f"Failed to start the session shell: {exc}", {"sessionId": session_id}
            ) from None
        self.log.info("session.created", session_id=session_id)
        return SessionCreated(
            success=True,
            id=session_id,
            message=f"Session {session_id} created",
            data=session.info(),
            timestamp=now_iso(),
            container_placement_id=None,
        )

    @operation
    async def delete(self, session_id: str) -> SessionDeleted:
        """Delete a session: its background jobs and its shell are ended; unknown is 404."""
        session = self.sessions.get(session_id)
        if session is None:
            raise SandboxError(
                ErrorCode.SESSION_NOT_FOUND, f"Session '{session_id}' not found", {"sessionId": session_id}
            )
        await self._destroy(session, grace=self.grace)
        self.log.info("session.deleted", session_id=session_id)
        return SessionDeleted(success=True, session_id=session_id, timestamp=now_iso())

    async def _destroy(self, session: Session, grace: float, wait: float | None = None) -> None:
        """End a session: wait up to ``wait`` (default ``grace``) for its foreground command,
        then end it all (SIGTERM, SIGKILL after ``grace``)."""
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        wait = grace if wait is None else wait
        if wait > 0:
            try:
                await asyncio.wait_for(session.lock.acquire(), wait)
            except TimeoutError:
                pass
            else:
                session.lock.release()
        session.destroyed = True

        async def hook_of(hook: Callable[[Session], Awaitable[None]]) -> None:
            try:
                await hook(session)
            except Exception:
                self.log.exception("session.destroy_hook_failed", session_id=session.id)

        # all at once (each hook has begun its work before the first kill is sent)
        ends = [*(hook_of(hook) for hook in list(self.on_destroy)), *(job.kill(grace) for job in list(session.jobs))]
        if session.shell is not None:
            ends.append(session.shell.kill(grace))
        await asyncio.gather(*ends)
        await end_adopted(f"{SESSION_MARK}={session.id}", grace)  # what escaped its tree
        if session.cgroup is not None:
            await session.cgroup.kill()  # and what escaped that (the environment mark cleared)

    @operation
    async def list(self) -> SessionList:
        """The ids of every session."""
        return SessionList(success=True, sessions=sorted(self.sessions), timestamp=now_iso())


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``sessions`` plugin (entry point): this service alone."""
    register(ServiceSpec("sessions", SessionsService, SessionSettings, "persistent shell sessions"))
