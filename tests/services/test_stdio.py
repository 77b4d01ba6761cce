"""A process's input (stdin pipe, terminal), signal names and the kernel's word on waits for input,
on real pipes, terminals and processes (each test's own)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from sandbox_core.errors import SandboxError
from sandbox_services.spawn import Child, read_some, spawn
from sandbox_services.stdio import InputWatch, open_pipe, open_pty, parse_signal, waiting_for_input


def _output_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    return r, w


async def _end(child: Child) -> None:
    if child.returncode is None:
        os.kill(child.pid, signal.SIGKILL)
    await asyncio.wait_for(child.wait(), 10)


@pytest.mark.parametrize(("value", "number"), [("SIGUSR1", 10), ("usr1", 10), ("TERM", 15), (1, 1), (64, 64)])
def test_signal_names_and_numbers(value: str | int, number: int) -> None:
    assert parse_signal(value) == number


@pytest.mark.parametrize("value", [0, 65, -1, "SIGFOO", "", True])
def test_bad_signals_name_the_field(value: str | int) -> None:
    with pytest.raises(SandboxError) as info:
        parse_signal(value)
    assert info.value.status == 400 and info.value.details["field"] == "signal"


async def test_a_write_nobody_reads_waits_then_fails_having_buffered_nothing() -> None:
    stdin = open_pipe()
    try:
        with pytest.raises(SandboxError) as info:
            await stdin.write("p", b"x" * (8 << 20), False, limit=0.2)
        assert (info.value.code, info.value.status) == ("PROCESS_STDIN_TIMEOUT", 408)
        written = info.value.details["written"]
        assert 0 < written < 8 << 20 and written == stdin.unread()  # all of it in the kernel's pipe
    finally:
        stdin.release()


async def test_the_end_of_the_process_fails_a_waiting_write() -> None:
    stdin = open_pipe()
    writer = asyncio.create_task(stdin.write("p", b"x" * (8 << 20), False, limit=30))
    await asyncio.sleep(0.1)  # it fills the pipe and waits (the end fails it either way)
    assert not writer.done() and stdin.unread() > 0
    stdin.release()
    with pytest.raises(SandboxError) as info:
        await asyncio.wait_for(writer, 10)
    assert (info.value.code, info.value.status) == ("PROCESS_STDIN_UNAVAILABLE", 409)
    assert "exited" in str(info.value)


async def test_eof_closes_and_later_writes_are_409() -> None:
    stdin = open_pipe()
    try:
        await stdin.write("p", b"abc", True, limit=1)
        assert os.read(stdin.keep, 10) == b"abc" and os.read(stdin.keep, 10) == b""  # EOF
        with pytest.raises(SandboxError) as info:
            await stdin.write("p", b"more", False, limit=1)
        assert (info.value.code, info.value.status) == ("PROCESS_STDIN_UNAVAILABLE", 409)
    finally:
        stdin.release()


async def test_a_process_reading_our_pipe_is_seen_waiting_and_no_other() -> None:
    stdin = open_pipe()
    out_r, out_w = _output_pipe()
    reader = spawn(["sh", "-c", "read x; echo $x; exec sleep 30"], stdin=stdin.keep, stdout=out_w)
    other_r, other_w = os.pipe()
    unrelated = spawn(["cat"], stdin=other_r)  # blocked reading a pipe that is not ours
    os.close(out_w)
    os.close(other_r)
    try:
        watch = InputWatch(reader.pid, stdin.identity, lambda: 0, 0.01, fed=lambda: stdin.written)
        watch.start()
        await asyncio.wait_for(watch.next_wait(0), 10)
        assert watch.waiting and watch.waits == 1
        assert not waiting_for_input(unrelated.pid, stdin.identity)
        await stdin.write("p", b"hi\n", False, limit=5)
        assert await asyncio.wait_for(read_some(out_r), 10) == b"hi\n"
        for _ in range(1000):  # now it sleeps: not waiting for input
            if not watch.waiting:
                break
            await asyncio.sleep(0.01)
        assert not watch.waiting and watch.waits == 1
        await watch.aclose()
    finally:
        await _end(reader)
        await _end(unrelated)
        os.close(out_r)
        os.close(other_w)
        stdin.release()


async def test_a_terminal_resizes_and_its_eof_is_a_key() -> None:
    term, master = open_pty(80, 24)
    try:
        proc = spawn(["sh", "-c", "stty size; cat; echo done"], stdin=term.keep, stdout=term.keep, stderr=term.keep)
        await term.write("p", b"", True, limit=5)  # ^D: cat ends
        output = b""
        while b"done" not in output:
            output += await asyncio.wait_for(read_some(master), 10)
        assert b"24 80" in output
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        term.resize(100, 30)
        out_r, out_w = _output_pipe()
        check = spawn(["stty", "size"], stdin=term.keep, stdout=out_w)
        os.close(out_w)
        assert await asyncio.wait_for(read_some(out_r), 10) == b"30 100\n"
        await asyncio.wait_for(check.wait(), 10)
        os.close(out_r)
    finally:
        term.release()
        os.close(master)
