"""Conformance of the limits: numbers out of range, and files in a session whose directory is gone.

Every number a caller sends is bounded above as well as below, so a value out of range is
400 ``VALIDATION_FAILED`` naming the field: never a 5xx from an overflow deeper down, never a
command or a port watch whose limit can never be reached. Durations in milliseconds are 1 to
2**31 - 1 (JavaScript's ``setTimeout`` limit), git's depth 1 to 2**31 - 1, HTTP statuses 100
to 599, byte offsets 0 to 2**63 - 1. Each test checks that the largest value is accepted and
that values past it are refused. The values fit in 64 bits, so every wire can carry them (the
JSON-only literals, ``1e400`` and integers of hundreds of digits, are tested over http in
``tests/http/test_bad_input.py``).

A session whose current directory was removed (``cd /tmp/x && rmdir /tmp/x``) cannot resolve
a relative file path: the answer is 404 ``FILE_NOT_FOUND`` saying that the session's working
directory no longer exists, and nothing is created (not a directory ``/tmp/x (deleted)``, the
name the kernel gives the removed directory).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.git import make_repo
from sandbox_core.contract.conformance.helpers import SESSIONLESS, collect, sid
from sandbox_core.contract.conformance.ports import Listener, free_port, within
from sandbox_core.contract.models import CompleteEvent
from sandbox_core.contract.models.ports import PortReadyEvent
from sandbox_core.contract.models.processes import ExitEvent, ProcessInfoEvent
from sandbox_core.errors import FileNotFound, SandboxError, ValidationFailed

#: The longest duration in milliseconds (2**31 - 1, about 24.8 days).
MAX_MS = 2**31 - 1
#: Durations past it: just past, past JavaScript's exact integers, the largest unsigned 64-bit.
TOO_LONG_MS = [2**31, 2**53 + 1, 2**64 - 1]
MAX_DEPTH = 2**31 - 1
TOO_DEEP = [2**31, 2**53 + 1, 2**64 - 1]
MAX_OFFSET = 2**63 - 1
TOO_FAR = [2**63, 2**64 - 1]


async def sh(sandbox: Sandbox, command: str) -> str:
    """Run a command on the server (no session state); its stdout without the last newline."""
    result = await sandbox.exec(command, session_id=SESSIONLESS, timeout_ms=30_000)
    assert result.exit_code == 0, result
    return result.stdout.rstrip("\n")


async def refused(aw: Awaitable[Any], field: str) -> ValidationFailed:
    """``aw`` raises 400 VALIDATION_FAILED naming ``field``."""
    with pytest.raises(ValidationFailed) as info:
        await within(aw)
    assert (info.value.status, info.value.details.get("field")) == (400, field), info.value
    return info.value


async def stream_refused(stream: AsyncGenerator[Any, None], field: str) -> None:
    """The stream fails before its first event with 400 VALIDATION_FAILED naming ``field``."""
    try:
        await refused(stream.__anext__(), field)
    finally:
        await stream.aclose()


#: (service, operation, parameters, the duration field) of the unary calls that take a duration.
TIMED_CALLS = [
    pytest.param("commands", "execute", {"command": "true"}, "timeoutMs", id="execute-session"),
    pytest.param(
        "commands", "execute", {"command": "true", "sessionId": SESSIONLESS}, "timeoutMs", id="execute-sessionless"
    ),
    pytest.param("processes", "start", {"command": "true"}, "timeoutMs", id="process-start"),
    pytest.param("sessions", "create", {}, "commandTimeoutMs", id="session-create"),
]


class LimitsSuite:
    # ---- durations ----------------------------------------------------------------------------

    @pytest.mark.parametrize("service,operation,params,field", TIMED_CALLS)
    async def test_limits_duration_out_of_range(
        self, sandbox: Sandbox, service: str, operation: str, params: dict[str, Any], field: str
    ) -> None:
        """A duration past 2**31 - 1 ms was accepted (over http, one of 400 digits was a 500)."""
        created: list[str] = []
        try:
            for value in TOO_LONG_MS:
                extra = {"id": sid("lim")} if service == "sessions" else {}
                created += extra.values()
                await refused(sandbox.call(service, operation, **params, **extra, **{field: value}), field)
            extra = {"id": sid("lim")} if service == "sessions" else {}
            created += extra.values()
            result = await within(sandbox.call(service, operation, **params, **extra, **{field: MAX_MS}))
            assert isinstance(result, dict) and result.get("success") is True, result
            if service == "sessions":  # the session's default timeout is one a command can run under
                ran = await within(sandbox.exec("echo ok", session_id=created[-1]))
                assert (ran.exit_code, ran.stdout) == (0, "ok")
        finally:
            for session_id in created:
                with contextlib.suppress(SandboxError):  # refused, so never created
                    await sandbox.delete_session(session_id)

    async def test_limits_exec_stream_duration_out_of_range(self, sandbox: Sandbox) -> None:
        for value in TOO_LONG_MS:
            await stream_refused(
                sandbox.stream("commands", "execute_stream", command="true", timeoutMs=value), "timeoutMs"
            )
        events = await within(collect(sandbox.exec_stream("echo ok", timeout_ms=MAX_MS)))
        assert isinstance(events[-1], CompleteEvent) and events[-1].exit_code == 0, events

    # ---- git ------------------------------------------------------------------------------------

    async def test_limits_git_depth_out_of_range(self, sandbox: Sandbox) -> None:
        """A depth git cannot take (it reads a C int) was 500 GIT_OPERATION_FAILED."""
        root = await make_repo(sandbox)
        try:
            for i, value in enumerate(TOO_DEEP):
                await refused(sandbox.git.checkout(f"{root}/src", target_dir=f"{root}/c{i}", depth=value), "depth")
            result = await within(sandbox.git.checkout(f"{root}/src", target_dir=f"{root}/deep", depth=MAX_DEPTH))
            assert result.success and result.branch == "main"
            assert await sh(sandbox, f"ls {root}") == "deep\nsrc"  # the refused clones made nothing
        finally:
            await sh(sandbox, f"rm -rf {root}")

    async def test_limits_git_timeout_out_of_range(self, sandbox: Sandbox) -> None:
        root = await make_repo(sandbox)
        try:
            for i, value in enumerate(TOO_LONG_MS):
                await refused(
                    sandbox.git.checkout(f"{root}/src", target_dir=f"{root}/c{i}", timeout_ms=value), "timeoutMs"
                )
            result = await within(sandbox.git.checkout(f"{root}/src", target_dir=f"{root}/t", timeout_ms=MAX_MS))
            assert result.success
            assert await sh(sandbox, f"ls {root}") == "src\nt"
        finally:
            await sh(sandbox, f"rm -rf {root}")

    # ---- port watch -----------------------------------------------------------------------------

    async def test_limits_port_watch_status_out_of_range(self, sandbox: Sandbox) -> None:
        """A status bound outside 100..599 was accepted: past every status, the watch never ended."""
        for field, value in [
            ("statusMin", 600),
            ("statusMin", 2**64 - 1),
            ("statusMin", 99),
            ("statusMin", -1),
            ("statusMax", 99),
            ("statusMax", 600),
            ("statusMax", 2**64 - 1),
            ("statusMax", -(2**63)),
        ]:
            stream = sandbox.stream("ports", "watch_port", port=free_port(), mode="http", **{field: value})
            await stream_refused(stream, field)
        for answer in (101, 599):  # the edges are accepted (100 is an interim answer the probe skips)
            async with Listener(answer) as listener:
                events = await within(
                    collect(sandbox.ports.watch(listener.port, status_min=100, status_max=599, interval_ms=100))
                )
            assert events[-1] == PortReadyEvent(port=listener.port, status_code=answer)

    async def test_limits_port_watch_status_min_above_max(self, sandbox: Sandbox) -> None:
        """No status is in 500..200: such a watch could never end."""
        stream = sandbox.ports.watch(free_port(), mode="http", status_min=500, status_max=200)
        await stream_refused(stream, "statusMin")

    # ---- log offsets ----------------------------------------------------------------------------

    async def test_limits_log_stream_offset_out_of_range(self, sandbox: Sandbox) -> None:
        name = f"lim-{uuid.uuid4().hex[:10]}"
        await sandbox.processes.start("echo out", process_id=name)
        await within(collect(sandbox.processes.stream_logs(name)))  # to its exit
        for value in TOO_FAR:
            await stream_refused(sandbox.processes.stream_logs(name, offset=value), "offset")
        events = await within(collect(sandbox.processes.stream_logs(name, offset=MAX_OFFSET)))
        assert [type(e) for e in events] == [ProcessInfoEvent, ExitEvent], events  # nothing held that far on

    # ---- a session whose directory was removed --------------------------------------------------

    async def test_limits_relative_path_in_a_removed_cwd_is_refused(self, sandbox: Sandbox) -> None:
        s = sid("gone")
        gone = f"/tmp/conformance-gone-{uuid.uuid4().hex}"
        files = sandbox.files
        try:
            removed = await sandbox.exec(f"mkdir {gone} && cd {gone} && rmdir {gone}", session_id=s)
            assert removed.exit_code == 0, removed
            calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("path", lambda: files.write("a.txt", "x", session_id=s)),
                ("path", lambda: files.write("sub/a.txt", "x", session_id=s)),
                ("path", lambda: files.read("a.txt", session_id=s)),
                ("path", lambda: collect(files.read_stream("a.txt", session_id=s))),
                ("path", lambda: files.mkdir("d", recursive=True, session_id=s)),
                ("path", lambda: files.exists("a.txt", session_id=s)),
                ("path", lambda: files.list(".", session_id=s)),
                ("path", lambda: files.delete("a.txt", session_id=s)),
                ("oldPath", lambda: files.rename("a.txt", "/tmp/never", session_id=s)),
                ("destinationPath", lambda: files.move(f"{gone}-abs.txt", "b.txt", session_id=s)),
            ]
            await files.write(f"{gone}-abs.txt", "abs", session_id=s)  # the move's source
            for field, call in calls:
                with pytest.raises(FileNotFound) as info:
                    await within(call())
                err = info.value
                assert err.status == 404 and err.details.get("field") == field, err
                assert f"{gone} no longer exists" in err.message, err.message
            listed = await sh(sandbox, f"ls -d {gone}* 2>/dev/null; true")
            assert listed == f"{gone}-abs.txt", listed  # no "<gone> (deleted)" directory was made
            # absolute paths still work in that session, and relative ones again after a cd
            assert (await files.read(f"{gone}-abs.txt", session_id=s)).content == "abs"
            moved = await sandbox.exec("cd /tmp && echo $PWD", session_id=s)
            assert moved.stdout == "/tmp"
            await files.write(f"{gone.rsplit('/', 1)[1]}-rel.txt", "rel", session_id=s)
            assert (await files.read(f"{gone}-rel.txt")).content == "rel"
        finally:
            await sh(sandbox, f"rm -rf '{gone}' '{gone} (deleted)' '{gone}-abs.txt' '{gone}-rel.txt'")
            await sandbox.delete_session(s)
