"""JavaScript (and TypeScript, where a transpiler is found) contexts: a Node REPL process each."""

from __future__ import annotations

import shutil

import pytest
from helpers_interp import create, err, out, results, run

from sandbox_core.contract.models.interpreter import CodeCompleteEvent, CodeErrorEvent
from sandbox_core.errors import SandboxError
from sandbox_core.registry import ServiceRegistry

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js here")


async def test_interpreter_js_state_console_and_results(interp: ServiceRegistry) -> None:
    ctx = await create(interp, "javascript", env_vars={"JS_ENV": "set"})
    await run(interp, ctx, "let base = 40; function add(a) { return base + a }")
    events = await run(interp, ctx, "console.log('env', process.env.JS_ENV); console.error('careful'); add(2)")
    assert (out(events), err(events), results(events)) == ("env set\n", "careful\n", ["42"])
    assert isinstance(events[-1], CodeCompleteEvent)
    events = await run(interp, ctx, "await new Promise(r => setTimeout(r, 50)); console.log('awaited')")
    assert out(events) == "awaited\n"
    # output a child process writes straight to the executor's stdout is the run's stdout
    events = await run(interp, ctx, "require('child_process').execSync('echo from-child', {stdio: 'inherit'}); 1")
    assert "from-child\n" in out(events) and results(events) == ["1"]


async def test_interpreter_js_errors_timeout_and_death(interp: ServiceRegistry) -> None:
    ctx = await create(interp, "js")
    events = await run(interp, ctx, "undefinedThing.x")
    assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "ReferenceError"
    await run(interp, ctx, "var kept = 'yes'")
    events = await run(interp, ctx, "while (true) {}", timeout_ms=300)
    assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "TimeoutError"
    assert results(await run(interp, ctx, "kept")) == ["yes"]
    events = await run(interp, ctx, "await new Promise(() => {})", timeout_ms=300)
    assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "TimeoutError"
    events = await run(interp, ctx, "process.exit(2)")
    assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "KernelDied"
    with pytest.raises(SandboxError) as info:
        await run(interp, ctx, "1")
    assert info.value.code == "CODE_EXECUTION_ERROR"


async def test_interpreter_typescript_strips_types_or_says_why(interp: ServiceRegistry) -> None:
    try:
        ctx = await create(interp, "typescript")
    except SandboxError as exc:
        assert exc.code == "JAVASCRIPT_NOT_AVAILABLE"
        assert "transpiler" in exc.message
        return
    events = await run(interp, ctx, "const n: number = 2; n * 21")
    assert results(events) == ["42"]


@pytest.mark.parametrize("interp_settings", [{"node": "/nonexistent/node"}])
async def test_interpreter_no_node_is_javascript_not_available(interp: ServiceRegistry) -> None:
    with pytest.raises(SandboxError) as info:
        await create(interp, "javascript")
    assert info.value.code == "JAVASCRIPT_NOT_AVAILABLE"
    assert info.value.status == 501
