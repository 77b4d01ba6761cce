"""Conformance of the commands and sessions services (exec, streams, sessions, utils)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import uuid

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import MakeSleeper, SleeperFixture, collect, joined, sid
from sandbox_core.contract.models import AnyExecEvent, CompleteEvent, StartEvent, StderrEvent, StdoutEvent
from sandbox_core.errors import (
    CommandError,
    SandboxError,
    SessionAlreadyExists,
    SessionNotFound,
    SessionTerminated,
    ValidationFailed,
)


class CommandsSuite(SleeperFixture):
    # ---- exec ------------------------------------------------------------------------------

    async def test_exec_echo(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec("echo hi", session_id=sid())
        assert (result.success, result.exit_code, result.stdout, result.stderr) == (True, 0, "hi", "")
        assert result.command == "echo hi"

    async def test_exec_default_session(self, sandbox: Sandbox) -> None:
        marker = uuid.uuid4().hex
        await sandbox.exec(f"export CONF_DEFAULT_{marker}=1")
        result = await sandbox.exec(f"echo ${{CONF_DEFAULT_{marker}}}", session_id="default")
        assert result.stdout == "1"

    async def test_exec_strips_exactly_one_trailing_newline(self, sandbox: Sandbox) -> None:
        s = sid()
        assert (await sandbox.exec("printf 'x\\n\\n'", session_id=s)).stdout == "x\n"
        assert (await sandbox.exec("printf x", session_id=s)).stdout == "x"
        assert (await sandbox.exec("printf 'e\\n' >&2", session_id=s)).stderr == "e"

    async def test_exec_exit_code_and_stderr(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec("echo out; echo err >&2; false", session_id=sid())
        assert (result.success, result.exit_code, result.stdout, result.stderr) == (False, 1, "out", "err")

    async def test_exec_unicode_and_large_output(self, sandbox: Sandbox) -> None:
        s = sid()
        assert (await sandbox.exec("echo 'héllo ✓ 日本'", session_id=s)).stdout == "héllo ✓ 日本"
        big = await sandbox.exec("head -c 3000000 /dev/zero | tr '\\0' y", session_id=s)
        assert len(big.stdout) == 3_000_000 and set(big.stdout) == {"y"}

    async def test_exec_stdin_is_dev_null(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec('cat; read -r line; echo "read=$?"', session_id=sid(), timeout_ms=10_000)
        assert result.stdout == "read=1"

    async def test_exec_stdin_stays_dev_null_after_exec_redirect(self, sandbox: Sandbox) -> None:
        s = sid()
        first = await sandbox.exec(
            'f=$(mktemp); echo secret >"$f"; exec <"$f"; read -r line; echo "$line"', session_id=s
        )
        assert first.stdout == "secret"  # within the command, its own redirection holds
        after = await sandbox.exec('read -r line; echo "read=$? $line"', session_id=s, timeout_ms=10_000)
        assert after.stdout == "read=1 "

    async def test_exec_syntax_error_keeps_session(self, sandbox: Sandbox) -> None:
        s = sid()
        bad = await sandbox.exec('echo "unterminated', session_id=s)
        assert bad.exit_code != 0 and bad.stderr
        assert (await sandbox.exec("echo fine", session_id=s)).stdout == "fine"

    @pytest.mark.parametrize("text", ["it's", "a'b\"c", "$(touch /tmp/nope)", "`id`", "\\", "x\ny", "'; exit 9; '"])
    async def test_exec_quoting_is_exact(self, sandbox: Sandbox, text: str) -> None:
        s = sid()
        result = await sandbox.exec('printf %s "$V"', session_id=s, env={"V": text})
        assert result.stdout == text
        assert (await sandbox.exec("echo still", session_id=s)).stdout == "still"

    # ---- session state ---------------------------------------------------------------------

    async def test_session_state_persists(self, sandbox: Sandbox) -> None:
        s = sandbox.session(sid())
        await s.exec("cd /tmp && export FOO=bar && greet() { echo \"hi $1\"; } && alias ll='echo aliased'")
        assert (await s.exec("pwd")).stdout == "/tmp"
        assert (await s.exec("echo $FOO")).stdout == "bar"
        assert (await s.exec("greet you")).stdout == "hi you"
        assert (await s.exec("ll")).stdout == "aliased"

    async def test_sessions_are_isolated(self, sandbox: Sandbox) -> None:
        a, b = sid("a"), sid("b")
        await sandbox.exec("export ONLY_A=1; cd /tmp", session_id=a)
        result = await sandbox.exec('echo "[${ONLY_A:-}]"; pwd', session_id=b)
        assert result.stdout.splitlines()[0] == "[]"
        assert result.stdout.splitlines()[1] != "/tmp"

    async def test_per_command_env_and_cwd_are_restored(self, sandbox: Sandbox) -> None:
        s = sid()
        await sandbox.exec("export KEEP=orig", session_id=s)
        before = (await sandbox.exec("pwd", session_id=s)).stdout
        result = await sandbox.exec(
            'echo "$KEEP $NEW"; pwd', session_id=s, env={"KEEP": "tmp", "NEW": "n", "SKIP": None}, cwd="/usr"
        )
        assert result.stdout == "tmp n\n/usr"
        after = await sandbox.exec('echo "$KEEP [${NEW-unset}]"; pwd', session_id=s)
        assert after.stdout == f"orig [unset]\n{before}"

    async def test_missing_cwd_fails_the_command(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec("echo never", session_id=sid(), cwd="/definitely/not/here")
        assert result.exit_code == 1 and result.stdout == ""
        assert "Failed to change directory to '/definitely/not/here'" in result.stderr

    async def test_invalid_env_name_is_rejected(self, sandbox: Sandbox) -> None:
        with pytest.raises(ValidationFailed) as info:
            await sandbox.exec("true", session_id=sid(), env={"1BAD": "x"})
        assert "1BAD" in info.value.message

    async def test_invalid_timeout_is_rejected(self, sandbox: Sandbox) -> None:
        with pytest.raises(ValidationFailed) as info:
            await sandbox.exec("true", session_id=sid(), timeout_ms=-5)
        assert info.value.details.get("field") == "timeoutMs"

    async def test_whitespace_session_id_is_rejected(self, sandbox: Sandbox) -> None:
        with pytest.raises(ValidationFailed):
            await sandbox.exec("true", session_id="   ")

    async def test_exit_terminates_the_session_then_recreates_it(self, sandbox: Sandbox) -> None:
        s = sid()
        await sandbox.exec("export GONE=1", session_id=s)
        with pytest.raises(SessionTerminated) as info:
            await sandbox.exec("exit 7", session_id=s)
        assert info.value.code == "SESSION_TERMINATED" and info.value.status == 410
        assert info.value.details == {"sessionId": s, "exitCode": 7}
        result = await sandbox.exec('echo "fresh[${GONE:-}]"', session_id=s)
        assert result.stdout == "fresh[]"

    async def test_a_shell_killed_by_its_command_answers_410_then_starts_afresh(self, sandbox: Sandbox) -> None:
        """``kill -9 $$`` in a foreground command: 410 with the shell's status (128 + 9); the next
        call gets a fresh shell."""
        s = sid()
        await sandbox.exec("cd /tmp && export KEPT=1", session_id=s)
        with pytest.raises(SessionTerminated) as info:
            await sandbox.exec("kill -9 $$", session_id=s)
        assert info.value.status == 410 and info.value.details == {"sessionId": s, "exitCode": 137}
        result = await sandbox.exec('echo "fresh[${KEPT:-}]"', session_id=s)
        assert result.stdout == "fresh[]"

    async def test_a_stream_that_kills_its_shell_says_so_and_the_next_call_answers_410(self, sandbox: Sandbox) -> None:
        """A streamed command is the session's: when the session's shell is killed while it
        runs (``kill -9 $$``: ``$$`` is the session's shell), the stream completes with the
        shell's status (128 + 9) and says so on stderr; the session's state is gone, so the next
        call answers 410 SESSION_TERMINATED, as a foreground ``kill -9 $$`` does; the one after
        starts a fresh shell."""
        s = sid()
        await sandbox.exec("cd /tmp && export KEPT=1", session_id=s)
        events = await asyncio.wait_for(collect(sandbox.exec_stream("echo before; kill -9 $$", session_id=s)), 60)
        assert isinstance(events[-1], CompleteEvent) and events[-1].exit_code == 137, events
        assert joined(events, StdoutEvent) == "before\n"
        assert "shell was killed by signal 9 (SIGKILL)" in joined(events, StderrEvent)
        with pytest.raises(SessionTerminated) as info:
            await sandbox.exec("echo next", session_id=s)
        assert info.value.status == 410 and info.value.details == {"sessionId": s, "exitCode": 137}
        result = await sandbox.exec('pwd; echo "fresh[${KEPT:-}]"', session_id=s)
        assert result.stdout.splitlines()[-1] == "fresh[]" and result.stdout.splitlines()[0] != "/tmp"
        again = await asyncio.wait_for(collect(sandbox.exec_stream("echo ok", session_id=s)), 60)
        assert isinstance(again[-1], CompleteEvent) and again[-1].exit_code == 0

    async def test_a_background_process_that_kills_its_shell_leaves_a_410(self, sandbox: Sandbox) -> None:
        """A background process belongs to the sandbox, not to the shell: its exit code is its
        own; the session's next call answers 410 (its shell and state are gone)."""
        s = sid()
        await sandbox.exec("export KEPT=1", session_id=s)
        started = await sandbox.processes.start("kill -9 $$", session_id=s)

        async def finished() -> int | None:
            while True:
                info = await sandbox.processes.get(started.process_id)
                if info.status != "running":
                    return info.exit_code
                await asyncio.sleep(0.05)

        assert await asyncio.wait_for(finished(), 60) == 0
        with pytest.raises(SessionTerminated) as info:
            await sandbox.exec("echo next", session_id=s)
        assert info.value.details == {"sessionId": s, "exitCode": 137}
        assert (await sandbox.exec('echo "fresh[${KEPT:-}]"', session_id=s)).stdout == "fresh[]"

    async def test_timeout_stops_the_command_and_keeps_the_session(
        self, sandbox: Sandbox, sleepers: MakeSleeper
    ) -> None:
        s = sid()
        sleeper = sleepers()
        await sandbox.exec("export KEPT=yes", session_id=s)
        with pytest.raises(CommandError) as info:
            await sandbox.exec(sleeper.command, session_id=s, timeout_ms=300)
        assert info.value.code == "COMMAND_EXECUTION_ERROR"
        assert "timeout" in info.value.message.lower()
        assert not await sleeper.running(sandbox, await sleeper.reported_pid(sandbox))
        assert (await sandbox.exec("echo $KEPT", session_id=s)).stdout == "yes"

    async def test_timeout_kills_a_command_that_traps_term(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        s = sid()
        sleeper = sleepers()
        with pytest.raises(CommandError):
            await sandbox.exec(f"bash -c 'trap \"\" TERM; {sleeper.command}; :'", session_id=s, timeout_ms=300)
        assert not await sleeper.running(sandbox, await sleeper.reported_pid(sandbox))

    async def test_timeout_of_a_builtin_loop_replaces_the_shell(self, sandbox: Sandbox) -> None:
        s = sid()
        with pytest.raises(CommandError) as info:
            await sandbox.exec("while :; do :; done", session_id=s, timeout_ms=300)
        assert info.value.code == "COMMAND_EXECUTION_ERROR"
        assert (await sandbox.exec("echo next", session_id=s)).stdout == "next"

    async def test_same_session_commands_do_not_interleave(self, sandbox: Sandbox) -> None:
        s = sid()
        results = await asyncio.gather(
            *(sandbox.exec(f"echo start-{i}; sleep 0.0$((RANDOM % 3)); echo end-{i}", session_id=s) for i in range(12))
        )
        for i, result in enumerate(results):
            assert result.stdout == f"start-{i}\nend-{i}"

    async def test_different_sessions_run_in_parallel(self, sandbox: Sandbox) -> None:
        flag = f"/tmp/conformance-flag-{uuid.uuid4().hex}"
        waiter = asyncio.ensure_future(
            sandbox.exec(
                f"while [ ! -e {flag} ]; do sleep 0.01; done; echo released; rm -f {flag}",
                session_id=sid("wait"),
                timeout_ms=20_000,
            )
        )
        await sandbox.exec(f"touch {flag}", session_id=sid("release"))
        result = await waiter
        assert result.stdout == "released"

    async def test_sessionless_exec_keeps_raw_output_and_no_state(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec("echo hi; export NOPE=1", session_id="__DISABLE_SESSION__")
        assert result.stdout == "hi\n" and result.exit_code == 0
        after = await sandbox.exec('echo "[${NOPE:-}]"', session_id="__DISABLE_SESSION__")
        assert after.stdout == "[]\n"

    async def test_sessionless_timeout_exits_124(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec("sleep 300", session_id="__DISABLE_SESSION__", timeout_ms=300)
        assert result.exit_code == 124
        assert "timed out" in result.stderr

    # ---- streams ---------------------------------------------------------------------------

    async def test_stream_events(self, sandbox: Sandbox) -> None:
        events = await collect(sandbox.exec_stream("echo a; echo b >&2; echo c", session_id=sid()))
        assert isinstance(events[0], StartEvent) and events[0].command == "echo a; echo b >&2; echo c"
        assert isinstance(events[-1], CompleteEvent) and events[-1].exit_code == 0
        assert joined(events, StdoutEvent) == "a\nc\n"
        assert joined(events, StderrEvent) == "b\n"

    async def test_stream_exit_code(self, sandbox: Sandbox) -> None:
        events = await collect(sandbox.exec_stream("echo before; exit 3", session_id=sid()))
        assert isinstance(events[-1], CompleteEvent) and events[-1].exit_code == 3
        assert joined(events, StdoutEvent) == "before\n"

    async def test_stream_starts_from_session_state_without_changing_it(self, sandbox: Sandbox) -> None:
        s = sid()
        await sandbox.exec("export FROM_SESSION=v; cd /tmp", session_id=s)
        events = await collect(sandbox.exec_stream("echo $FROM_SESSION; pwd; cd /; export LEAK=1", session_id=s))
        assert joined(events, StdoutEvent) == "v\n/tmp\n"
        after = await sandbox.exec('pwd; echo "[${LEAK:-}]"', session_id=s)
        assert after.stdout == "/tmp\n[]"

    async def test_stream_env_and_cwd(self, sandbox: Sandbox) -> None:
        events = await collect(sandbox.exec_stream("echo $X; pwd", session_id=sid(), env={"X": "y"}, cwd="/usr"))
        assert joined(events, StdoutEvent) == "y\n/usr\n"

    async def test_stream_output_flows_while_running(self, sandbox: Sandbox) -> None:
        flag = f"/tmp/conformance-stream-{uuid.uuid4().hex}"
        stream = sandbox.exec_stream(
            f"echo first; while [ ! -e {flag} ]; do sleep 0.01; done; echo second; rm -f {flag}",
            session_id=sid(),
            timeout_ms=20_000,
        )
        events: list[AnyExecEvent] = []
        async for event in stream:
            events.append(event)
            if isinstance(event, StdoutEvent) and event.data == "first\n":
                await sandbox.exec(f"touch {flag}", session_id=sid("release"))
        assert joined(events, StdoutEvent) == "first\nsecond\n"
        assert isinstance(events[-1], CompleteEvent) and events[-1].exit_code == 0

    async def test_stream_timeout(self, sandbox: Sandbox) -> None:
        events = await collect(sandbox.exec_stream("echo go; sleep 300", session_id=sid(), timeout_ms=300))
        assert isinstance(events[-1], CompleteEvent) and events[-1].exit_code == 124
        assert "timed out" in joined(events, StderrEvent)

    async def test_stream_does_not_wait_for_its_own_background_children(self, sandbox: Sandbox) -> None:
        events = await collect(sandbox.exec_stream("sleep 5 & echo parent-done", session_id=sid(), timeout_ms=20_000))
        assert joined(events, StdoutEvent) == "parent-done\n"
        assert isinstance(events[-1], CompleteEvent) and events[-1].exit_code == 0

    async def test_stream_empty_command_is_rejected(self, sandbox: Sandbox) -> None:
        with pytest.raises(SandboxError) as info:
            await collect(sandbox.exec_stream("   ", session_id=sid()))
        assert info.value.code == "INVALID_COMMAND" and info.value.status == 400

    # ---- sessions and utils ----------------------------------------------------------------

    async def test_session_create_list_delete(self, sandbox: Sandbox) -> None:
        s = sid("created")
        handle = await sandbox.create_session(s, env={"SESSION_VAR": "sv"}, cwd="/tmp")
        assert handle.id == s
        assert s in await sandbox.list_sessions()
        assert (await handle.exec("echo $SESSION_VAR; pwd")).stdout == "sv\n/tmp"
        with pytest.raises(SessionAlreadyExists) as info:
            await sandbox.create_session(s)
        assert info.value.status == 409
        await handle.delete()
        assert s not in await sandbox.list_sessions()
        with pytest.raises(SessionNotFound) as missing:
            await sandbox.delete_session(s)
        assert missing.value.status == 404

    async def test_create_session_with_generated_id(self, sandbox: Sandbox) -> None:
        handle = await sandbox.create_session()
        assert handle.id.startswith("session_")
        await handle.delete()

    async def test_delete_session_kills_its_running_command(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        s = sid()
        sleeper = sleepers()
        await sandbox.create_session(s)
        running = asyncio.ensure_future(sandbox.exec(sleeper.command, session_id=s))
        pid = await sleeper.started(sandbox)
        await sandbox.delete_session(s)
        with pytest.raises(SandboxError) as info:
            await running
        assert info.value.code == "SESSION_DESTROYED"
        assert not await sleeper.running(sandbox, pid)

    async def test_ping_and_version(self, sandbox: Sandbox) -> None:
        assert await sandbox.ping() == "healthy"
        # the fixtures' server runs on this host with this environment: SANDBOX_VERSION, else
        # the installed sandbox-services version
        try:
            expected = os.environ.get("SANDBOX_VERSION") or importlib.metadata.version("sandbox-services")
        except importlib.metadata.PackageNotFoundError:
            expected = "unknown"
        assert await sandbox.version() == expected

    async def test_generic_call_reaches_any_operation(self, sandbox: Sandbox) -> None:
        result = await sandbox.call("utils", "ping")
        assert isinstance(result, dict) and (result["success"], result["status"]) == (True, "healthy")
        with pytest.raises(SandboxError) as info:
            await sandbox.call("utils", "no_such_operation")
        assert info.value.status == 404
