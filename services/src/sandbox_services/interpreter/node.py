"""JavaScript and TypeScript contexts: a Node process running ``node_executor.js``.

The executor speaks line-delimited JSON (see the script's header). Every protocol line starts
with a random token, so output a cell's child processes write straight to the executor's
stdout (which the cell shares) is told apart from the protocol and reaches the caller as stdout.
The token is the first line the executor reads on stdin, before it runs any code: it is in no
environment (not even the one /proc/<pid>/environ shows) and in no argument list.

The readers pass output on as the run's reader takes it (see RunOutput.put): meanwhile the
executor's pipe fills and its writes block, so a flood waits in Node, not in the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox_core.contract.models.interpreter import (
    CodeCompleteEvent,
    CodeErrorEvent,
    CodeResultEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)

from ..spawn import claim, disclaim
from .executor import EXECUTOR_MARK, Containment, Executor, ExecutorDied, ExecutorUnavailable, Run
from .output import RunOutput

SCRIPT = Path(__file__).with_name("node_executor.js")
#: A line of the executor's stdout longer than this without a protocol token is passed on in
#: pieces; a protocol line longer than this is a broken executor.
MAX_LINE = 32 * 1024 * 1024
RAW_PIECE = 64 * 1024


def find_node(configured: str | None) -> str | None:
    if configured:
        return configured if os.access(configured, os.X_OK) else shutil.which(configured)
    return shutil.which("node")


class NodeExecutor(Executor):
    kind = "node"

    def __init__(self, node: str, workspace: str, containment: Containment) -> None:
        super().__init__(containment)
        self.node = node
        self.workspace = workspace
        self.start_dir = workspace if os.path.isdir(workspace) else None
        self.token = secrets.token_hex(8)
        self.prefix = b"\x1e" + self.token.encode()
        self.proc: asyncio.subprocess.Process | None = None
        self.typescript: str | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._next = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self.closed

    async def start(self, limit_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.node,
                str(SCRIPT),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.start_dir,
                env=self.containment.environment(),
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutorUnavailable(f"cannot start {self.node}: {exc}") from None
        claim(self.proc.pid)  # asyncio reaps it, not the orphan reaper
        self.containment.enter(self.proc.pid)  # it reads its token before it runs anything
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.token.encode() + b"\n")
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
            asyncio.create_task(self._watch()),
        ]
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), limit_s)
        except (TimeoutError, ExecutorDied) as exc:
            await self.aclose()
            raise ExecutorUnavailable(f"the Node executor did not start: {exc or 'timed out'}") from None
        self.typescript = ready.get("typescript")

    # reading ---------------------------------------------------------------------------------

    async def _raw(self, kind: str, data: bytes) -> None:
        """Output for the current run (waits while its reader is behind: see RunOutput.put)."""
        run = self.run
        if run is None or not data:
            return
        text = data.decode("utf-8", "replace")
        await run.out.put(CodeStdoutEvent(text=text) if kind == "stdout" else CodeStderrEvent(text=text))

    async def _message(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg)
            return
        run = self.run
        if run is None or msg.get("id") != run.id:
            return
        if kind in ("stdout", "stderr"):
            text = str(msg.get("text", ""))
            await run.out.put(CodeStdoutEvent(text=text) if kind == "stdout" else CodeStderrEvent(text=text))
        elif kind == "result":
            metadata: dict[str, Any] = {}
            await run.out.put(CodeResultEvent(metadata=metadata, text=msg.get("text"), json=msg.get("json")))
        elif kind == "error":
            tb = msg.get("traceback")
            run.out.put_final(
                CodeErrorEvent(
                    ename=str(msg.get("ename", "Error")),
                    evalue=str(msg.get("evalue", "")),
                    traceback=[str(t) for t in tb] if isinstance(tb, list) else [],
                )
            )
        elif kind == "done":
            if not msg.get("error"):
                count = msg.get("execution_count")
                run.out.put_final(CodeCompleteEvent(execution_count=count if isinstance(count, int) else None))
            run.end()

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        buf = bytearray()  # what follows the last newline: a line not complete yet
        while True:
            chunk = await self.proc.stdout.read(256 * 1024)
            if not chunk:
                break
            buf += chunk
            raw: list[bytes] = []  # the user's own output between protocol lines, passed on at once
            start = 0
            while (nl := buf.find(b"\n", start)) != -1:
                at = buf.find(self.prefix, start, nl)
                if at == -1:
                    raw.append(bytes(buf[start : nl + 1]))
                else:
                    raw.append(bytes(buf[start:at]))
                    await self._raw("stdout", b"".join(raw))
                    raw.clear()
                    await self._message(bytes(buf[at + len(self.prefix) : nl]))
                start = nl + 1
            await self._raw("stdout", b"".join(raw))
            del buf[:start]
            if self.prefix not in buf and len(buf) > RAW_PIECE:
                keep = len(self.prefix)  # the start of a token may be at the end
                await self._raw("stdout", bytes(buf[:-keep]))
                del buf[:-keep]
            elif len(buf) > MAX_LINE:
                self.proc.kill()
                break

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            chunk = await self.proc.stderr.read(64 * 1024)
            if not chunk:
                return
            await self._raw("stderr", chunk)

    async def _watch(self) -> None:
        assert self.proc is not None
        self.exit_code = await self.proc.wait()
        disclaim(self.proc.pid)
        died = ExecutorDied(f"the Node executor exited with code {self.exit_code}")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(died)
            self._ready.exception()
        await asyncio.sleep(0.05)  # the readers pass on the last output first
        if self.run is not None:
            self.run.end(died)

    # requests --------------------------------------------------------------------------------

    async def _request(self, message: dict[str, Any], out: RunOutput) -> Run:
        if not self.alive:
            raise ExecutorDied(f"the Node executor has exited (code {self.exit_code})")
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        run = Run(f"{self._next}", out)
        self.run = run
        message["id"] = run.id
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ExecutorDied(f"the Node executor has exited: {exc}") from None
        return run

    async def setup(self, cwd: str, env: Mapping[str, str], limit_s: float) -> None:
        out = RunOutput(1 << 20)
        env = {**env, EXECUTOR_MARK: self.containment.tag}  # the mark stays, whatever the context's env says
        run = await self._request({"op": "setup", "cwd": cwd, "env": env}, out)
        await asyncio.wait_for(asyncio.shield(run.done), limit_s)
        event = await out.get()
        if isinstance(event, CodeErrorEvent):
            raise ValueError(event.evalue)

    async def execute(self, code: str, language: str, out: RunOutput) -> None:
        run = await self._request({"op": "run", "code": code, "language": language}, out)
        await asyncio.shield(run.done)

    async def interrupt(self) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)

    async def aclose(self) -> None:
        self.closed = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            # its children first (while it runs, its pid is its own), then its process group
            await self.containment.end_children(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            if proc.returncode is not None:
                disclaim(proc.pid)
        await self.containment.end_escaped()  # what escaped its tree and group
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.run is not None:
            self.run.end(ExecutorDied("the context was closed"))
