"""The interpreter service: code contexts with their own state, runs streamed as they happen.

A context is one executor process (an IPython kernel for Python, a Node REPL for JavaScript and
TypeScript) with the context's cwd and environment applied. Runs in one context are serialised
(a lock); contexts run at the same time. A run may time out: it is interrupted, and if the
executor does not stop within the grace period it is replaced (the context stays usable, its
state lost). A reader that goes away interrupts its run the same way. An executor that dies
leaves its context dead: runs answer CODE_EXECUTION_ERROR until it is deleted and recreated.

Idle executors are kept ready in a pool per kind (``pool_size``), so a new context does not wait
for a kernel to start; the pools fill when a kind is first used (or at startup with ``prewarm``).

Nothing an executor starts outlives it: each has a cgroup of its own where the server may make
one, and an environment mark (``SANDBOX_EXECUTOR=<n>``) its processes inherit, and the service
makes the server a child subreaper, so a process that escaped the executor's tree is adopted by
the server and ended with the executor (see executor.Containment): when its context is deleted,
when it is replaced after a run ignored an interrupt, and when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import typing
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any

import msgspec

from sandbox_core.clock import iso_ms, now_iso
from sandbox_core.contract.models.interpreter import (
    AnyCodeEvent,
    CodeContext,
    CodeErrorEvent,
    CodeStartEvent,
    ContextCreateResult,
    ContextDeleted,
    ContextList,
    InterpreterHealth,
    Language,
    LanguageName,
)
from sandbox_core.errors import ErrorCode, SandboxError, validation_error
from sandbox_core.metrics import CONTEXTS, Reading
from sandbox_core.registry import ServiceContext, WireName, operation

from ..cgroups import CgroupTree, open_tree
from ..orphans import Reaper
from ..params import NonNegativeInt, PositiveInt, PositiveMs, PositiveSeconds
from .executor import Containment, Executor, ExecutorDied, ExecutorUnavailable
from .kernel import KernelExecutor
from .node import NodeExecutor, find_node
from .output import RunOutput

LANGUAGES: dict[str, Language] = {
    "python": "python",
    "python3": "python",
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "typescript": "typescript",
    "ts": "typescript",
}
#: The cwd upstream's client sends when none is given: the workspace here when it does not exist.
CONTRACT_DEFAULT_CWD = "/workspace"
DEAD = "Context executor has terminated. Please delete and recreate the context."


class InterpreterSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.interpreter]``"""

    max_contexts: PositiveInt = 32  # contexts at once (each is a process)
    pool_size: NonNegativeInt = 1  # idle executors kept ready per kind (python, node) once it is used
    prewarm: bool = False  # fill the pools when the server starts
    start_timeout_s: PositiveSeconds = 60.0  # an executor that is not ready by then is unavailable
    interrupt_grace_s: PositiveSeconds = 3.0  # after an interrupt, then the executor is replaced
    default_timeout_ms: PositiveMs | None = None  # for runs that give none (None: no limit)
    max_pending_output_bytes: PositiveInt = 8 * 1024 * 1024  # waits for a run's reader; a kernel's largest message
    node: str | None = None  # the node binary (default: `node` on PATH)


class CodeContextState:
    def __init__(self, context_id: str, language: Language, cwd: str, env: dict[str, str], executor: Executor) -> None:
        self.id = context_id
        self.language = language
        self.cwd = cwd
        self.env = env
        self.executor = executor
        self.lock = asyncio.Lock()
        self.created_at = time.time()
        self.last_used = self.created_at
        self.dead = False
        self.deleted = False

    def info(self) -> CodeContext:
        return CodeContext(
            id=self.id,
            language=self.language,
            cwd=self.cwd,
            created_at=iso_ms(self.created_at),
            last_used=iso_ms(self.last_used),
        )


def kind_of(language: Language) -> str:
    return "python" if language == "python" else "node"


