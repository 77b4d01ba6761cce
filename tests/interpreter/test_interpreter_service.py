"""The interpreter service in the test process: streaming, state, isolation, concurrency,
timeouts, a reader that leaves, dead kernels, limits, and kernels ending with the service."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from helpers_interp import create, others_spared, out, results, run

from sandbox_core.contract.models.interpreter import (
    CodeCompleteEvent,
    CodeErrorEvent,
    CodeStdoutEvent,
)
from sandbox_core.errors import SandboxError
from sandbox_core.registry import ServiceRegistry


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_interpreter_stdout_streams_as_printed(interp: ServiceRegistry) -> None:
    ctx = await create(interp)
    stamps: list[tuple[float, Any]] = []
    loop = asyncio.get_running_loop()
    code = "import time\nfor i in range(3):\n    print(i)\n    time.sleep(0.2)"
    async for event in interp.stream("interpreter", "run_code", {"context_id": ctx, "code": code}):
        stamps.append((loop.time(), event))
    printed = [(t, e.text) for t, e in stamps if isinstance(e, CodeStdoutEvent)]
    assert [text for _, text in printed] == ["0\n", "1\n", "2\n"]
    # each line reached the reader before the next was printed (not all at the end)
    assert printed[0][0] < stamps[-1][0] and isinstance(stamps[-1][1], CodeCompleteEvent)


async def test_interpreter_state_is_per_context(interp: ServiceRegistry) -> None:
    a, b = await create(interp), await create(interp)
    await run(interp, a, "shared = 'a'")
    assert results(await run(interp, a, "shared")) == ["'a'"]
    events = await run(interp, b, "shared")
    assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "NameError"


async def test_interpreter_contexts_run_at_the_same_time(interp: ServiceRegistry, tmp_path: Path) -> None:
    """Context a waits for a file context b writes: only running together can both finish."""
    a, b = await create(interp), await create(interp)
    flag = tmp_path / "flag"
    waiter = f"import os, time\nwhile not os.path.exists({str(flag)!r}):\n    time.sleep(0.01)\nprint('seen')"
    writer = f"import time\ntime.sleep(0.3)\nopen({str(flag)!r}, 'w').close()\nprint('written')"
    first, second = await asyncio.gather(
        run(interp, a, waiter, timeout_ms=30_000), run(interp, b, writer, timeout_ms=30_000)
    )
    assert (out(first), out(second)) == ("seen\n", "written\n")


async def test_interpreter_runs_in_one_context_are_serialised(interp: ServiceRegistry) -> None:
    ctx = await create(interp)
    await run(interp, ctx, "order = []")
    slow = "import time\norder.append('1 start')\ntime.sleep(0.3)\norder.append('1 end')\nprint('one')"
    fast = "order.append('2')\nprint('two')"
    first = asyncio.ensure_future(run(interp, ctx, slow))
    await asyncio.sleep(0.05)
    second = await run(interp, ctx, fast)
    assert (out(await first), out(second)) == ("one\n", "two\n")
    assert results(await run(interp, ctx, "order")) == ["['1 start', '1 end', '2']"]


async def test_interpreter_timeout_interrupts_and_keeps_the_context(interp: ServiceRegistry) -> None:
    ctx = await create(interp)
    await run(interp, ctx, "kept = 7")
    events = await run(interp, ctx, "import time\nprint('started')\ntime.sleep(60)", timeout_ms=500)
    assert out(events) == "started\n"
    assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "TimeoutError"
    assert "500 ms" in events[-1].evalue
    assert results(await run(interp, ctx, "kept")) == ["7"]


@pytest.mark.parametrize("interp_settings", [{"interrupt_grace_s": 0.5}])
async def test_interpreter_run_that_ignores_interrupts_restarts_its_kernel(interp: ServiceRegistry) -> None:
    ctx = await create(interp, env_vars={"KEPT_ENV": "yes"})
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    events = await run(interp, ctx, code, timeout_ms=300)
    assert isinstance(events[-1], CodeErrorEvent) and "restarted" in events[-1].evalue
    # a fresh kernel, with the context's cwd and env applied again
    assert out(await run(interp, ctx, "import os\nprint(os.environ['KEPT_ENV'])")) == "yes\n"


async def test_interpreter_reader_leaving_interrupts_the_run(interp: ServiceRegistry) -> None:
    ctx = await create(interp)
    code = "import time\ncount = 0\nfor i in range(600):\n    count = i\n    print(i)\n    time.sleep(0.05)"
    stream = interp.stream("interpreter", "run_code", {"context_id": ctx, "code": code})
    async with contextlib.aclosing(stream):
        async for event in stream:
            if isinstance(event, CodeStdoutEvent):
                break  # the reader goes away
    # the next run waits for the interrupted one, which stopped long before its 30 s
    events = await run(interp, ctx, "count", timeout_ms=10_000)
    assert isinstance(events[-1], CodeCompleteEvent), events
    value = results(events)[0]
    assert value is not None and int(value) < 300


async def test_interpreter_dead_kernel_then_delete_and_recreate(interp: ServiceRegistry) -> None:
    ctx = await create(interp)
    events = await run(interp, ctx, "import os\nprint('bye', flush=True)\nos._exit(3)")
    assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "KernelDied"
    assert "delete and recreate" in events[-1].evalue
    with pytest.raises(SandboxError) as info:
        await run(interp, ctx, "1")
    assert info.value.code == "CODE_EXECUTION_ERROR"
    await interp.call("interpreter", "delete_code_context", {"id": ctx})
    fresh = await create(interp)
    assert results(await run(interp, fresh, "1 + 1")) == ["2"]


async def test_interpreter_cwd_and_env_are_applied(interp: ServiceRegistry, tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    ctx = await create(interp, cwd=str(tmp_path / "here"), env_vars={"GREETING": "hello"})
    events = await run(interp, ctx, "import os\nprint(os.getcwd())\nprint(os.environ['GREETING'])")
    assert out(events) == f"{tmp_path / 'here'}\nhello\n"


WORKSPACE_EXISTS = os.path.isdir("/workspace")


async def test_interpreter_contract_default_cwd_is_the_workspace(interp: ServiceRegistry, tmp_path: Path) -> None:
    if WORKSPACE_EXISTS:
        pytest.skip("/workspace exists here")
    created = await interp.call("interpreter", "create_code_context", {"cwd": "/workspace"})
    assert created.cwd == str(tmp_path)  # type: ignore[attr-defined]


@pytest.mark.parametrize("interp_settings", [{"max_contexts": 1, "pool_size": 0}])
async def test_interpreter_context_limit(interp: ServiceRegistry) -> None:
    await create(interp)
    with pytest.raises(SandboxError) as info:
        await create(interp)
    assert info.value.code == "RESOURCE_BUSY"
    assert info.value.details["setting"] == "services.interpreter.max_contexts"


async def test_interpreter_kernels_end_with_the_service(interp_settings: dict[str, Any], tmp_path: Path) -> None:
    from sandbox_core.registry import ServiceSpec
    from sandbox_services.interpreter import InterpreterService, InterpreterSettings

    spec = ServiceSpec("interpreter", InterpreterService, InterpreterSettings)
    registry = ServiceRegistry({"interpreter": spec}, settings={}, workspace=str(tmp_path))
    with others_spared():
        await registry.start()
        try:
            ctx = await create(registry)
            pid = int(results(await run(registry, ctx, "import os\nos.getpid()"))[0] or 0)
            assert running(pid)
        finally:
            await registry.aclose()
    assert not running(pid)


async def test_interpreter_bad_input(interp: ServiceRegistry) -> None:
    for params, field in [
        ({"language": "cobol"}, "language"),
        ({"cwd": "relative/dir"}, "cwd"),
        ({"env_vars": {"A": 1}}, "env_vars.A"),
        ({"env_vars": {"A=B": "x"}}, "env_vars"),
    ]:
        with pytest.raises(SandboxError) as info:
            await interp.call("interpreter", "create_code_context", params)
        assert info.value.code == "VALIDATION_FAILED", params
        assert str(info.value.details.get("field", "")).startswith(field.split(".")[0]), (params, info.value)
    ctx = await create(interp)
    for params, field in [
        ({"context_id": ctx, "code": "1", "timeout_ms": 0}, "timeout_ms"),
        ({"context_id": ctx, "code": "1", "language": "ts"}, "language"),
        ({"contextId": ctx, "code": "1"}, "context_id"),
    ]:
        with pytest.raises(SandboxError) as info:
            [e async for e in interp.stream("interpreter", "run_code", params)]
        assert info.value.code == "VALIDATION_FAILED", params
        assert field in str(info.value.details.get("field", "")) + info.value.message, (params, info.value)
    with pytest.raises(SandboxError) as info:
        await interp.call("interpreter", "delete_code_context", {"id": "nope"})
    assert info.value.code == "CONTEXT_NOT_FOUND"
