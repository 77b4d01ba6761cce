"""Output of a run is bounded by bytes, everywhere: a kernel that prints without pause waits for
the reader instead of filling the server, a reader that keeps up gets everything (in events of
bounded size), and only a reader that takes nothing for a while loses output, told exactly how
much and where."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import threading

import httpx
import pytest
from helpers_interp import create, err, out, results, run

from sandbox_core.contract.models.interpreter import (
    AnyCodeEvent,
    CodeCompleteEvent,
    CodeErrorEvent,
    CodeResultEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)
from sandbox_core.registry import ServiceRegistry
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG
from sandbox_core.testing.procs import reset_peak, status_kib
from sandbox_services.interpreter.output import PIECE, RunOutput

DROPPED = re.compile(r"\[sandbox: (\d+) bytes of output were dropped here")
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js here")


class Pinger(threading.Thread):
    """Pings the server every 50 ms until stopped; any ping that fails (or takes over 10 s) is kept."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answered = 0
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.wait(0.05):
                try:
                    client.get("/api/ping").raise_for_status()
                    self.answered += 1
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))


@pytest.mark.parametrize("language", ["python", pytest.param("javascript", marks=needs_node)])
def test_interpreter_flood_waits_for_the_reader_not_in_the_server(language: str) -> None:
    """`while True: print('z' * 10000)` with a reader that keeps up: the reader gets the output,
    whole and without a notice, the server's memory grows by a bounded amount and it answers
    pings all along (before the fix: 1.1 GB and seconds per ping for Python, and nothing
    delivered; Node kept the output in its own memory and could not be interrupted)."""
    flood = (
        "while True:\n    print('z' * 10000)" if language == "python" else "while (true) console.log('z'.repeat(10000))"
    )
    server = ServerProcess(config=TEST_CONFIG).start()
    pinger = Pinger(server.url)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            ctx = client.post("/api/contexts", json={"language": language}).json()["contextId"]
            assert client.post("/api/execute/code", json={"context_id": ctx, "code": "1"}).status_code == 200
            base = status_kib(server.pid, "VmRSS")
            assert reset_peak(server.pid)
            pinger.start()
            stdout = bytearray()
            stderr = ""
            events: list[dict[str, object]] = []
            body = {"context_id": ctx, "code": flood, "timeout_ms": 6000}
            with client.stream("POST", "/api/execute/code", json=body) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[6:])
                    if event["type"] == "stdout":
                        stdout += event["text"].encode()
                    elif event["type"] == "stderr":
                        stderr += event["text"]
                    else:
                        events.append(event)
            peak = status_kib(server.pid, "VmHWM")
            pinger.stop.set()
            pinger.join(15)
            # the context survived the flood and its interrupt: it still runs code
            again = client.post("/api/execute/code", json={"context_id": ctx, "code": "6 * 7"}).text
            assert '"text":"42"' in again.replace(" ", ""), again
    finally:
        pinger.stop.set()
        server.stop()
    assert events[-1]["type"] == "error" and events[-1]["ename"] == "TimeoutError", events
    assert "restarted" not in str(events[-1]["evalue"])  # interrupted, not replaced
    assert stderr == ""  # no notice: nothing was dropped
    lines = bytes(stdout).split(b"\n")
    assert len(lines) > 100, len(stdout)  # the reader got the output ...
    assert all(line == b"z" * 10000 for line in lines[:-1])  # ... whole, in order (the last one may be cut)
    assert (peak - base) < 160 * 1024, (base, peak)  # KiB
    assert pinger.failures == [] and pinger.answered > 0


async def test_interpreter_output_larger_than_the_limit_reaches_a_prompt_reader(interp: ServiceRegistry) -> None:
    """20 MB printed at once, more than the 8 MiB that may wait for the reader: a reader that
    keeps up gets all of it, in events of at most PIECE characters, and no notice (before the
    fix: the kernel sent it as one or a few messages over the limit, which were dropped whole,
    with a notice saying the reader fell behind)."""
    ctx = await create(interp)
    code = "import sys\nfor i in range(20000):\n    sys.stdout.write('x' * 1000 + '\\n')\nprint('end')"
    events = await run(interp, ctx, code, timeout_ms=120_000)
    assert err(events) == ""
    assert out(events) == ("x" * 1000 + "\n") * 20000 + "end\n"
    assert max(len(e.text) for e in events if isinstance(e, CodeStdoutEvent)) <= PIECE
    assert isinstance(events[-1], CodeCompleteEvent)


