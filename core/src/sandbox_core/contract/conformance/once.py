"""Conformance of handles that survive their client (``runtimeId``) and of at-most-once requests
(``idempotencyKey``): both ours, not upstream's.

Processes belong to the sandbox, not to the connection that started them: a second client, on
any transport, lists, gets, resumes the output of (from a byte offset) and kills a process the
first one started after the first closed. ``utils.ping`` and ``utils.version`` say which run of
the server answers (``runtimeId``, new at each start), and a process id of an earlier run is a
404 that says so.

A request to run something (``commands.execute``, ``commands.execute_stream``,
``processes.start``) may carry an ``idempotencyKey``: a retry with the same key runs nothing and
gets the first one's outcome (a counter file the command appends to shows one line); the same
key with another request is 409 ``IDEMPOTENCY_KEY_REUSED``; the table of keys is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import SESSIONLESS, MakeSleeper, SleeperFixture, collect, joined, sid
from sandbox_core.contract.conformance.limits import refused, stream_refused
from sandbox_core.contract.conformance.ports import within
from sandbox_core.contract.conformance.processes import pid_name, wait_done
from sandbox_core.contract.models import CompleteEvent, GapEvent, Pong, StartEvent, StdoutEvent, VersionInfo
from sandbox_core.contract.models.processes import LogStdoutEvent
from sandbox_core.errors import IdempotencyKeyReused, ProcessError, ProcessNotFound
from sandbox_core.testing import ServerProcess, installed_transports
from sandbox_core.testing.plugin import TEST_CONFIG, ServerFactory


def key() -> str:
    return f"key-{uuid.uuid4().hex}"


def tmp(name: str) -> str:
    return f"/tmp/conformance-once-{name}-{uuid.uuid4().hex}"


async def lines(sandbox: Sandbox, path: str) -> int:
    """How many lines the file at ``path`` has (0 when it does not exist)."""
    result = await within(sandbox.exec(f"cat {path} 2>/dev/null | wc -l", session_id=SESSIONLESS))
    assert result.exit_code == 0, result
    return int(result.stdout)


async def until_exists(sandbox: Sandbox, path: str) -> None:
    """Wait (bounded) until the file at ``path`` exists."""
    result = await within(
        sandbox.exec(f"until [ -e {path} ]; do sleep 0.01; done", session_id=SESSIONLESS, timeout_ms=20_000)
    )
    assert result.exit_code == 0, f"{path} never appeared: {result}"


async def first_events(stream: AsyncGenerator[Any, None], until: str) -> list[Any]:
    """Read ``stream`` until an event's ``data`` contains ``until``, then close it (the client leaves)."""
    events: list[Any] = []
    try:
        while not any(until in getattr(e, "data", "") for e in events):
            events.append(await within(stream.__anext__()))
    finally:
        await stream.aclose()
    return events


def other_transport(transport: str) -> str:
    """Another installed transport than ``transport`` (itself when it is the only one)."""
    names = installed_transports()
    return names[(names.index(transport) + 1) % len(names)] if transport in names else transport


#: Server settings of the test of the bounded table: three keys, 8 KiB.
SMALL_TABLE: dict[str, Any] = {
    **TEST_CONFIG,
    "services": {
        **TEST_CONFIG["services"],
        "processes": {"idempotency_max_keys": 3, "idempotency_max_bytes": 8192},
    },
}


