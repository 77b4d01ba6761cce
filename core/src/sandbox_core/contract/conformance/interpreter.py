"""Conformance of the interpreter service: contexts, streamed runs, rich results, errors.

Each test makes its own contexts and deletes them. Python contexts need the server's Python to
have ipykernel (the services distribution depends on it); the JavaScript test is skipped where
the server has no Node.js.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import collect, sid
from sandbox_core.contract.models.interpreter import (
    AnyCodeEvent,
    CodeCompleteEvent,
    CodeErrorEvent,
    CodeResultEvent,
    CodeStartEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)
from sandbox_core.errors import ContextNotFound, SandboxError, ValidationFailed

#: A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@contextlib.asynccontextmanager
async def code_context(sandbox: Sandbox, language: str = "python", **kwargs: object) -> AsyncIterator[str]:
    created = await sandbox.interpreter.create_context(language, **kwargs)  # type: ignore[arg-type]
    try:
        yield created.context_id
    finally:
        with contextlib.suppress(ContextNotFound):
            await sandbox.interpreter.delete_context(created.context_id)


async def run(sandbox: Sandbox, context_id: str, code: str, **kwargs: object) -> list[AnyCodeEvent]:
    events = await collect(sandbox.interpreter.run_code(code, context_id=context_id, **kwargs))  # type: ignore[arg-type]
    assert isinstance(events[0], CodeStartEvent), events
    return events[1:]


def stdout(events: list[AnyCodeEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, CodeStdoutEvent))


class InterpreterSuite:
    async def test_interpreter_contexts_create_list_delete(self, sandbox: Sandbox) -> None:
        assert await sandbox.interpreter.health() == "healthy"
        tmp = (await sandbox.exec("mktemp -d", session_id=sid("interp"))).stdout.strip()
        try:
            created = await sandbox.interpreter.create_context("python3", cwd=tmp, env_vars={"SBX_CONF": "yes"})
            assert (created.success, created.language, created.cwd) == (True, "python", tmp)
            listed = {c.id: c for c in await sandbox.interpreter.list_contexts()}
            assert listed[created.context_id].language == "python"
            assert listed[created.context_id].cwd == tmp
            events = await run(sandbox, created.context_id, "import os\nprint(os.getcwd(), os.environ['SBX_CONF'])")
            assert stdout(events) == f"{tmp} yes\n"
            assert isinstance(events[-1], CodeCompleteEvent)
            await sandbox.interpreter.delete_context(created.context_id)
            assert created.context_id not in {c.id for c in await sandbox.interpreter.list_contexts()}
            with pytest.raises(ContextNotFound):
                await sandbox.interpreter.delete_context(created.context_id)
            with pytest.raises(ContextNotFound):
                await collect(sandbox.interpreter.run_code("1", context_id=created.context_id))
        finally:
            await sandbox.exec(f"rm -rf {tmp}", session_id=sid("interp"))

    async def test_interpreter_state_persists_and_output_streams(self, sandbox: Sandbox) -> None:
        async with code_context(sandbox) as ctx:
            await run(sandbox, ctx, "x = 41")
            events = await run(
                sandbox, ctx, "import time, sys\nfor i in range(3):\n    print(i)\n    time.sleep(0.2)\nx + 1"
            )
            printed = [e.text for e in events if isinstance(e, CodeStdoutEvent)]
            assert printed == ["0\n", "1\n", "2\n"], events
            results = [e for e in events if isinstance(e, CodeResultEvent)]
            assert [r.text for r in results] == ["42"]
            assert isinstance(events[-1], CodeCompleteEvent) and events[-1].execution_count == 2
            events = await run(sandbox, ctx, "print('oops', file=sys.stderr)")
            assert [e.text for e in events if isinstance(e, CodeStderrEvent)] == ["oops\n"]

    async def test_interpreter_rich_results(self, sandbox: Sandbox) -> None:
        async with code_context(sandbox) as ctx:
            code = (
                "from IPython.display import Image, HTML, JSON, display\n"
                f"display(Image(data={PNG!r}))\n"
                "display(HTML('<b>hi</b>'))\n"
                "{'a': [1, 2]}"
            )
            events = await run(sandbox, ctx, code)
            results = [e for e in events if isinstance(e, CodeResultEvent)]
            assert len(results) == 3, events
            assert results[0].png is not None and base64.b64decode(results[0].png) == PNG
            assert results[1].html == "<b>hi</b>"
            assert results[2].text == "{'a': [1, 2]}"
            assert isinstance(events[-1], CodeCompleteEvent)

    async def test_interpreter_errors(self, sandbox: Sandbox) -> None:
        async with code_context(sandbox) as ctx:
            events = await run(sandbox, ctx, "print('before')\nundefined_name")
            assert stdout(events) == "before\n"
            error = events[-1]
            assert isinstance(error, CodeErrorEvent), events
            assert (error.ename, error.evalue) == ("NameError", "name 'undefined_name' is not defined")
            assert any("undefined_name" in line for line in error.traceback)
            assert not any(isinstance(e, CodeCompleteEvent) for e in events)
            events = await run(sandbox, ctx, "import time\ntime.sleep(30)", timeout_ms=300)
            assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "TimeoutError", events
            events = await run(sandbox, ctx, "'still usable'")  # the context survives its timeout
            assert [e.text for e in events if isinstance(e, CodeResultEvent)] == ["'still usable'"]
            with pytest.raises(ValidationFailed) as info:
                await collect(sandbox.interpreter.run_code("1", context_id=ctx, language="javascript"))
            assert info.value.details.get("field") == "language"
        with pytest.raises(ValidationFailed) as info:
            await sandbox.interpreter.create_context("cobol")
        assert info.value.details.get("field") == "language"
        with pytest.raises(ValidationFailed) as info:
            await sandbox.interpreter.create_context("python", cwd=f"/nonexistent-{uuid.uuid4().hex}")
        assert info.value.details.get("field") == "cwd"
        with pytest.raises(ContextNotFound):
            await collect(sandbox.interpreter.run_code("1", context_id="no-such-context"))

    async def test_interpreter_javascript(self, sandbox: Sandbox) -> None:
        try:
            created = await sandbox.interpreter.create_context("javascript")
        except SandboxError as err:
            if err.code == "JAVASCRIPT_NOT_AVAILABLE":
                pytest.skip("the server has no Node.js")
            raise
        try:
            ctx = created.context_id
            await run(sandbox, ctx, "let n = 20")
            events = await run(sandbox, ctx, "console.log('hello'); console.error('warn'); ({total: n + 1})")
            assert stdout(events) == "hello\n"
            assert [e.text for e in events if isinstance(e, CodeStderrEvent)] == ["warn\n"]
            results = [e for e in events if isinstance(e, CodeResultEvent)]
            assert results[0].json == {"total": 21}
            assert isinstance(events[-1], CodeCompleteEvent)
            events = await run(sandbox, ctx, "null.x")
            assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "TypeError"
        finally:
            await sandbox.interpreter.delete_context(created.context_id)
