"""The session engine: nothing a user does to the shell wedges it, output belongs to its
command, a command whose caller leaves is ended, kills hit exactly the command."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import SESSIONLESS, MakeSleeper, SleeperFixture, sid
from sandbox_core.contract.models import CompleteEvent, StartEvent, StdoutEvent
from sandbox_core.errors import SandboxError, SessionTerminated

T = TypeVar("T")

#: No step of these tests may take this long: on an engine that wedges they fail, never hang.
BOUND = 30.0


async def bounded(step: Awaitable[T]) -> T:
    return await asyncio.wait_for(step, BOUND)


async def alive(sandbox: Sandbox, pid: int) -> bool:
    result = await sandbox.exec(f"kill -0 {pid} 2>/dev/null && echo yes || echo no", session_id=SESSIONLESS)
    return result.stdout == "yes\n"


class SessionsSuite(SleeperFixture):
    # 1. nothing a user does to the shell wedges the session ---------------------------------

    async def test_exec_redirected_to_a_file_gets_only_the_users_output(self, sandbox: Sandbox) -> None:
        s, log = sid(), f"/tmp/conformance-log-{uuid.uuid4().hex}"
        first = await bounded(sandbox.exec(f"exec >{log}; echo hi; echo err >&2", session_id=s))
        assert (first.exit_code, first.stdout, first.stderr) == (0, "", "err")
        after = await bounded(sandbox.exec(f"echo next; cat {log}; rm -f {log}", session_id=s))
        assert after.stdout == "next\nhi"  # the file holds the command's output and nothing of ours

    @pytest.mark.parametrize("closing", ["exec 1>&-", "exec 2>&-", "exec 1>&- 2>&-"])
    async def test_closing_stdout_or_stderr_lasts_one_command(self, sandbox: Sandbox, closing: str) -> None:
        s = sid()
        await bounded(sandbox.exec(f"{closing}; echo gone; echo gone >&2", session_id=s))
        after = await bounded(sandbox.exec("echo out; echo err >&2; false", session_id=s))
        assert (after.exit_code, after.stdout, after.stderr) == (1, "out", "err")

    @pytest.mark.parametrize(
        "sabotage",
        [
            "enable -n printf",
            "enable -n echo",
            "printf() { :; }",
            "echo() { return 0; }; command() { :; }",
            "builtin() { return 0; }",
            "readonly __sbx_rc=0 2>/dev/null; readonly __sbx_pwd=x 2>/dev/null; true",
            "alias printf=true; alias builtin=true; alias eval=true",
            "set -u; set -o pipefail; set -o noclobber; shopt -s nullglob failglob",
            "trap 'echo trapped' DEBUG RETURN ERR",
            "PATH=/nonexistent; IFS=x",
        ],
    )
    async def test_shell_state_never_changes_completion_or_status(self, sandbox: Sandbox, sabotage: str) -> None:
        s = sid()
        with contextlib.suppress(SessionTerminated):  # a shell that can no longer run commands is replaced
            await bounded(sandbox.exec(sabotage, session_id=s))
        for command, code in (("false", 1), ("true", 0), ("(exit 7)", 7)):
            assert (await bounded(sandbox.exec(command, session_id=s))).exit_code == code, (sabotage, command)
        out = await bounded(sandbox.exec("/bin/cat <<< x-$((6*7))", session_id=s))
        assert out.stdout.endswith("x-42") and out.exit_code == 0

    @pytest.mark.parametrize(
        "stopping", ["set -n", "eval() { :; }", "enable -n eval", "shopt -s extdebug; trap false DEBUG"]
    )
    async def test_a_shell_that_stops_running_commands_is_replaced(self, sandbox: Sandbox, stopping: str) -> None:
        s = sid()
        await bounded(sandbox.exec("export KEPT=1", session_id=s))
        with contextlib.suppress(SessionTerminated):
            await bounded(sandbox.exec(stopping, session_id=s))
        with contextlib.suppress(SessionTerminated):  # the first command after may find it unusable
            await bounded(sandbox.exec("true", session_id=s))
        fresh = await bounded(sandbox.exec("echo alive; false", session_id=s))
        assert (fresh.stdout, fresh.exit_code) == ("alive", 1)

    async def test_nothing_internal_in_trace_or_variables(self, sandbox: Sandbox) -> None:
        s = sid()
        traced = await bounded(sandbox.exec("set -x; echo hi", session_id=s, env={"A": "1"}, cwd="/tmp"))
        assert traced.stdout == "hi"
        assert [line.lstrip("+ ") for line in traced.stderr.splitlines()] == ["echo hi"]
        names = await bounded(sandbox.exec("set +x; declare -p; declare -F; alias", session_id=s, env={"B": "2"}))
        assert "sbx" not in names.stdout and "sandbox-jobs" not in names.stdout
        assert "declare -x B=" in names.stdout  # the command's own env is there while it runs
        again = await bounded(sandbox.exec("declare -p; declare -F", session_id=s))
        assert "sbx" not in again.stdout and "declare -x B=" not in again.stdout

    async def test_a_syntax_error_is_an_answer_not_a_dead_session(self, sandbox: Sandbox) -> None:
        s = sid()
        await bounded(sandbox.exec("export KEPT=yes", session_id=s))
        for broken in ('echo "open', "echo 'open", "if true; then", "case x in", "$(", "}"):
            bad = await bounded(sandbox.exec(broken, session_id=s))
            assert bad.exit_code == 2 and bad.stderr, broken
        assert (await bounded(sandbox.exec("echo $KEPT", session_id=s))).stdout == "yes"

    async def test_nul_in_a_session_command_is_refused(self, sandbox: Sandbox) -> None:
        with pytest.raises(SandboxError) as info:
            await sandbox.exec("echo a\x00b", session_id=sid())
        assert info.value.code == "VALIDATION_FAILED" and info.value.details.get("field") == "command"

    # 2. output belongs to its command -------------------------------------------------------

    async def test_a_background_job_never_writes_into_a_later_result(self, sandbox: Sandbox) -> None:
        s, flag = sid(), f"/tmp/conformance-late-{uuid.uuid4().hex}"
        first = await bounded(
            sandbox.exec(
                f"(sleep 0.3; echo LATE; echo LATE-ERR >&2; sleep 0.2; echo STILL; touch {flag}) & echo started",
                session_id=s,
            )
        )
        assert first.stdout == "started"
        later = await bounded(
            sandbox.exec(f"sleep 1; while [ ! -e {flag} ]; do sleep 0.05; done; echo NEXT", session_id=s)
        )
        assert (later.stdout, later.stderr) == ("NEXT", "")  # and the job ran on after its writes: no SIGPIPE
        await sandbox.exec(f"rm -f {flag}", session_id=s)

    async def test_a_ticker_between_commands_is_no_ones_output(self, sandbox: Sandbox) -> None:
        s = sid()
        await bounded(sandbox.exec("(for i in $(seq 40); do echo tick; sleep 0.05; done) &", session_id=s))
        for _ in range(3):
            result = await bounded(sandbox.exec("sleep 0.2; echo mine", session_id=s))
            assert (result.stdout, result.stderr) == ("mine", "")

    # 3. a command whose caller leaves is ended ------------------------------------------------

    async def test_a_cancelled_exec_leaves_nothing_in_the_next_result(self, sandbox: Sandbox) -> None:
        s = sid()
        task = asyncio.ensure_future(sandbox.exec("sleep 0.5; echo OLD-TAIL; echo OLD-ERR >&2", session_id=s))
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        new = await bounded(sandbox.exec("echo NEW", session_id=s))
        assert (new.stdout, new.stderr) == ("NEW", "")

    async def test_a_cancelled_exec_frees_the_session_and_ends_its_processes(
        self, sandbox: Sandbox, sleepers: MakeSleeper
    ) -> None:
        s, sleeper = sid(), sleepers()
        task = asyncio.ensure_future(sandbox.exec(sleeper.command, session_id=s))
        pid = await sleeper.started(sandbox)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert (await bounded(sandbox.exec("echo free", session_id=s))).stdout == "free"
        assert not await sleeper.running(sandbox, pid)

    async def test_a_cancelled_sessionless_exec_ends_its_processes(
        self, sandbox: Sandbox, sleepers: MakeSleeper
    ) -> None:
        sleeper = sleepers()
        task = asyncio.ensure_future(sandbox.exec(f"{sleeper.command} & wait", session_id=SESSIONLESS))
        pid = await sleeper.started(sandbox)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for _ in range(300):  # the server learns of the departure, then TERMs the group
            if not await sleeper.running(sandbox, pid):
                break
            await asyncio.sleep(0.05)
        assert not await sleeper.running(sandbox, pid), "the sessionless command outlived its departed caller"

    async def test_an_abandoned_exec_stream_ends_its_command(self, sandbox: Sandbox) -> None:
        stream = sandbox.exec_stream("yes", session_id=sid())
        start = await bounded(stream.__anext__())
        assert isinstance(start, StartEvent) and start.pid is not None and start.process_id is not None
        assert isinstance(await bounded(stream.__anext__()), StdoutEvent)
        await stream.aclose()
        for _ in range(100):
            record = await sandbox.processes.get(start.process_id)
            if record.status != "running":
                break
            await asyncio.sleep(0.05)
        assert record.status == "killed"
        assert not await alive(sandbox, start.pid)

    async def test_a_stream_that_is_read_to_the_end_completes_as_before(self, sandbox: Sandbox) -> None:
        events = [e async for e in sandbox.exec_stream("echo a; exit 3", session_id=sid())]
        assert isinstance(events[-1], CompleteEvent) and events[-1].exit_code == 3

    # 4. kills hit exactly the command -----------------------------------------------------------

    async def test_a_timeout_spares_jobs_of_earlier_commands(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        s, earlier, nohup = sid(), sleepers(), sleepers()
        await bounded(
            sandbox.exec(
                f"{earlier.command} & nohup bash -c {shlex.quote(nohup.command)} >/dev/null 2>&1 &", session_id=s
            )
        )
        pids = [await earlier.started(sandbox), await nohup.started(sandbox)]
        with pytest.raises(SandboxError) as info:
            await bounded(sandbox.exec("sleep 30", session_id=s, timeout_ms=300))
        assert info.value.code == "COMMAND_EXECUTION_ERROR"
        assert await earlier.running(sandbox, pids[0]) and await nohup.running(sandbox, pids[1])
        assert (await bounded(sandbox.exec("echo usable", session_id=s))).stdout == "usable"

    async def test_a_timeout_ends_the_jobs_of_its_own_command(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        s, own = sid(), sleepers()
        with pytest.raises(SandboxError):
            await bounded(sandbox.exec(f"{own.command} & sleep 30", session_id=s, timeout_ms=500))
        pid = await own.reported_pid(sandbox)
        for _ in range(60):
            if not await own.running(sandbox, pid):
                break
            await asyncio.sleep(0.05)
        assert not await own.running(sandbox, pid)

    @staticmethod
    def _escaping(command: str) -> str:
        """``command`` double-forked into a session of its own: no longer below its shell."""
        return f"(setsid nohup bash -c {shlex.quote(command)} >/dev/null 2>&1 &)"

    async def test_deleting_a_session_ends_what_escaped_its_tree(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        s, escaped = sid(), sleepers()
        await sandbox.create_session(s)
        await bounded(sandbox.exec(self._escaping(escaped.command), session_id=s))
        pid = await escaped.started(sandbox)
        await sandbox.delete_session(s)
        for _ in range(100):
            if not await escaped.running(sandbox, pid):
                break
            await asyncio.sleep(0.05)
        assert not await escaped.running(sandbox, pid)

    async def test_killing_a_process_ends_what_escaped_its_tree(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        escaped = sleepers()
        started = await sandbox.processes.start(f"{self._escaping(escaped.command)}; sleep 600", session_id=sid())
        pid = await escaped.started(sandbox)
        await sandbox.processes.kill(started.process_id)
        for _ in range(100):
            if not await escaped.running(sandbox, pid):
                break
            await asyncio.sleep(0.05)
        assert not await escaped.running(sandbox, pid)

    async def test_a_sessionless_timeout_names_the_requested_timeout(self, sandbox: Sandbox) -> None:
        result = await bounded(sandbox.exec("sleep 5", session_id=SESSIONLESS, timeout_ms=300))
        assert result.exit_code == 124 and result.stderr == "Command timed out after 300 ms\n"

    async def test_a_timeout_ends_the_whole_list_and_keeps_the_shell(self, sandbox: Sandbox) -> None:
        s = sid()
        await bounded(sandbox.exec("export KEPT=yes; cd /tmp", session_id=s))
        with pytest.raises(SandboxError) as info:
            await bounded(sandbox.exec("sleep 30; sleep 30; sleep 30", session_id=s, timeout_ms=300))
        assert info.value.code == "COMMAND_EXECUTION_ERROR"
        state = await bounded(sandbox.exec("echo $KEPT $PWD", session_id=s))
        assert state.stdout == "yes /tmp"  # the same shell: each job of the list was ended in turn

    async def test_env_and_cwd_still_apply_with_a_builtin_function(self, sandbox: Sandbox) -> None:
        s = sid()
        await bounded(sandbox.exec("builtin() { return 0; }; cd() { return 0; }", session_id=s))
        out = await bounded(sandbox.exec("echo $A:$PWD", session_id=s, env={"A": "1"}, cwd="/tmp"))
        assert out.stdout == "1:/tmp"