class OnceSuite(SleeperFixture):
    # ---- handles that survive the client ------------------------------------------------------

    async def test_once_runtime_id_is_stable_while_the_server_runs(self, sandbox: Sandbox) -> None:
        runtime = await within(sandbox.runtime_id())
        assert runtime and runtime == await within(sandbox.runtime_id())
        pong = await within(sandbox.call_as(Pong, "utils", "ping"))
        version = await within(sandbox.call_as(VersionInfo, "utils", "version"))
        assert pong.runtime_id == version.runtime_id == runtime
        assert await within(sandbox.ping()) == "healthy"  # the contract's answers are unchanged
        started = await within(sandbox.processes.start("true"))
        assert runtime in started.process_id  # a generated id carries its runtime

    async def test_once_handle_survives_the_client(
        self, sandbox: Sandbox, sandbox_server: ServerProcess, sandbox_transport: str
    ) -> None:
        """A second client, on another transport, lists, gets, resumes and kills what the first started."""
        flag = tmp("flag")
        async with Sandbox(sandbox_server.url, transport=sandbox_transport) as first:
            started = await within(
                first.processes.start(
                    f"printf 'first\\n'; until [ -e {flag} ]; do sleep 0.01; done; printf 'second\\n'; sleep 600",
                    timeout_ms=60_000,
                )
            )
            events = await first_events(first.processes.stream_logs(started.process_id), "first")
            assert [e.offset for e in events if isinstance(e, LogStdoutEvent)] == [len("first\n")]
        # the first client is closed; its process goes on
        try:
            async with Sandbox(sandbox_server.url, transport=other_transport(sandbox_transport)) as second:
                assert started.process_id in {p.id for p in await within(second.processes.list(status="running"))}
                info = await within(second.processes.get(started.process_id))
                assert (info.status, info.pid) == ("running", started.pid)
                await within(second.exec(f"touch {flag}", session_id=SESSIONLESS))
                resumed = await first_events(
                    second.processes.stream_logs(started.process_id, offset=len("first\n")), "second"
                )
                out = [e for e in resumed if isinstance(e, LogStdoutEvent)]
                assert "".join(e.data for e in out) == "second\n" and out[-1].offset == len("first\nsecond\n")
                await within(second.processes.kill(started.process_id))
                assert (await within(second.processes.get(started.process_id))).status == "killed"
        finally:
            await sandbox.exec(f"rm -f {flag}", session_id=SESSIONLESS)

    async def test_once_runtime_id_changes_after_a_restart(
        self, sandbox_transport: str, sandbox_server_factory: ServerFactory
    ) -> None:
        """A process id of the server's earlier run is a 404 that says so, with the current runtimeId."""
        before = await asyncio.to_thread(sandbox_server_factory)
        async with Sandbox(before.url, transport=sandbox_transport) as sb:
            old_runtime = await within(sb.runtime_id())
            old = await within(sb.processes.start("sleep 600"))
        await asyncio.to_thread(before.stop)  # the server stops, and with it its processes
        after: ServerProcess = await asyncio.to_thread(sandbox_server_factory)
        async with Sandbox(after.url, transport=sandbox_transport) as sb:
            runtime = await within(sb.runtime_id())
            assert runtime != old_runtime
            for call in (sb.processes.get, sb.processes.kill, sb.processes.logs):
                with pytest.raises(ProcessNotFound) as info:
                    await within(call(old.process_id))
                error = info.value
                assert error.status == 404 and "belongs to an earlier runtime" in error.message, error
                assert error.details.get("runtimeId") == runtime, error
                assert error.details.get("processRuntimeId") == old_runtime, error
            with pytest.raises(ProcessNotFound) as unknown:  # an id of the caller's own choice
                await within(sb.processes.get(pid_name("gone")))
            assert unknown.value.details.get("runtimeId") == runtime
            assert "earlier runtime" in unknown.value.message

    # ---- at most once -----------------------------------------------------------------------------

    async def test_once_duplicate_exec_runs_once(self, sandbox: Sandbox) -> None:
        counter, k, s = tmp("counter"), key(), sid("once")
        command = f"echo x >> {counter}; wc -l < {counter}"
        first = await within(sandbox.exec(command, session_id=s, idempotency_key=k))
        again = await within(sandbox.exec(command, session_id=s, idempotency_key=k))
        assert (first.exit_code, first.stdout) == (0, "1")
        assert again == first  # the first's result, timestamp and all
        assert await lines(sandbox, counter) == 1
        other = await within(sandbox.exec(command, session_id=s, idempotency_key=key()))
        assert other.stdout == "2"  # another key runs
        await sandbox.exec(f"rm -f {counter}", session_id=SESSIONLESS)

    async def test_once_duplicate_start_runs_once(self, sandbox: Sandbox) -> None:
        counter, k = tmp("counter"), key()
        command = f"echo x >> {counter}"
        first = await within(sandbox.processes.start(command, idempotency_key=k))
        again = await within(sandbox.processes.start(command, idempotency_key=k))
        assert (again.process_id, again.pid) == (first.process_id, first.pid)
        assert await within(wait_done(sandbox, first.process_id)) == 0
        third = await within(sandbox.processes.start(command, idempotency_key=k))  # also once it ended
        assert third.process_id == first.process_id
        assert await lines(sandbox, counter) == 1
        await sandbox.exec(f"rm -f {counter}", session_id=SESSIONLESS)

    async def test_once_duplicate_while_running_waits_for_the_first(self, sandbox: Sandbox) -> None:
        counter, running, flag, k = tmp("counter"), tmp("running"), tmp("flag"), key()
        command = (
            f"touch {running}; until [ -e {flag} ]; do sleep 0.01; done; echo x >> {counter}; echo ran; rm -f {flag}"
        )
        s = sid("once")
        together = [
            asyncio.ensure_future(sandbox.exec(command, session_id=s, idempotency_key=k, timeout_ms=30_000))
            for _ in range(2)
        ]  # two arriving at once
        try:
            await until_exists(sandbox, running)
            later = asyncio.ensure_future(sandbox.exec(command, session_id=s, idempotency_key=k, timeout_ms=30_000))
            together.append(later)
            assert not any(task.done() for task in together)  # all wait for the flag
            await within(sandbox.exec(f"touch {flag}", session_id=SESSIONLESS))
            results = await within(asyncio.gather(*together))
        finally:
            for task in together:
                task.cancel()
        assert all(r == results[0] for r in results) and results[0].stdout == "ran", results
        assert await lines(sandbox, counter) == 1
        await sandbox.exec(f"rm -f {counter} {running}", session_id=SESSIONLESS)

    async def test_once_key_reused_for_another_request_is_409(self, sandbox: Sandbox) -> None:
        k = key()
        await within(sandbox.exec("true", session_id=SESSIONLESS, idempotency_key=k))
        for attempt in (
            sandbox.exec("false", session_id=SESSIONLESS, idempotency_key=k),  # another command
            sandbox.exec("true", session_id=sid("once"), idempotency_key=k),  # another session
            sandbox.processes.start("true", session_id=SESSIONLESS, idempotency_key=k),  # another operation
        ):
            with pytest.raises(IdempotencyKeyReused) as info:
                await within(attempt)
            assert (info.value.status, info.value.code) == (409, "IDEMPOTENCY_KEY_REUSED")
            assert info.value.details.get("idempotencyKey") == k and k in info.value.message
        stream = sandbox.exec_stream("true", session_id=SESSIONLESS, idempotency_key=k)
        try:
            with pytest.raises(IdempotencyKeyReused):
                await within(stream.__anext__())
        finally:
            await stream.aclose()

    @pytest.mark.parametrize("bad", ["", "k" * 129, "k" * 10_240], ids=["empty", "129", "10KB"])
    async def test_once_bad_key_is_400(self, sandbox: Sandbox, bad: str) -> None:
        await refused(sandbox.exec("true", session_id=SESSIONLESS, idempotency_key=bad), "idempotencyKey")
        await refused(sandbox.processes.start("true", idempotency_key=bad), "idempotencyKey")
        await stream_refused(sandbox.exec_stream("true", idempotency_key=bad), "idempotencyKey")
        ok = await within(sandbox.exec("echo ok", session_id=SESSIONLESS, idempotency_key="k" * 128))
        assert ok.stdout == "ok\n"

    async def test_once_error_is_replayed(self, sandbox: Sandbox, sleepers: MakeSleeper) -> None:
        """A first request that failed: a retry gets the same error, even once it would succeed."""
        name, k = pid_name(), key()
        await within(sandbox.processes.start(sleepers().command, process_id=name))
        with pytest.raises(ProcessError) as first:
            await within(sandbox.processes.start("true", process_id=name, idempotency_key=k))
        await within(sandbox.processes.kill(name))
        with pytest.raises(ProcessError) as again:
            await within(sandbox.processes.start("true", process_id=name, idempotency_key=k))
        assert (again.value.code, again.value.status, again.value.message) == (
            first.value.code,
            409,
            first.value.message,
        )
        assert (await within(sandbox.processes.get(name))).status == "killed"  # nothing ran under that id

    async def test_once_duplicate_stream_replays_from_offset_0(self, sandbox: Sandbox) -> None:
        """The first stream's client leaves mid-command; the command goes on, and a retry replays it all."""
        counter, flag, k = tmp("counter"), tmp("flag"), key()
        command = f"echo x >> {counter}; echo a; until [ -e {flag} ]; do sleep 0.01; done; echo b; rm -f {flag}"
        first = await first_events(
            sandbox.exec_stream(command, session_id=sid("once"), idempotency_key=k, timeout_ms=30_000), "a"
        )
        start = first[0]
        assert isinstance(start, StartEvent) and start.process_id
        await within(sandbox.exec(f"touch {flag}", session_id=SESSIONLESS))
        again = await within(
            collect(sandbox.exec_stream(command, session_id=start.session_id, idempotency_key=k, timeout_ms=30_000))
        )
        replayed = again[0]
        assert isinstance(replayed, StartEvent)
        assert (replayed.process_id, replayed.pid) == (start.process_id, start.pid)
        assert joined(again, StdoutEvent) == "a\nb\n"
        assert isinstance(again[-1], CompleteEvent) and again[-1].exit_code == 0
        assert await lines(sandbox, counter) == 1
        await sandbox.exec(f"rm -f {counter}", session_id=SESSIONLESS)

    async def test_once_stream_replay_says_what_the_ring_dropped(self, sandbox: Sandbox) -> None:
        total, k = 5_000_000, key()  # well past the default 1 MiB ring
        command = f"head -c {total} /dev/zero | tr '\\0' a"
        first = await within(collect(sandbox.exec_stream(command, idempotency_key=k)))
        assert len(joined(first, StdoutEvent)) == total  # the first stream loses nothing
        again = await within(collect(sandbox.exec_stream(command, idempotency_key=k)))
        gaps = [e for e in again if isinstance(e, GapEvent)]
        assert len(gaps) == 1 and gaps[0].start == 0, gaps
        assert gaps[0].end + len(joined(again, StdoutEvent)) == total
        assert isinstance(again[-1], CompleteEvent) and again[-1].exit_code == 0

    async def test_once_key_table_is_bounded(
        self, sandbox_transport: str, sandbox_server_factory: ServerFactory
    ) -> None:
        """Past ``idempotency_max_keys`` (3) the oldest key is forgotten; past
        ``idempotency_max_bytes`` (8 KiB) too."""
        server = await asyncio.to_thread(sandbox_server_factory, config=SMALL_TABLE)
        counter = tmp("counter")
        async with Sandbox(server.url, transport=sandbox_transport) as sb:

            async def run(k: str, size: int = 0) -> None:
                command = f"echo x >> {counter}; head -c {size} /dev/zero | tr '\\0' b"
                result = await within(sb.exec(command, session_id=SESSIONLESS, idempotency_key=k))
                assert result.exit_code == 0, result

            keys = [key() for _ in range(4)]
            for k in keys:
                await run(k)
            assert await lines(sb, counter) == 4
            await run(keys[3])  # held: runs nothing
            await run(keys[1])
            assert await lines(sb, counter) == 4
            await run(keys[0])  # the oldest was forgotten when the fourth came: runs again
            assert await lines(sb, counter) == 5
            big = [key(), key()]
            await run(big[0], 5000)
            await run(big[0], 5000)
            assert await lines(sb, counter) == 6
            await run(big[1], 5000)  # 2 x 5000 bytes do not fit in 8 KiB: the older goes
            await run(big[1], 5000)
            assert await lines(sb, counter) == 7
            await run(big[0], 5000)
            assert await lines(sb, counter) == 8
            with contextlib.suppress(Exception):
                await sb.exec(f"rm -f {counter}", session_id=SESSIONLESS)
