"""Conformance of the processes service: start, list, get, kill, logs, log streams."""

from __future__ import annotations

import uuid

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import MakeSleeper, SleeperFixture, collect, sid
from sandbox_core.contract.models import StartEvent
from sandbox_core.contract.models.processes import (
    ExitEvent,
    LogGapEvent,
    LogStderrEvent,
    LogStdoutEvent,
    ProcessInfoEvent,
)
from sandbox_core.errors import ProcessError, ProcessNotFound, SandboxError, ValidationFailed


def pid_name(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def wait_done(sandbox: Sandbox, process_id: str) -> int | None:
    """Follow the log stream to its exit event (the process's end, without polling)."""
    events = await collect(sandbox.processes.stream_logs(process_id))
    assert isinstance(events[-1], ExitEvent)
    return events[-1].exit_code


class ProcessesSuite(SleeperFixture):
    async def test_start_get_logs_list(self, sandbox: Sandbox) -> None:
        name = pid_name()
        started = await sandbox.processes.start("echo out; echo err >&2", process_id=name, session_id=sid())
        assert started.process_id == name and started.success and isinstance(started.pid, int)
        assert await wait_done(sandbox, name) == 0
        info = await sandbox.processes.get(name)
        assert (info.id, info.status, info.exit_code, info.command) == (name, "completed", 0, "echo out; echo err >&2")
        assert info.start_time.endswith("Z") and info.end_time is not None
        logs = await sandbox.processes.logs(name)
        assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
        assert name in {p.id for p in await sandbox.processes.list()}
        assert name in {p.id for p in await sandbox.processes.list(status="completed")}
        assert name not in {p.id for p in await sandbox.processes.list(status="running")}

    async def test_generated_id_env_and_cwd(self, sandbox: Sandbox) -> None:
        started = await sandbox.processes.start('echo "$X"; pwd', env={"X": "y"}, cwd="/usr")
        assert started.process_id.startswith("proc_")
        assert await wait_done(sandbox, started.process_id) == 0
        assert (await sandbox.processes.logs(started.process_id)).stdout == "y\n/usr\n"

    async def test_exit_inside_a_background_command_completes(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start("echo bye; exit 3", process_id=name)
        assert await wait_done(sandbox, name) == 3
        info = await sandbox.processes.get(name)
        assert (info.status, info.exit_code) == ("failed", 3)

    @pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "", "x" * 129, "sp ace", "nul\x00"])
    async def test_process_id_is_validated(self, sandbox: Sandbox, bad: str) -> None:
        with pytest.raises(ValidationFailed) as info:
            await sandbox.processes.start("true", process_id=bad)
        assert info.value.details.get("field") == "processId"

    async def test_duplicate_running_id_is_409(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        name = pid_name()
        await sandbox.processes.start(sleepers().command, process_id=name)
        with pytest.raises(ProcessError) as info:
            await sandbox.processes.start("true", process_id=name)
        assert info.value.status == 409
        await sandbox.processes.kill(name)
        await sandbox.processes.start("true", process_id=name)  # a finished id may be reused
        assert await wait_done(sandbox, name) == 0

    async def test_empty_command_is_rejected(self, sandbox: Sandbox) -> None:
        with pytest.raises(SandboxError) as info:
            await sandbox.processes.start("  ")
        assert info.value.code == "INVALID_COMMAND"

    async def test_kill_ends_the_whole_tree(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        name = pid_name()
        child, leaf = sleepers(), sleepers()
        await sandbox.processes.start(f"{child.command} & bash -c '{leaf.command}'; wait", process_id=name)
        child_pid, leaf_pid = await child.started(sandbox), await leaf.started(sandbox)
        await sandbox.processes.kill(name)
        info = await sandbox.processes.get(name)
        assert (info.status, info.exit_code) == ("killed", 143)
        assert not await child.running(sandbox, child_pid)
        assert not await leaf.running(sandbox, leaf_pid)

    async def test_kill_escalates_for_a_child_that_traps_term(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        name = pid_name()
        sleeper = sleepers()
        await sandbox.processes.start(f"bash -c 'trap \"\" TERM; {sleeper.command}; :'", process_id=name)
        pid = await sleeper.started(sandbox)
        await sandbox.processes.kill(name)
        assert not await sleeper.running(sandbox, pid)
        assert (await sandbox.processes.get(name)).status == "killed"

    async def test_kill_unknown_and_finished(self, sandbox: Sandbox) -> None:
        with pytest.raises(ProcessNotFound) as unknown:
            await sandbox.processes.kill(pid_name("missing"))
        assert unknown.value.status == 404
        with pytest.raises(ProcessNotFound):
            await sandbox.processes.get(pid_name("missing"))
        name = pid_name()
        await sandbox.processes.start("true", process_id=name)
        await wait_done(sandbox, name)
        with pytest.raises(SandboxError) as finished:
            await sandbox.processes.kill(name)
        assert (finished.value.code, finished.value.status) == ("COMMAND_NOT_FOUND", 404)

    async def test_kill_all(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        names = [pid_name() for _ in range(3)]
        started = [sleepers() for _ in names]
        for name, sleeper in zip(names, started, strict=True):
            await sandbox.processes.start(sleeper.command, process_id=name)
        pids = [await sleeper.started(sandbox) for sleeper in started]
        assert await sandbox.processes.kill_all() >= 3
        for name in names:
            assert (await sandbox.processes.get(name)).status == "killed"
        for sleeper, pid in zip(started, pids, strict=True):
            assert not await sleeper.running(sandbox, pid)

    async def test_log_stream_replays_then_follows_live(self, sandbox: Sandbox) -> None:
        name = pid_name()
        flag = f"/tmp/conformance-proc-{uuid.uuid4().hex}"
        await sandbox.processes.start(
            f"echo early; echo warn >&2; while [ ! -e {flag} ]; do sleep 0.01; done; echo late; rm -f {flag}",
            process_id=name,
            timeout_ms=20_000,
        )
        events = []
        async for event in sandbox.processes.stream_logs(name):
            events.append(event)
            if isinstance(event, LogStdoutEvent) and "early" in event.data:
                await sandbox.exec(f"touch {flag}", session_id=sid())
        assert isinstance(events[0], ProcessInfoEvent) and events[0].process_id == name
        assert isinstance(events[-1], ExitEvent) and events[-1].exit_code == 0
        out = "".join(e.data for e in events if isinstance(e, LogStdoutEvent))
        assert out == "early\nlate\n"
        assert "".join(e.data for e in events if isinstance(e, LogStderrEvent)) == "warn\n"

    async def test_ring_is_bounded_with_gaps_and_resume(self, sandbox: Sandbox) -> None:
        name = pid_name()
        total = 5_000_000  # well past the default 1 MiB ring
        await sandbox.processes.start(f"head -c {total} /dev/zero | tr '\\0' a", process_id=name)
        assert await wait_done(sandbox, name) == 0
        logs = await sandbox.processes.logs(name)
        assert 0 < len(logs.stdout) < total and set(logs.stdout) == {"a"}
        events = await collect(sandbox.processes.stream_logs(name, offset=0))
        gaps = [e for e in events if isinstance(e, LogGapEvent)]
        data = [e for e in events if isinstance(e, LogStdoutEvent)]
        assert len(gaps) == 1 and gaps[0].start == 0
        assert gaps[0].end + sum(len(e.data) for e in data) == total
        assert data[-1].offset == total
        resume_at = total - 10
        tail = await collect(sandbox.processes.stream_logs(name, offset=resume_at))
        assert "".join(e.data for e in tail if isinstance(e, LogStdoutEvent)) == "a" * 10
        assert not any(isinstance(e, LogGapEvent) for e in tail)

    async def test_every_exec_stream_is_a_process(self, sandbox: Sandbox) -> None:
        events = await collect(sandbox.exec_stream("echo streamed", session_id=sid()))
        start = events[0]
        assert isinstance(start, StartEvent) and start.process_id
        info = await sandbox.processes.get(start.process_id)
        assert info.status == "completed" and info.command == "echo streamed"

    async def test_deleting_a_session_kills_its_processes(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        s = sid()
        name = pid_name()
        sleeper = sleepers()
        await sandbox.create_session(s)
        await sandbox.processes.start(sleeper.command, process_id=name, session_id=s)
        pid = await sleeper.started(sandbox)
        await sandbox.delete_session(s)
        info = await sandbox.processes.get(name)
        assert info.status == "killed"
        assert not await sleeper.running(sandbox, pid)

    async def test_background_does_not_block_the_foreground(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        s = sid()
        name = pid_name()
        await sandbox.processes.start(sleepers().command, process_id=name, session_id=s)
        assert (await sandbox.exec("echo free", session_id=s)).stdout == "free"
        await sandbox.processes.kill(name)
