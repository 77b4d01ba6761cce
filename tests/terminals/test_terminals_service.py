"""The terminals service on an in-process registry: a session's terminal, its environment, replay,
readers, size, bounded memory with a reader that never reads, and its end.

Typed commands print markers computed by the shell (``echo M$((6*7))``), so what is looked for
is the command's output, never the terminal's echo of what was typed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
from helpers_pty import registry_of, wait_for

from sandbox_core.contract.models.terminals import TerminalData, TerminalExit, TerminalReplay
from sandbox_core.errors import SandboxError
from sandbox_core.registry import ServiceRegistry
from sandbox_core.testing.procs import Proc, still_alive
from sandbox_services.sessions import SessionsService
from sandbox_services.terminals import TerminalSettings, TerminalsService

Stream = AsyncGenerator[object, None]


async def attach(registry: ServiceRegistry, session_id: str, **params: object) -> tuple[bytes, Stream]:
    """Attach: (the replay, the stream of what follows)."""
    stream = registry.stream("terminals", "attach", {"sessionId": session_id, **params})
    first = await asyncio.wait_for(anext(stream), 30)
    assert isinstance(first, TerminalReplay)
    return first.data, stream


async def type_(registry: ServiceRegistry, session_id: str, keys: bytes) -> None:
    await registry.call("terminals", "write", {"sessionId": session_id, "data": keys})


async def read_until(stream: Stream, pattern: bytes, within: float = 30) -> bytes:
    """Output until ``pattern`` (a regex) matches; all of it."""
    got = bytearray()
    deadline = time.monotonic() + within
    while not re.search(pattern, got):
        left = deadline - time.monotonic()
        assert left > 0, f"{pattern!r} not seen in {within} s; got {bytes(got[-2000:])!r}"
        event = await asyncio.wait_for(anext(stream), left)
        assert isinstance(event, TerminalData), event
        got += event.data
    return bytes(got)


async def end_of(stream: Stream, within: float = 30) -> TerminalExit:
    """Read the stream to its end: its exit event."""
    deadline = time.monotonic() + within
    while True:
        event = await asyncio.wait_for(anext(stream), max(deadline - time.monotonic(), 0.01))
        if isinstance(event, TerminalExit):
            with contextlib.suppress(StopAsyncIteration):
                await anext(stream)
            return event


def service(registry: ServiceRegistry) -> TerminalsService:
    return registry.get("terminals", TerminalsService)


async def test_the_terminal_has_the_sessions_env_and_cwd(tmp_path: Path) -> None:
    """Created env, exports made since, the current directory, TERM, the session's mark, a tty
    that is the shell's controlling terminal (job control)."""
    (tmp_path / "sub").mkdir()
    async with registry_of(tmp_path) as registry:
        await registry.call("sessions", "create", {"id": "s", "env": {"FROM_CREATE": "c1"}, "cwd": str(tmp_path)})
        await registry.call("commands", "execute", {"command": "export LATER=l2; cd sub", "sessionId": "s"})
        _, stream = await attach(registry, "s")
        await type_(registry, "s", b'echo "V:$FROM_CREATE:$LATER:$PWD:$TERM:$SANDBOX_SESSION:$(tty):$((6*7))"\r')
        out = await read_until(stream, rb"V:[^\r\n]*:42")
        line = re.search(rb"V:([^\r\n]*):42", out)
        assert line is not None
        created, later, pwd, term, mark, tty = line.group(1).decode().split(":")
        assert (created, later, pwd, term, mark) == ("c1", "l2", str(tmp_path / "sub"), "xterm-256color", "s")
        assert tty.startswith("/dev/pts/")
        await type_(registry, "s", b"sleep 0.1 & wait; echo J$((2+3))\r")  # job control: no complaint
        assert b"no job control" not in await read_until(stream, rb"J5")
        await stream.aclose()


async def test_replay_on_reattach_is_the_recent_output_and_bounded(tmp_path: Path) -> None:
    """A new reader gets what the terminal showed (its last ``replay_bytes``), then live output;
    nothing is lost or repeated between the two."""
    settings = TerminalSettings(replay_bytes=64 * 1024)
    async with registry_of(tmp_path, terminals=settings) as registry:
        replay, stream = await attach(registry, "r")
        assert b"R42" not in replay  # a fresh terminal: at most its prompt
        await type_(registry, "r", b"echo R$((40+2))\r")
        await read_until(stream, rb"R42")
        await stream.aclose()
        replay, stream = await attach(registry, "r")
        assert b"R42" in replay
        await type_(registry, "r", b"head -c 300000 /dev/zero | tr '\\0' x; echo; echo B$((1+1))G\r")
        await read_until(stream, rb"B2G")
        await stream.aclose()
        replay, stream = await attach(registry, "r")
        assert len(replay) <= 64 * 1024 and b"B2G" in replay and b"R42" not in replay
        assert replay.count(b"x") > 60_000
        await stream.aclose()
        replay, stream = await attach(registry, "r", replayBytes=100)  # a reader may ask for less
        assert len(replay) == 100 and b"B2G" in replay


