"""Python contexts: an IPython kernel each (ipykernel), driven with jupyter_client.

One reader per channel runs for the kernel's whole life and always drains it (the events of
the current run go to its :class:`~.output.RunOutput`, which bounds what waits for a slow
reader); a watcher notices when the kernel process ends. A run ends when the kernel has sent
both its ``execute_reply`` and its ``idle`` status for it (or the reply and a second more).
Kernel output is flushed every 20 ms, so output streams as it is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

from sandbox_core.config import user_environment
from sandbox_core.models.interpreter import (
    MIME_KEYS,
    CodeCompleteEvent,
    CodeErrorEvent,
    CodeResultEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)

from ..spawn import claim, disclaim
from .executor import Executor, ExecutorDied, ExecutorUnavailable, Run
from .output import RunOutput

#: Run once in each kernel a context gets (silently): output streams promptly, tracebacks are
#: plain text, and the context's cwd and environment apply.
SETUP = """\
import os as _sbx_os, sys as _sbx_sys
for _sbx_s in (_sbx_sys.stdout, _sbx_sys.stderr):
    if hasattr(_sbx_s, "flush_interval"):
        _sbx_s.flush_interval = 0.02
try:
    get_ipython().run_line_magic("colors", "nocolor")
except Exception:
    pass
_sbx_os.chdir({cwd!r})
_sbx_os.environ.update({env!r})
del _sbx_os, _sbx_sys, _sbx_s
"""

#: After the reply, how long to wait for the ``idle`` status that follows the last output.
IDLE_AFTER_REPLY_S = 1.0
#: How often the watcher checks that the kernel process still runs.
WATCH_S = 0.25


def import_jupyter() -> Any:
    """jupyter_client's AsyncKernelManager (imported on first use: the server does not pay for it
    until a Python context is made); ExecutorUnavailable when it or ipykernel is missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jupyter_core's notice about its platformdirs move
            import ipykernel  # noqa: F401  (the kernel the manager starts)
            from jupyter_client.manager import AsyncKernelManager
    except ImportError as exc:
        raise ExecutorUnavailable(f"Python contexts need jupyter_client and ipykernel: {exc}") from None
    return AsyncKernelManager


class KernelRun(Run):
    def __init__(self, run_id: str, out: RunOutput) -> None:
        super().__init__(run_id, out)
        self.reply: dict[str, Any] | None = None
        self.idle = False
        self.error_seen = False
        self.timer: asyncio.TimerHandle | None = None


