"""Python contexts: an IPython kernel each (ipykernel), driven with jupyter_client.

One reader per channel runs for the kernel's whole life; a watcher notices when the kernel
process ends. The IOPub reader hands the current run's events to its
:class:`~.output.RunOutput`, which holds a bounded number of bytes and makes the reader wait
while the run's own reader takes them: output then waits in the kernel, whose ``print`` blocks
(kernel_bounds.py makes it so), never in the server. What the server's ZeroMQ sockets may hold is
bounded too: a few messages each (``RCVHWM``), each part at most ``max_pending_output_bytes`` and
a little (``MAXMSGSIZE``; the kernel cuts larger messages before it sends them).

A run ends when the kernel has sent both its ``execute_reply`` and its ``idle`` status for it
(or one of them and a few seconds more: a message lost does not leave the run waiting forever).
Kernel output is flushed every 20 ms, so output streams as it is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox_core.contract.models.interpreter import (
    MIME_KEYS,
    CodeCompleteEvent,
    CodeErrorEvent,
    CodeResultEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)

from ..spawn import claim, disclaim
from .executor import EXECUTOR_MARK, Containment, Executor, ExecutorDied, ExecutorUnavailable, Run
from .output import PIECE, RunOutput

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
_sbx_bounds = {{}}
exec({bounds!r}, _sbx_bounds)
_sbx_bounds["bound_output"]({piece!r}, {cap!r})
_sbx_unshadow = _sbx_bounds["unshadow"]
del _sbx_os, _sbx_sys, _sbx_s, _sbx_bounds
"""
#: Run right after SETUP, in a cell of its own (see kernel_bounds.unshadow).
UNSHADOW = "_sbx_unshadow()\ndel _sbx_unshadow\n"
#: The source of what bounds a kernel's output (kernel_bounds.py), sent with SETUP.
BOUNDS = (Path(__file__).parent / "kernel_bounds.py").read_text()
#: What starts a kernel (run as a script: see kernel_launcher.py), and the name of its kernel spec.
LAUNCHER = Path(__file__).with_name("kernel_launcher.py")
KERNEL_NAME = "sandbox-python"

