"""Conformance of the processes service: start, list, get, kill, logs, log streams; and ours: argv,
stdin, any signal, a terminal per process, awaiting-input."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import SESSIONLESS, MakeSleeper, SleeperFixture, collect, joined, sid
from sandbox_core.contract.models import StartEvent
from sandbox_core.contract.models.processes import (
    AwaitingInputEvent,
    ExitEvent,
    LogGapEvent,
    LogStderrEvent,
    LogStdoutEvent,
    ProcessInfoEvent,
    RunExitEvent,
    RunStartEvent,
    RunStderrEvent,
    RunStdoutEvent,
)
from sandbox_core.errors import ProcessError, ProcessNotFound, SandboxError, ValidationFailed
from sandbox_core.testing import ServerProcess


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


async def output_until(sandbox: Sandbox, process_id: str, want: str, *, offset: int | None = None) -> tuple[str, int]:
    """Follow the log stream until its output contains ``want`` (or the process ends); the
    output so far and the offset just past it."""
    out, end = "", offset or 0
    async for event in sandbox.processes.stream_logs(process_id, offset=offset):
        if isinstance(event, LogStdoutEvent | LogStderrEvent):
            out += event.data
            end = event.offset
            if want in out:
                break
    assert want in out, f"{want!r} never came: {out!r}"
    return out, end


async def server_rss_kib(sandbox: Sandbox) -> int:
    """The server's resident memory (a sessionless command's parent is the server itself)."""
    result = await sandbox.exec("awk '/^VmRSS:/ {print $2}' /proc/$PPID/status", session_id=SESSIONLESS)
    assert result.exit_code == 0 and result.stdout.strip().isdigit(), result
    return int(result.stdout)


class DrivenProcessesSuite(SleeperFixture):
    """Ours: argv, stdin, any signal, a terminal per process, awaiting-input."""

    async def test_argv_arrives_verbatim_from_the_session_state(self, sandbox: Sandbox) -> None:
        s = sid()
        await sandbox.exec("export FROM_SESSION=kept", session_id=s)
        words = ["it's", "$HOME", "a\nb", '"q"', "`x`", "*", ""]
        name = pid_name()
        await sandbox.processes.start(argv=["printf", "[%s]", *words], process_id=name, session_id=s)
        assert await wait_done(sandbox, name) == 0
        assert (await sandbox.processes.logs(name)).stdout == "".join(f"[{w}]" for w in words)
        info = await sandbox.processes.get(name)
        assert info.argv == ["printf", "[%s]", *words]
        name = pid_name()
        await sandbox.processes.start(
            argv=["sh", "-c", 'echo "$FROM_SESSION $X"; pwd'], env={"X": "y"}, cwd="/usr", process_id=name, session_id=s
        )
        assert await wait_done(sandbox, name) == 0
        assert (await sandbox.processes.logs(name)).stdout == "kept y\n/usr\n"
        name = pid_name()
        await sandbox.processes.start(argv=["no-such-program-here"], process_id=name, session_id=s)
        assert await wait_done(sandbox, name) == 127

    async def test_argv_sessionless(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start(argv=["printf", "%s", "$X 'y'"], process_id=name, session_id=SESSIONLESS)
        assert await wait_done(sandbox, name) == 0
        assert (await sandbox.processes.logs(name)).stdout == "$X 'y'"

    @pytest.mark.parametrize("session", ["s", SESSIONLESS])
    async def test_stdin_round_trip_through_cat(self, sandbox: Sandbox, session: str) -> None:
        name = pid_name()
        await sandbox.processes.start(
            argv=["cat"], stdin="pipe", process_id=name, session_id=sid() if session == "s" else session
        )
        assert await sandbox.processes.write_stdin(name, "hello\n") == 6
        await output_until(sandbox, name, "hello\n")
        await sandbox.processes.write_stdin(name, b"\x00\xffbytes\n", eof=True)
        assert await wait_done(sandbox, name) == 0
        stdout = (await sandbox.processes.logs(name)).stdout
        assert stdout == "hello\n\x00\ufffdbytes\n"

    async def test_stdin_through_python_input(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start("python3 -c 'print(input().upper())'", stdin="pipe", process_id=name)
        await sandbox.processes.write_stdin(name, "shout\n")
        assert await wait_done(sandbox, name) == 0
        assert (await sandbox.processes.logs(name)).stdout == "SHOUT\n"

    async def test_eof_ends_wc(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start("wc -c", stdin="pipe", process_id=name)
        await sandbox.processes.write_stdin(name, b"x" * 300_000)
        await sandbox.processes.close_stdin(name)
        assert await wait_done(sandbox, name) == 0
        assert (await sandbox.processes.logs(name)).stdout.strip() == "300000"

    async def test_stdin_default_is_null(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start("cat; echo done", process_id=name)
        assert await wait_done(sandbox, name) == 0  # cat read /dev/null: no open stdin to block on
        with pytest.raises(ProcessError) as info:
            await sandbox.processes.write_stdin(name, "x")
        assert (info.value.code, info.value.status) == ("PROCESS_STDIN_UNAVAILABLE", 409)

    async def test_stdin_closed_or_exited_is_409(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start("cat >/dev/null; sleep 30", stdin="pipe", process_id=name)
        await sandbox.processes.close_stdin(name)
        with pytest.raises(ProcessError) as closed:
            await sandbox.processes.write_stdin(name, "late")
        assert (closed.value.code, closed.value.status) == ("PROCESS_STDIN_UNAVAILABLE", 409)
        assert "closed" in str(closed.value)
        await sandbox.processes.kill(name)
        with pytest.raises(ProcessError) as exited:
            await sandbox.processes.write_stdin(name, "late")
        assert (exited.value.code, exited.value.status) == ("PROCESS_STDIN_UNAVAILABLE", 409)
        assert "exited" in str(exited.value)

    async def test_a_process_that_does_not_read_makes_a_write_wait_then_fail(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start("sleep 60", stdin="pipe", process_id=name)
        before = await server_rss_kib(sandbox)
        for _ in range(3):
            with pytest.raises(ProcessError) as info:
                await sandbox.processes.write_stdin(name, b"z" * (4 << 20), timeout_ms=500)
            assert (info.value.code, info.value.status) == ("PROCESS_STDIN_TIMEOUT", 408)
            assert 0 <= info.value.details["written"] < 4 << 20
        after = await server_rss_kib(sandbox)
        assert after - before < 32 * 1024, f"the server grew by {after - before} KiB"
        assert (await sandbox.processes.get(name)).status == "running"
        await sandbox.processes.kill(name)

    async def test_signal_by_name_and_by_number(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start(
            "trap 'echo got' USR1; echo ready; while :; do sleep 0.05; done", process_id=name, timeout_ms=60_000
        )
        _, end = await output_until(sandbox, name, "ready\n")
        assert await sandbox.processes.signal(name, "SIGUSR1") == 10
        _, end = await output_until(sandbox, name, "got\n", offset=end)
        assert await sandbox.processes.signal(name, 10) == 10
        await output_until(sandbox, name, "got\n", offset=end)
        assert (await sandbox.processes.get(name)).status == "running"
        await sandbox.processes.signal(name, "TERM")
        assert await wait_done(sandbox, name) == 143
        with pytest.raises(ProcessError) as info:
            await sandbox.processes.signal(name, "SIGUSR1")
        assert (info.value.code, info.value.status) == ("PROCESS_NOT_RUNNING", 409)

    @pytest.mark.parametrize("session", ["s", SESSIONLESS])
    async def test_pty_is_the_controlling_terminal_and_resizes(self, sandbox: Sandbox, session: str) -> None:
        name = pid_name()
        await sandbox.processes.start(
            "tty; stty size; [ -t 0 ] && echo ctty=$(ps -o tty= -p $$); read x; stty size",
            pty=(80, 24),
            process_id=name,
            timeout_ms=60_000,
            session_id=sid() if session == "s" else session,
        )
        out, end = await output_until(sandbox, name, "ctty=")
        assert "/dev/pts/" in out and "24 80" in out
        await output_until(sandbox, name, "\n", offset=end - 1)  # the whole ctty= line
        out = (await sandbox.processes.logs(name)).stdout
        assert re.search(r"ctty=pts/\d", out), f"no controlling terminal: {out!r}"
        await sandbox.processes.resize(name, 100, 30)
        await sandbox.processes.write_stdin(name, "\n")
        out, _ = await output_until(sandbox, name, "30 100", offset=end)
        assert await wait_done(sandbox, name) == 0
        info = await sandbox.processes.get(name)
        assert info.pty is True

    async def test_resize_without_a_pty_is_409(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start("sleep 30", process_id=name)
        with pytest.raises(ProcessError) as info:
            await sandbox.processes.resize(name, 100, 30)
        assert (info.value.code, info.value.status) == ("PROCESS_NO_TERMINAL", 409)
        await sandbox.processes.kill(name)

    async def test_awaiting_input_from_read(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start(
            'echo ask; read x; echo "got $x"', stdin="pipe", process_id=name, timeout_ms=60_000
        )
        events = []
        async for event in sandbox.processes.stream_logs(name):
            events.append(event)
            if isinstance(event, AwaitingInputEvent):
                assert (await sandbox.processes.get(name)).awaiting_input is True
                await sandbox.processes.write_stdin(name, "yes\n")
        kinds = [type(e) for e in events]
        assert kinds.count(AwaitingInputEvent) == 1
        assert joined(events, LogStdoutEvent) == "ask\ngot yes\n"
        assert kinds.index(AwaitingInputEvent) > kinds.index(LogStdoutEvent)  # after "ask"
        assert isinstance(events[-1], ExitEvent) and events[-1].exit_code == 0
        assert (await sandbox.processes.get(name)).awaiting_input is False

    async def test_a_handle_resumes_from_a_second_client(
        self, sandbox: Sandbox, sandbox_server: ServerProcess, sandbox_transport: str
    ) -> None:
        name = pid_name()
        async with Sandbox(sandbox_server.url, transport=sandbox_transport) as first:
            await first.processes.start(argv=["cat"], stdin="pipe", process_id=name)
            await first.processes.write_stdin(name, "one\n")
            _, end = await output_until(first, name, "one\n")
        async with Sandbox(sandbox_server.url, transport=sandbox_transport) as second:
            assert name in {p.id for p in await second.processes.list(status="running")}
            await second.processes.write_stdin(name, "two\n")
            out, _ = await output_until(second, name, "two\n", offset=end)
            assert out == "two\n"
            await second.processes.signal(name, "SIGTERM")
            assert await wait_done(second, name) == 143

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"command": "true", "argv": ["true"]}, "argv"),
            ({"argv": []}, "argv"),
            ({"argv": ["echo", "a\x00b"]}, "argv"),
            ({"command": "true", "pty": {"cols": 0, "rows": 24}}, "pty.cols"),
            ({"command": "true", "pty": {"cols": 100000, "rows": 24}}, "pty.cols"),
            ({"command": "true", "stdin": "file"}, "stdin"),
        ],
    )
    async def test_bad_start_is_400_naming_the_field(
        self, sandbox: Sandbox, params: dict[str, object], field: str
    ) -> None:
        with pytest.raises(ValidationFailed) as info:
            await sandbox.call("processes", "start", **params)
        assert info.value.details.get("field") == field

    @pytest.mark.parametrize(
        ("operation", "params", "field"),
        [
            ("signal", {"signal": 0}, "signal"),
            ("signal", {"signal": 65}, "signal"),
            ("signal", {"signal": "SIGFOO"}, "signal"),
            ("resize", {"cols": 0, "rows": 24}, "cols"),
            ("resize", {"cols": 100000, "rows": 24}, "cols"),
            ("write_stdin", {"data": "***", "encoding": "base64"}, "data"),
            ("write_stdin", {"data": "x", "encoding": "latin-1"}, "encoding"),
        ],
    )
    async def test_bad_calls_are_400_naming_the_field(
        self, sandbox: Sandbox, operation: str, params: dict[str, object], field: str
    ) -> None:
        name = pid_name()
        await sandbox.processes.start("sleep 30", stdin="pipe", process_id=name)
        try:
            with pytest.raises(ValidationFailed) as info:
                await sandbox.call("processes", operation, id=name, **params)
            assert info.value.details.get("field") == field
        finally:
            await sandbox.processes.kill(name)

    async def test_concurrent_writes_do_not_interleave(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start(argv=["cat"], stdin="pipe", process_id=name, timeout_ms=60_000)
        size = 300_000  # each over a pipe's default buffer: each write waits for cat on the way
        await asyncio.gather(
            sandbox.processes.write_stdin(name, "a" * size), sandbox.processes.write_stdin(name, "b" * size)
        )
        await sandbox.processes.close_stdin(name)
        assert await wait_done(sandbox, name) == 0
        out = joined(await collect(sandbox.processes.stream_logs(name, offset=0)), LogStdoutEvent)
        assert out in ("a" * size + "b" * size, "b" * size + "a" * size)

    async def test_an_untrapped_signal_ends_the_command_with_its_status(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start("echo up; sleep 60", process_id=name)
        await output_until(sandbox, name, "up\n")
        await sandbox.processes.signal(name, "SIGUSR1")
        assert await wait_done(sandbox, name) == 128 + 10  # reported by the job's leader, which survives
        assert (await sandbox.processes.get(name)).status == "failed"

    async def test_awaiting_input_on_a_pty(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start(
            argv=["bash", "-c", 'read -p "name? " x; echo "hi $x"'], pty=(80, 24), process_id=name, timeout_ms=60_000
        )
        async for event in sandbox.processes.stream_logs(name):
            if isinstance(event, AwaitingInputEvent):
                await sandbox.processes.write_stdin(name, "bob\r")
            if isinstance(event, ExitEvent):
                assert event.exit_code == 0
        assert "hi bob" in (await sandbox.processes.logs(name)).stdout

    async def test_a_pty_process_is_killed_with_its_tree(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        name = pid_name()
        sleeper = sleepers()
        await sandbox.processes.start(f"{sleeper.command}; :", pty=(80, 24), process_id=name)
        pid = await sleeper.started(sandbox)
        await sandbox.processes.kill(name)
        assert (await sandbox.processes.get(name)).status == "killed"
        assert not await sleeper.running(sandbox, pid)

    async def test_a_stream_opened_during_a_wait_tells_it(self, sandbox: Sandbox) -> None:
        name = pid_name()
        await sandbox.processes.start("echo ask; read x; echo got", stdin="pipe", process_id=name, timeout_ms=60_000)
        for _ in range(1000):  # the server sees the wait (it checks every 100 ms by default)
            if (await sandbox.processes.get(name)).awaiting_input:
                break
            await asyncio.sleep(0.02)
        events = []
        async for event in sandbox.processes.stream_logs(name, offset=0):
            events.append(event)
            if isinstance(event, AwaitingInputEvent):
                await sandbox.processes.write_stdin(name, "\n")
        assert [type(e) for e in events].count(AwaitingInputEvent) == 1
        assert joined(events, LogStdoutEvent) == "ask\ngot\n"


class RunStreamSuite(SleeperFixture):
    """Ours: ``processes.run_stream``, a process owned by its stream, its output as raw bytes."""

    async def test_run_stream_raw_bytes_in_order_and_exit(self, sandbox: Sandbox) -> None:
        events = await collect(
            sandbox.processes.run_stream(argv=["sh", "-c", r"printf '\377\000a'; printf '\376e' >&2; exit 3"])
        )
        assert isinstance(events[0], RunStartEvent) and events[0].process_id and isinstance(events[0].pid, int)
        assert isinstance(events[-1], RunExitEvent) and events[-1].exit_code == 3
        out = b"".join(e.data for e in events if isinstance(e, RunStdoutEvent))
        err = b"".join(e.data for e in events if isinstance(e, RunStderrEvent))
        assert (out, err) == (b"\xff\x00a", b"\xfee")
        info = await sandbox.processes.get(events[0].process_id)
        assert (info.status, info.exit_code, info.argv) == (
            "failed",
            3,
            ["sh", "-c", r"printf '\377\000a'; printf '\376e' >&2; exit 3"],
        )

    async def test_run_stream_stdin_pipe_env_and_cwd(self, sandbox: Sandbox) -> None:
        stream = sandbox.processes.run_stream('cat; echo "$X"; pwd', stdin="pipe", env={"X": "y"}, cwd="/usr")
        try:
            start = await anext(stream)
            assert isinstance(start, RunStartEvent)
            await sandbox.processes.write_stdin(start.process_id, b"\x00\xffin\n", eof=True)
            rest = [event async for event in stream]
        finally:
            await stream.aclose()
        assert b"".join(e.data for e in rest if isinstance(e, RunStdoutEvent)) == b"\x00\xffin\ny\n/usr\n"
        assert isinstance(rest[-1], RunExitEvent) and rest[-1].exit_code == 0

    async def test_run_stream_pty_output_is_stdout(self, sandbox: Sandbox) -> None:
        events = await collect(sandbox.processes.run_stream(argv=["stty", "size"], pty=(91, 17)))
        assert b"".join(e.data for e in events if isinstance(e, RunStdoutEvent)).strip() == b"17 91"
        assert not any(isinstance(e, RunStderrEvent) for e in events)

    async def test_run_stream_closing_the_stream_ends_the_process(
        self, sandbox: Sandbox, sleepers: MakeSleeper
    ) -> None:
        sleeper = sleepers()
        stream = sandbox.processes.run_stream(sleeper.command)
        try:
            start = await anext(stream)
            assert isinstance(start, RunStartEvent)
            pid = await sleeper.started(sandbox)
        finally:
            await stream.aclose()  # the client leaves before the process ended

        assert await asyncio.wait_for(wait_done(sandbox, start.process_id), 30) == 143  # SIGTERM
        assert (await sandbox.processes.get(start.process_id)).status == "killed"
        assert not await sleeper.running(sandbox, pid)

    async def test_run_stream_bad_input_names_the_field(self, sandbox: Sandbox) -> None:
        for params, field in (
            ({"command": "true", "argv": ["true"]}, "argv"),
            ({}, "command"),
            ({"argv": []}, "argv"),
            ({"command": "true", "stdin": "file"}, "stdin"),
            ({"command": "true", "pty": {"cols": 0, "rows": 5}}, "pty.cols"),
        ):
            with pytest.raises(ValidationFailed) as caught:
                await collect(sandbox.stream("processes", "run_stream", **params))
            assert caught.value.details.get("field") == field, (params, caught.value)