class KernelExecutor(Executor):
    kind = "python"

    def __init__(self, workspace: str) -> None:
        super().__init__()
        self.workspace = workspace
        self.start_dir = workspace if os.path.isdir(workspace) else None
        self._dir = tempfile.TemporaryDirectory(prefix="sandbox-kernel-")
        self._pid: int | None = None
        self.km: Any = None
        self.kc: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._alive = False
        self._reply_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}

    @property
    def alive(self) -> bool:
        return self._alive and not self.closed

    async def start(self, limit_s: float) -> None:
        manager_class = import_jupyter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Unix sockets in the private directory, not loopback TCP: no port another
                # process could take between choosing it and the kernel binding it (a kernel that
                # lost that race died at start under load), and nothing listening on the network
                self.km = manager_class(
                    kernel_name="python3",
                    connection_file=os.path.join(self._dir.name, "kernel.json"),
                    transport="ipc",
                    ip=os.path.join(self._dir.name, "ipc"),
                )
                await asyncio.wait_for(
                    self.km.start_kernel(
                        cwd=self.start_dir,
                        env=user_environment(),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                    limit_s,
                )
                self._pid = _kernel_pid(self.km)
                if self._pid is not None:
                    claim(self._pid)  # jupyter_client reaps it, not the orphan reaper
                self.kc = self.km.client()
                # no heartbeat channel (its thread raced the client's context being destroyed
                # at close; _watch asks the kernel manager instead) and no stdin (allow_stdin=False)
                self.kc.start_channels(hb=False, stdin=False)
                await self.kc.wait_for_ready(timeout=limit_s)
        except Exception as exc:
            await self.aclose()
            raise ExecutorUnavailable(f"the Python kernel did not start: {type(exc).__name__}: {exc}") from None
        self._alive = True
        self._tasks = [
            asyncio.create_task(self._read_iopub()),
            asyncio.create_task(self._read_shell()),
            asyncio.create_task(self._watch()),
        ]

    # reading ---------------------------------------------------------------------------------

    def _current(self, msg: dict[str, Any]) -> KernelRun | None:
        run = self.run
        parent = msg.get("parent_header") or {}
        if isinstance(run, KernelRun) and parent.get("msg_id") == run.id:
            return run
        return None

    async def _read_iopub(self) -> None:
        while True:
            msg = await self.kc.get_iopub_msg()
            run = self._current(msg)
            if run is None:
                continue
            kind = msg.get("msg_type")
            content = msg.get("content") or {}
            if kind == "stream":
                text = str(content.get("text", ""))
                event = CodeStderrEvent(text=text) if content.get("name") == "stderr" else CodeStdoutEvent(text=text)
                run.out.put(event)
            elif kind in ("execute_result", "display_data"):
                run.out.put(result_event(content))
            elif kind == "error":
                run.error_seen = True
                run.out.put_final(error_event(content))
            elif kind == "status" and content.get("execution_state") == "idle":
                run.idle = True
                self._maybe_end(run)

    async def _read_shell(self) -> None:
        while True:
            msg = await self.kc.get_shell_msg()
            run = self._current(msg)
            if run is None or msg.get("msg_type") != "execute_reply":
                continue
            run.reply = msg.get("content") or {}
            if not run.idle:  # the idle status may have been lost: end a little later anyway
                run.timer = asyncio.get_running_loop().call_later(IDLE_AFTER_REPLY_S, self._end, run)
            self._maybe_end(run)

    def _maybe_end(self, run: KernelRun) -> None:
        if run.idle and run.reply is not None:
            self._end(run)

    def _end(self, run: KernelRun) -> None:
        if run.done.done():
            return
        if run.timer is not None:
            run.timer.cancel()
        reply = run.reply or {}
        status = reply.get("status")
        if status == "ok":
            count = reply.get("execution_count")
            run.out.put_final(CodeCompleteEvent(execution_count=count if isinstance(count, int) else None))
        elif not run.error_seen:
            if status == "error":
                run.out.put_final(error_event(reply))
            else:
                run.out.put_final(CodeErrorEvent(ename="Aborted", evalue=f"The kernel answered '{status}'"))
        run.end()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                alive = await self.km.is_alive()
            except Exception:
                alive = False
            if not alive:
                break
        self._alive = False
        provisioner = getattr(self.km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        self.exit_code = process.poll() if process is not None else None
        await asyncio.sleep(0.1)  # the readers pass on the last output first
        if self.run is not None:
            self.run.end(ExecutorDied(f"the Python kernel exited (code {self.exit_code})"))

    # requests --------------------------------------------------------------------------------

    def _send(self, code: str, out: RunOutput, *, silent: bool) -> KernelRun:
        if not self.alive:
            raise ExecutorDied(f"the Python kernel has exited (code {self.exit_code})")
        msg_id = self.kc.execute(code, silent=silent, store_history=not silent, allow_stdin=False, stop_on_error=False)
        run = KernelRun(msg_id, out)
        self.run = run
        return run

    async def setup(self, cwd: str, env: Mapping[str, str], limit_s: float) -> None:
        out = RunOutput(1 << 20)
        run = self._send(SETUP.format(cwd=cwd, env=dict(env)), out, silent=True)
        await asyncio.wait_for(asyncio.shield(run.done), limit_s)
        while (event := await out.get()) is not None:
            if isinstance(event, CodeErrorEvent):
                raise ValueError(f"{event.ename}: {event.evalue}")

    async def execute(self, code: str, language: str, out: RunOutput) -> None:
        run = self._send(code, out, silent=False)
        await asyncio.shield(run.done)

    async def interrupt(self) -> None:
        if self.alive:
            await self.km.interrupt_kernel()

    async def aclose(self) -> None:
        self.closed = True
        self._alive = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.kc is not None:
            with contextlib.suppress(Exception):
                self.kc.stop_channels()
        if self.km is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.km.shutdown_kernel(now=True), 10)
        if self._pid is not None:
            disclaim(self._pid)
        if self.run is not None:
            self.run.end(ExecutorDied("the context was closed"))
        self._dir.cleanup()


def _kernel_pid(km: Any) -> int | None:
    """The kernel process's pid (jupyter_client's local provisioner keeps its Popen)."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    pid = getattr(process, "pid", None)
    return pid if isinstance(pid, int) else None


def result_event(content: dict[str, Any]) -> CodeResultEvent:
    """A display or an expression's value: each MIME type the contract names under its key."""
    data = content.get("data") or {}
    metadata = content.get("metadata")
    fields: dict[str, Any] = {}
    for mime, key in MIME_KEYS.items():
        if mime not in data:
            continue
        value = data[mime]
        if key == "json":
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
        elif isinstance(value, list):
            value = "".join(str(v) for v in value)
        elif not isinstance(value, str):
            value = json.dumps(value)
        fields[key] = value
    return CodeResultEvent(metadata=metadata if isinstance(metadata, dict) else {}, **fields)


def error_event(content: dict[str, Any]) -> CodeErrorEvent:
    tb = content.get("traceback")
    return CodeErrorEvent(
        ename=str(content.get("ename", "Error")),
        evalue=str(content.get("evalue", "")),
        traceback=[str(line) for line in tb] if isinstance(tb, list) else [],
    )