@pytest.mark.parametrize("interp_settings", [{"max_pending_output_bytes": 65536}])
async def test_interpreter_reader_that_stops_taking_is_told_what_it_lost_and_where(interp: ServiceRegistry) -> None:
    """A reader that takes nothing for a while, once 64 KiB wait for it: what the kernel printed
    meanwhile is dropped, and the notice sits where the output is missing and names exactly how
    many bytes: the output before it, those bytes and the output after it make up all of it."""
    ctx = await create(interp)
    count = 400_000
    code = f"for i in range({count}):\n    print(f'{{i:07d}}')\nprint('end')"
    whole = "".join(f"{i:07d}\n" for i in range(count)) + "end\n"
    stream = interp.stream("interpreter", "run_code", {"context_id": ctx, "code": code, "timeout_ms": 120_000})
    events: list[AnyCodeEvent] = []
    async with contextlib.aclosing(stream):
        async for event in stream:
            if isinstance(event, CodeStdoutEvent) and not out(events):
                await asyncio.sleep(2.5)  # the reader stops taking: the kernel keeps printing
            events.append(event)
    notices = [i for i, e in enumerate(events) if isinstance(e, CodeStderrEvent)]
    assert len(notices) == 1, err(events)
    match = DROPPED.match(err(events))
    assert match is not None, err(events)
    dropped = int(match.group(1))
    before, after = out(events[: notices[0]]), out(events[notices[0] :])
    assert dropped > 0 and whole.startswith(before) and whole.endswith(after)
    assert len(before) + dropped + len(after) == len(whole)
    assert isinstance(events[-1], CodeCompleteEvent)
    # the context goes on as before
    assert results(await run(interp, ctx, "6 * 7")) == ["42"]


@needs_node
async def test_interpreter_js_flood_is_interrupted_and_keeps_its_state(interp: ServiceRegistry) -> None:
    """A JavaScript cell that logs without pause: its output reaches the reader as it is logged
    and a timeout interrupts it (before the fix, Node queued the output in its memory until the
    cell ended, delivered next to none of it, and could not be interrupted: the context was
    restarted and lost its state)."""
    ctx = await create(interp, "javascript")
    await run(interp, ctx, "var kept = 'yes'")
    events = await run(interp, ctx, "while (true) console.log('z'.repeat(10000))", timeout_ms=2000)
    assert isinstance(events[-1], CodeErrorEvent) and events[-1].ename == "TimeoutError"
    assert "restarted" not in events[-1].evalue
    assert len(out(events)) > 100 * 10001 and err(events) == ""
    assert results(await run(interp, ctx, "kept")) == ["yes"]


async def test_run_output_splits_what_is_larger_than_the_limit() -> None:
    """RunOutput itself: one event of 1 MB with 64 KiB allowed to wait reaches a reader that keeps
    up whole, in events of at most PIECE characters; a result that alone is larger than the limit
    is dropped with a notice that says so (not that the reader fell behind)."""
    output = RunOutput(65536)
    taken: list[AnyCodeEvent] = []

    async def reader() -> None:
        while (event := await output.get()) is not None:
            taken.append(event)
            await asyncio.sleep(0.001)  # slower than the writer: it must wait for room

    task = asyncio.create_task(reader())
    text = "".join(chr(0x61 + i % 26) for i in range(1_000_000))
    await asyncio.wait_for(output.put(CodeStdoutEvent(text=text)), 30)
    await asyncio.wait_for(output.put(CodeResultEvent(metadata={}, text="r" * 100_000)), 30)
    output.put_final(CodeCompleteEvent(execution_count=1))
    await asyncio.wait_for(task, 30)
    assert out(taken) == text
    assert max(len(e.text) for e in taken if isinstance(e, CodeStdoutEvent)) <= PIECE
    notice = err(taken)
    assert "a result of" in notice and "larger than the 65536 bytes" in notice and "reader" in notice
    assert not DROPPED.search(notice)
    assert output.held == 0 and isinstance(taken[-1], CodeCompleteEvent)


@needs_node
async def test_interpreter_js_direct_stdout_writes_all_arrive_before_the_end(interp: ServiceRegistry) -> None:
    """What a cell writes to process.stdout itself (queued by Node) reaches the run whole, before
    the run ends, and so does what it logs afterwards, in order."""
    ctx = await create(interp, "javascript")
    code = "process.stdout.write('x'.repeat(3000000) + '\\n'); console.log('after'); 8"
    events = await run(interp, ctx, code, timeout_ms=60_000)
    assert out(events) == "x" * 3_000_000 + "\nafter\n"
    assert results(events) == ["8"] and isinstance(events[-1], CodeCompleteEvent)
