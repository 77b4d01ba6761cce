"""``Sandbox.interpreter``: code contexts and their streamed runs.

ctx = await sb.interpreter.create_context("python", cwd="/work", env_vars={"K": "v"})
async for event in sb.interpreter.run_code("print(1)", context_id=ctx.context_id):
    ...  # CodeStdoutEvent, CodeResultEvent, ..., CodeCompleteEvent or CodeErrorEvent
await sb.interpreter.delete_context(ctx.context_id)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING

from sandbox_core.contract.client import _params, _typed
from sandbox_core.contract.models.interpreter import (
    AnyCodeEvent,
    CodeContext,
    ContextCreateResult,
    ContextDeleted,
    ContextList,
    InterpreterHealth,
)

if TYPE_CHECKING:
    from sandbox_core.contract.client import Sandbox


class InterpreterAPI:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    async def health(self) -> str:
        return (await self._sb.call_as(InterpreterHealth, "interpreter", "health")).status

    async def create_context(
        self,
        language: str = "python",
        *,
        cwd: str | None = None,
        env_vars: Mapping[str, str] | None = None,
    ) -> ContextCreateResult:
        """A new context (``python``, ``javascript`` or ``typescript``, or their aliases) in ``cwd``
        (default: the server's workspace) with ``env_vars`` in its environment."""
        return await self._sb.call_as(
            ContextCreateResult,
            "interpreter",
            "create_code_context",
            **_params(language=language, cwd=cwd, env_vars=dict(env_vars) if env_vars is not None else None),
        )

    async def list_contexts(self) -> list[CodeContext]:
        return (await self._sb.call_as(ContextList, "interpreter", "list_code_contexts")).contexts

    async def delete_context(self, context_id: str) -> None:
        await self._sb.call_as(ContextDeleted, "interpreter", "delete_code_context", id=context_id)

    def run_code(
        self,
        code: str,
        *,
        context_id: str,
        language: str | None = None,
        timeout_ms: int | None = None,
    ) -> AsyncGenerator[AnyCodeEvent, None]:
        """Run ``code`` in a context; yields its events as they are produced: ``execution_start``,
        stdout/stderr/result, then ``execution_complete`` or ``error``. Closing the generator early
        interrupts the run."""
        return _typed(
            self._sb.stream(
                "interpreter",
                "run_code",
                **_params(context_id=context_id, code=code, language=language, timeout_ms=timeout_ms),
            ),
            AnyCodeEvent,
        )