async def test_two_readers_see_the_same_output(tmp_path: Path) -> None:
    async with registry_of(tmp_path) as registry:
        _, first = await attach(registry, "b")
        _, second = await attach(registry, "b")
        await type_(registry, "b", b"for i in 1 2 3; do echo L$((i*11)); done\r")
        a = await read_until(first, rb"L33")
        b = await read_until(second, rb"L33")
        shortest = min(len(a), len(b))  # (one may have read on, into the next prompt)
        assert a[:shortest] == b[:shortest] and b"L11" in a and b"L22" in a
        assert len(service(registry).terminals) == 1  # one terminal per session
        await first.aclose()
        await second.aclose()


async def test_resize_changes_stty_size(tmp_path: Path) -> None:
    async with registry_of(tmp_path) as registry:
        _, stream = await attach(registry, "z", cols=100, rows=30)
        await type_(registry, "z", b"echo S$(stty size | tr ' ' x)E\r")
        await read_until(stream, rb"S30x100E")
        await registry.call("terminals", "resize", {"sessionId": "z", "cols": 132, "rows": 43})
        await type_(registry, "z", b"echo S$(stty size | tr ' ' x)E\r")
        await read_until(stream, rb"S43x132E")
        with pytest.raises(SandboxError) as info:
            await registry.call("terminals", "resize", {"sessionId": "z", "cols": 0, "rows": 10})
        assert info.value.code == "VALIDATION_FAILED" and info.value.details.get("field") == "cols"
        await stream.aclose()


async def test_a_reader_that_never_reads_costs_a_bounded_amount_then_is_dropped(tmp_path: Path) -> None:
    """One reader stops reading while the terminal writes 40 MB. The terminal pauses (the
    program blocks on its writes) while the reader lags a ring behind, and memory stays the ring
    (256 KiB) plus one read; after ``stalled_reader_s`` that reader is dropped (its stream fails
    with OPERATION_INTERRUPTED) and the terminal runs on for the reader that does read."""
    settings = TerminalSettings(stalled_reader_s=1.0)
    async with registry_of(tmp_path, terminals=settings) as registry:
        _, stalled = await attach(registry, "m")
        _, reading = await attach(registry, "m")
        term = service(registry).terminals["m"]
        await type_(registry, "m", b"head -c 40000000 /dev/zero | tr '\\0' y; echo; echo D$((3*3))NE\r")
        held_max = 0
        got = 0
        paused_seen = False
        started = time.monotonic()
        while True:
            event = await asyncio.wait_for(anext(reading), 60)
            assert isinstance(event, TerminalData)
            got += len(event.data)
            held_max = max(held_max, term.ring.end - term.ring.start)
            paused_seen = paused_seen or not term._reading
            if re.search(rb"D9NE", event.data[-200:]):
                break
        elapsed = time.monotonic() - started
        print(f"\nring held at most {held_max / 1024:.0f} KiB over {got / 1e6:.0f} MB of output ({elapsed:.1f} s)")
        assert got > 40_000_000
        assert paused_seen  # the stalled reader held the terminal back for a while ...
        assert elapsed >= 1.0  # ... for stalled_reader_s
        assert held_max <= settings.replay_bytes + 64 * 1024  # the ring, plus one read at most
        with pytest.raises(SandboxError) as info:  # ... and was then dropped
            await anext(stalled)
        assert info.value.code == "OPERATION_INTERRUPTED" and "took no output for 1 s" in info.value.message
        await reading.aclose()


async def test_a_slow_reader_slows_the_terminal_without_losing_output(tmp_path: Path) -> None:
    """A reader that keeps taking output, slowly, is never dropped and misses nothing."""
    settings = TerminalSettings(replay_bytes=16 * 1024, stalled_reader_s=2.0)
    async with registry_of(tmp_path, terminals=settings) as registry:
        _, stream = await attach(registry, "w")
        await type_(registry, "w", b"seq 1 20000; echo Q$((5*5))\r")
        got = bytearray()
        while not re.search(rb"Q25", got):
            event = await asyncio.wait_for(anext(stream), 30)
            assert isinstance(event, TerminalData)
            got += event.data
            await asyncio.sleep(0.002)
        numbers = [int(n) for n in re.findall(rb"(?:^|\r)(\d+)\r$", bytes(got), re.M)]
        assert numbers == list(range(1, 20001))
        await stream.aclose()


async def test_a_large_paste_reaches_the_program(tmp_path: Path) -> None:
    """Keys are written as the terminal takes them (its input queue is small)."""
    target = tmp_path / "pasted"
    async with registry_of(tmp_path) as registry:
        _, stream = await attach(registry, "p")
        await type_(registry, "p", f"stty -echo; cat > {target}; stty echo; echo P$((7*7))\r".encode())
        await asyncio.sleep(0.3)
        lines = b"".join(b"%06d " % i + b"z" * 90 + b"\r" for i in range(2000))
        await asyncio.wait_for(type_(registry, "p", lines + b"\x04"), 60)
        await read_until(stream, rb"P49")
        data = target.read_bytes()
        assert data.count(b"\n") == 2000 and len(data) == 2000 * 98
        await stream.aclose()