class InterpreterService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.settings: InterpreterSettings = ctx.settings
        self.workspace = ctx.workspace
        self.log = ctx.log
        self.contexts: dict[str, CodeContextState] = {}
        ctx.registry.metrics.source(CONTEXTS, self._by_language)
        self._pools: dict[str, list[Executor]] = {"python": [], "node": []}
        self._filling: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._creating = 0
        self._closing = False
        self._executors = 0  # executors made so far: the tag of the next one's mark and cgroup
        self._cgroups: CgroupTree | None = None
        self._reaper: Reaper | None = None

    def _by_language(self) -> Reading:
        """The contexts held, by language (each language, 0 included), for ``sandbox_interpreter_contexts``."""
        counts = dict.fromkeys(typing.get_args(Language), 0)
        for state in list(self.contexts.values()):
            counts[state.language] = counts.get(state.language, 0) + 1
        return [((language,), count) for language, count in counts.items()]

    async def startup(self) -> None:
        self._cgroups = open_tree("interpreter")  # a tree of its own, next to the sessions' one
        self.log.debug("interpreter.cgroups", base=self._cgroups.base if self._cgroups else None)
        self._reaper = Reaper()  # the server adopts what escapes an executor (as for sessions)
        self._reaper.start()
        if self.settings.prewarm:
            for kind in self._pools:
                self._refill(kind)

    async def aclose(self) -> None:
        """End every executor: the contexts', the pools' and those being started."""
        self._closing = True
        tasks = [*self._filling.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        executors = [c.executor for c in self.contexts.values()] + [e for pool in self._pools.values() for e in pool]
        self.contexts.clear()
        for pool in self._pools.values():
            pool.clear()
        await asyncio.gather(*(e.aclose() for e in executors), return_exceptions=True)
        if self._cgroups is not None:
            await self._cgroups.close()  # whatever is left, and the tree itself
        if self._reaper is not None:
            await self._reaper.aclose()

    # executors -------------------------------------------------------------------------------

    def _containment(self) -> Containment:
        self._executors += 1
        tag = f"{os.getpid()}-{self._executors}"  # this server's own, should two share a subreaper
        return Containment(tag, self._cgroups.new(f"executor-{tag}") if self._cgroups is not None else None)

    def _new_executor(self, kind: str) -> Executor:
        if kind == "python":
            return KernelExecutor(self.workspace, self._containment(), self.settings.max_pending_output_bytes)
        node = find_node(self.settings.node)
        if node is None:
            raise SandboxError(
                ErrorCode.JAVASCRIPT_NOT_AVAILABLE,
                "JavaScript contexts need Node.js, which is not installed here"
                + (f" (services.interpreter.node = {self.settings.node!r})" if self.settings.node else ""),
                {"setting": "services.interpreter.node"},
            )
        return NodeExecutor(node, self.workspace, self._containment())

    async def _start(self, kind: str) -> Executor:
        executor = self._new_executor(kind)
        try:
            await executor.start(self.settings.start_timeout_s)
        except ExecutorUnavailable as exc:
            code = ErrorCode.PYTHON_NOT_AVAILABLE if kind == "python" else ErrorCode.JAVASCRIPT_NOT_AVAILABLE
            raise SandboxError(code, str(exc), {"language": kind}) from None
        except BaseException:
            await executor.aclose()
            raise
        return executor

    async def _take(self, kind: str) -> Executor:
        """A ready executor: from the pool when it has one (then refilled), else a new one."""
        pool = self._pools[kind]
        executor: Executor | None = None
        while pool:
            candidate = pool.pop(0)
            if candidate.alive:
                executor = candidate
                break
            await candidate.aclose()
        if executor is None:
            executor = await self._start(kind)
        self._refill(kind)
        return executor

    def _refill(self, kind: str) -> None:
        if self._closing or self.settings.pool_size == 0:
            return
        task = self._filling.get(kind)
        if task is None or task.done():
            self._filling[kind] = asyncio.create_task(self._fill(kind))

    async def _fill(self, kind: str) -> None:
        pool = self._pools[kind]
        while len(pool) < self.settings.pool_size and not self._closing:
            try:
                executor = await self._start(kind)
            except SandboxError as err:
                self.log.warning("interpreter.pool_start_failed", kind=kind, error=err.message)
                return
            if self._closing:
                await executor.aclose()
                return
            pool.append(executor)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # contexts --------------------------------------------------------------------------------

    def _get(self, context_id: str) -> CodeContextState:
        ctx = self.contexts.get(context_id)
        if ctx is None:
            raise SandboxError(
                ErrorCode.CONTEXT_NOT_FOUND, f"Context {context_id} not found", {"contextId": context_id}
            )
        return ctx

    def _cwd(self, cwd: str | None) -> str:
        if cwd is None or (cwd == CONTRACT_DEFAULT_CWD and not os.path.isdir(cwd)):
            return self.workspace
        if "\0" in cwd or not os.path.isabs(cwd):
            raise validation_error(f"cwd must be an absolute path, not {cwd!r}", "cwd")
        if not os.path.isdir(cwd):
            raise validation_error(f"cwd {cwd!r} is not a directory", "cwd")
        return cwd

    @operation
    async def health(self) -> InterpreterHealth:
        """Always healthy while the server answers (as upstream)."""
        return InterpreterHealth(success=True, status="healthy", timestamp=now_iso())

    @operation
    async def create_code_context(
        self,
        language: LanguageName = "python",
        cwd: str | None = None,
        env_vars: Annotated[dict[str, str] | None, WireName("env_vars")] = None,
    ) -> ContextCreateResult:
        """A new context running ``language`` in ``cwd`` (default: the workspace) with ``env_vars``
        added to its environment. No Python kernel is PYTHON_NOT_AVAILABLE, no Node (or, for
        TypeScript, no transpiler) JAVASCRIPT_NOT_AVAILABLE; past ``max_contexts`` RESOURCE_BUSY."""
        lang = LANGUAGES[language]
        directory = self._cwd(cwd)
        env = dict(env_vars or {})
        for key in env:
            if not key or "=" in key or "\0" in key or "\0" in env[key]:
                raise validation_error(f"Invalid environment variable name {key!r}", "env_vars")
        if len(self.contexts) + self._creating >= self.settings.max_contexts:
            raise SandboxError(
                ErrorCode.RESOURCE_BUSY,
                f"Too many code contexts (limit {self.settings.max_contexts}); delete one first",
                {"limit": self.settings.max_contexts, "setting": "services.interpreter.max_contexts"},
            )
        self._creating += 1
        try:
            executor = await self._take(kind_of(lang))
            try:
                if lang == "typescript" and not (isinstance(executor, NodeExecutor) and executor.typescript):
                    raise SandboxError(
                        ErrorCode.JAVASCRIPT_NOT_AVAILABLE,
                        "TypeScript contexts need a transpiler: Node.js 22.13 or later (built-in type stripping)"
                        " or the `typescript` npm package where Node finds it (the context's cwd, NODE_PATH"
                        " or the global node_modules)",
                        {"language": "typescript"},
                    )
                try:
                    await executor.setup(directory, env, self.settings.start_timeout_s)
                except (ValueError, TimeoutError, ExecutorDied) as exc:
                    raise SandboxError(
                        ErrorCode.CODE_EXECUTION_ERROR,
                        f"Could not prepare the context: {exc}",
                        {"cwd": directory, "language": lang},
                    ) from None
            except BaseException:
                await executor.aclose()
                raise
        finally:
            self._creating -= 1
        ctx = CodeContextState(str(uuid.uuid4()), lang, directory, env, executor)
        self.contexts[ctx.id] = ctx
        self.log.info("interpreter.context_created", context_id=ctx.id, language=lang, cwd=directory)
        return ContextCreateResult(success=True, context_id=ctx.id, language=lang, cwd=directory, timestamp=now_iso())

    @operation
    async def list_code_contexts(self) -> ContextList:
        return ContextList(success=True, contexts=[c.info() for c in self.contexts.values()], timestamp=now_iso())

    @operation
    async def delete_code_context(self, id: str) -> ContextDeleted:
        """End the context's executor (a run in it ends with an error); unknown is CONTEXT_NOT_FOUND."""
        ctx = self._get(id)
        del self.contexts[id]
        ctx.deleted = True
        await ctx.executor.aclose()
        self.log.info("interpreter.context_deleted", context_id=id)
        return ContextDeleted(success=True, context_id=id, timestamp=now_iso())

    # runs ------------------------------------------------------------------------------------

    @operation
    async def run_code(
        self,
        context_id: Annotated[str, WireName("context_id")],
        code: str,
        language: LanguageName | None = None,
        timeout_ms: Annotated[PositiveMs | None, WireName("timeout_ms")] = None,
    ) -> AsyncIterator[AnyCodeEvent]:
        """Run ``code`` in the context: ``execution_start``, then stdout, stderr and result events
        as they are produced, then ``execution_complete``, or ``error`` (the code raised, timed out
        after ``timeout_ms``, or its executor died). Closing the stream interrupts the run."""
        ctx = self._get(context_id)
        if language is not None and LANGUAGES[language] != ctx.language:
            raise validation_error(f"Context {context_id} runs {ctx.language}, not {LANGUAGES[language]}", "language")
        if ctx.dead:
            raise SandboxError(ErrorCode.CODE_EXECUTION_ERROR, DEAD, {"contextId": context_id})
        yield CodeStartEvent(context_id=context_id)
        await ctx.lock.acquire()
        handed_over = False
        try:
            if ctx.deleted or ctx.dead:
                message = f"Context {context_id} was deleted" if ctx.deleted else DEAD
                yield CodeErrorEvent(ename="ContextError", evalue=message)
                return
            ctx.last_used = time.time()
            timeout = timeout_ms if timeout_ms is not None else self.settings.default_timeout_ms
            out = RunOutput(self.settings.max_pending_output_bytes)
            task = asyncio.create_task(self._execute(ctx, code, out, timeout))
            try:
                while (event := await out.get()) is not None:
                    yield event
                await task  # ends right after the final event: the run is over in the executor too
            finally:
                if not task.done():  # the reader left: stop the run, then free the context
                    out.mute()
                    handed_over = True
                    self._spawn(self._abandon(ctx, task))
        finally:
            if not handed_over:
                ctx.lock.release()

    async def _execute(self, ctx: CodeContextState, code: str, out: RunOutput, timeout_ms: int | None) -> None:
        executor = ctx.executor
        try:
            try:
                await asyncio.wait_for(
                    executor.execute(code, ctx.language, out), timeout_ms / 1000 if timeout_ms else None
                )
            except TimeoutError:
                out.mute()
                replaced = await self._stop(ctx)
                note = (
                    " and did not stop, so its executor was restarted: the context's state is lost" if replaced else ""
                )
                out.put_final(
                    CodeErrorEvent(
                        ename="TimeoutError",
                        evalue=f"Execution timed out after {timeout_ms} ms and was interrupted{note}",
                    ),
                    ours=True,
                )
        except ExecutorDied as exc:
            if ctx.deleted:
                out.put_final(CodeErrorEvent(ename="ContextError", evalue=f"Context {ctx.id} was deleted"), ours=True)
            else:
                ctx.dead = True
                self.log.warning("interpreter.executor_died", context_id=ctx.id, error=str(exc))
                out.put_final(CodeErrorEvent(ename="KernelDied", evalue=f"{exc}. {DEAD}"), ours=True)
        finally:
            out.finish()

    async def _stop(self, ctx: CodeContextState) -> bool:
        """Interrupt the context's run; replace its executor if it does not stop. Whether replaced."""
        executor = ctx.executor
        if await executor.settle(self.settings.interrupt_grace_s):
            return False
        if ctx.deleted:
            return True
        self.log.warning("interpreter.executor_replaced", context_id=ctx.id, reason="did not stop on interrupt")
        await executor.aclose()
        try:
            fresh = await self._take(kind_of(ctx.language))
            await fresh.setup(ctx.cwd, ctx.env, self.settings.start_timeout_s)
        except Exception as exc:
            ctx.dead = True
            self.log.warning("interpreter.executor_replace_failed", context_id=ctx.id, error=str(exc))
            return True
        if ctx.deleted or self._closing:
            await fresh.aclose()
        else:
            ctx.executor = fresh
        return True

    async def _abandon(self, ctx: CodeContextState, task: asyncio.Task[None]) -> None:
        """The reader of a run went away: interrupt the run, and free the context once it ended."""
        try:
            if not task.done():
                await self._stop(ctx)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, self.settings.interrupt_grace_s + 1)
        finally:
            ctx.lock.release()