#: After the reply, how long to wait for the ``idle`` status that follows the last output.
IDLE_AFTER_REPLY_S = 1.0
#: After the ``idle`` status, how long to wait for the reply (which should be there already).
REPLY_AFTER_IDLE_S = 5.0
#: Messages each of the server's sockets to a kernel holds before the kernel must wait.
RCVHWM = 4
#: What a message part may have beyond ``max_pending_output_bytes`` (headers, JSON escapes).
MESSAGE_SLACK = 1024 * 1024
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

    def __init__(self, workspace: str, containment: Containment, max_output: int) -> None:
        super().__init__(containment)
        self.max_output = max_output  # the largest message part the kernel sends (it cuts larger ones)
        self.workspace = workspace
        self.start_dir = workspace if os.path.isdir(workspace) else None
        self._dir = tempfile.TemporaryDirectory(prefix="sandbox-kernel-")
        self._pid: int | None = None
        self.km: Any = None
        self.kc: Any = None
        self._zmq: Any = None  # the client's ZeroMQ context, its sockets bounded
        self._tasks: list[asyncio.Task[None]] = []
        self._alive = False

    @property
    def alive(self) -> bool:
        return self._alive and not self.closed

    async def start(self, limit_s: float) -> None:
        manager_class = import_jupyter()
        import zmq
        import zmq.asyncio

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Unix sockets in the private directory, not loopback TCP: no port another
                # process could take between choosing it and the kernel binding it (a kernel that
                # lost that race died at start under load), and nothing listening on the network
                # (kernel_launcher.py moves ipykernel's pipe for forked subprocesses there too)
                self.km = manager_class(
                    kernel_name=KERNEL_NAME,
                    kernel_spec_manager=self._kernel_specs(),
                    connection_file=os.path.join(self._dir.name, "kernel.json"),
                    transport="ipc",
                    ip=os.path.join(self._dir.name, "ipc"),
                )
                await asyncio.wait_for(
                    self.km.start_kernel(
                        cwd=self.start_dir,
                        env=self.containment.environment(),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                    limit_s,
                )
                self._pid = _kernel_pid(self.km)
                if self._pid is not None:
                    claim(self._pid)  # jupyter_client reaps it, not the orphan reaper
                    self.containment.enter(self._pid)  # still starting: it has run no code of the user's
                # the client's sockets (created with these options): a few messages each, and no
                # message part larger than the kernel may send (a larger one costs the connection)
                self._zmq = zmq.asyncio.Context()
                self._zmq.setsockopt(zmq.RCVHWM, RCVHWM)
                self._zmq.setsockopt(zmq.MAXMSGSIZE, self.max_output + MESSAGE_SLACK)
                self.kc = self.km.client(context=self._zmq)
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

    def _kernel_specs(self) -> Any:
        """A kernel spec manager that knows one kernel: ipykernel, started by kernel_launcher.py
        with the server's Python, as the ``python3`` kernel ipykernel installs."""
        from jupyter_client.kernelspec import KernelSpecManager

        directory = os.path.join(self._dir.name, "kernels")
        os.makedirs(os.path.join(directory, KERNEL_NAME))
        spec = {
            "argv": [sys.executable, str(LAUNCHER), "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "interrupt_mode": "signal",
            "metadata": {"debugger": False},
        }
        with open(os.path.join(directory, KERNEL_NAME, "kernel.json"), "w") as fh:
            json.dump(spec, fh)
        return KernelSpecManager(kernel_dirs=[directory])

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
            if run is not None:
                await self._on_iopub(run, msg)
            await asyncio.sleep(0)  # a kernel that prints without pause never holds the loop

    async def _on_iopub(self, run: KernelRun, msg: dict[str, Any]) -> None:
        kind = msg.get("msg_type")
        content = msg.get("content") or {}
        if kind == "stream":
            text = str(content.get("text", ""))
            event = CodeStderrEvent(text=text) if content.get("name") == "stderr" else CodeStdoutEvent(text=text)
            await run.out.put(event)  # waits while the run's reader is behind and taking
        elif kind in ("execute_result", "display_data"):
            await run.out.put(result_event(content))
        elif kind == "error":
            run.error_seen = True
            run.out.put_final(error_event(content))
        elif kind == "status" and content.get("execution_state") == "idle":
            run.idle = True
            if run.reply is None:  # the reply may have been lost: end a while later anyway
                run.timer = asyncio.get_running_loop().call_later(REPLY_AFTER_IDLE_S, self._end, run)
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
            await asyncio.sleep(0)

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
        if run.reply is None:
            if not run.error_seen:
                run.out.put_final(
                    CodeErrorEvent(ename="Aborted", evalue="The kernel went idle but its reply to the run never came")
                )
        elif status == "ok":
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
        env = {**env, EXECUTOR_MARK: self.containment.tag}  # the mark stays, whatever the context's env says
        # a stream message has at most 2 pieces (12 bytes a character at worst, as JSON): far below the cap
        piece = max(256, min(PIECE, self.max_output // 16))
        code = SETUP.format(cwd=cwd, env=env, bounds=BOUNDS, piece=piece, cap=self.max_output)
        for cell in (code, UNSHADOW):
            out = RunOutput(1 << 20)
            run = self._send(cell, out, silent=True)
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
        if self._zmq is not None:
            self._zmq.destroy(linger=0)
        # the kernel's children first (while it runs, its pid is its own: jupyter_client has not
        # reaped it), then the kernel and its process group, then what escaped them
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if self._pid is not None and process is not None and process.poll() is None:
            await self.containment.end_children(self._pid)
        if self.km is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.km.shutdown_kernel(now=True), 10)
        await self.containment.end_escaped()
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