async def test_deleting_the_session_ends_the_terminal_and_its_processes(tmp_path: Path) -> None:
    async with registry_of(tmp_path) as registry:
        _, stream = await attach(registry, "d")
        await type_(registry, "d", b"sleep 600 & a=$!; (trap '' HUP TERM; exec sleep 601) & echo P:$$:$a:$!:P$((1))\r")
        out = await read_until(stream, rb"P:\d+:\d+:\d+:P1")
        found = re.search(rb"P:(\d+):(\d+):(\d+):P1", out)
        assert found is not None
        procs = [Proc.of(int(pid)) for pid in found.groups()]  # the shell, a job, a job ignoring HUP and TERM
        await registry.call("sessions", "delete", {"sessionId": "d"})
        end = await end_of(stream)
        assert end.reason == "Session deleted"
        assert still_alive(procs, within=5) == []
        assert "d" not in service(registry).terminals
        with pytest.raises(SandboxError) as info:
            await type_(registry, "d", b"x")
        assert info.value.status == 404


async def test_an_exited_shell_ends_the_terminal_and_the_next_attach_starts_a_fresh_one(tmp_path: Path) -> None:
    async with registry_of(tmp_path) as registry:
        _, stream = await attach(registry, "e")
        await type_(registry, "e", b"echo PID$$; exit 3\r")
        first_pid = re.search(rb"PID(\d+)", await read_until(stream, rb"PID\d+\r"))
        end = await end_of(stream)
        assert (end.reason, end.exit_code) == ("Terminal exited", 3)
        _, stream = await attach(registry, "e")
        await type_(registry, "e", b"echo PID$$\r")
        second_pid = re.search(rb"PID(\d+)", await read_until(stream, rb"PID\d+\r"))
        assert first_pid is not None and second_pid is not None and first_pid.group(1) != second_pid.group(1)
        await stream.aclose()


async def test_a_replaced_session_gets_a_fresh_terminal(tmp_path: Path) -> None:
    """``create`` may replace a session whose shell died: its old terminal ends at the next attach,
    and deleting the new session ends the new one."""
    async with registry_of(tmp_path) as registry:
        _, old = await attach(registry, "n")
        shell = registry.get("sessions", SessionsService).sessions["n"].shell
        assert shell is not None
        os.kill(shell.pid, signal.SIGKILL)  # the session's shell dies (the terminal's does not)
        await wait_for(lambda: not shell.alive)
        await registry.call("sessions", "create", {"id": "n"})
        _, new = await attach(registry, "n")
        assert (await end_of(old)).reason == "Session replaced"
        await type_(registry, "n", b"echo N$((8*8))\r")
        await read_until(new, rb"N64")
        await registry.call("sessions", "delete", {"sessionId": "n"})
        assert (await end_of(new)).reason == "Session deleted"


async def test_stopping_the_services_ends_every_terminal(tmp_path: Path) -> None:
    async with registry_of(tmp_path) as registry:
        pids = []
        for sid in ("x1", "x2"):
            _, stream = await attach(registry, sid)
            await type_(registry, sid, b"echo PID$$\r")
            found = re.search(rb"PID(\d+)", await read_until(stream, rb"PID\d+\r"))
            assert found is not None
            pids.append(Proc.of(int(found.group(1))))
            await stream.aclose()
    assert still_alive(pids, within=5) == []


async def test_bad_requests(tmp_path: Path) -> None:
    async with registry_of(tmp_path) as registry:
        with pytest.raises(SandboxError) as info:
            await type_(registry, "nobody", b"x")
        assert info.value.status == 404 and "no open terminal" in info.value.message
        for params, field in (
            ({"sessionId": "__DISABLE_SESSION__"}, "sessionId"),
            ({"sessionId": " "}, "sessionId"),
            ({"sessionId": "q", "cols": 0}, "cols"),
            ({"sessionId": "q", "rows": 70000}, "rows"),
        ):
            with pytest.raises(SandboxError) as info:
                await anext(registry.stream("terminals", "attach", params))
            assert info.value.code == "VALIDATION_FAILED" and info.value.details.get("field") == field, params


async def test_an_idle_timeout_spares_a_terminal_in_use(tmp_path: Path) -> None:
    """Keys typed into the terminal count as use of its session."""
    from sandbox_services.sessions import SessionSettings

    settings = SessionSettings(kill_grace_ms=500, idle_timeout_s=0.6)
    async with registry_of(tmp_path, sessions=settings) as registry:
        _, stream = await attach(registry, "i")
        for _ in range(8):
            await type_(registry, "i", b"\r")
            await asyncio.sleep(0.15)
        assert "i" in service(registry).terminals
        await wait_for(lambda: "i" not in service(registry).terminals, 10)  # idle now: it expires
        assert (await end_of(stream)).reason == "Session deleted"
