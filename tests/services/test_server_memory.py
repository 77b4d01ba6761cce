"""The serving process's memory around large requests, read from /proc (a real server, a real client).

A base64 write peaks at about its body (the body is decoded in place, batch by batch, straight
into the file), and the memory large requests used goes back to the kernel a few seconds later
(``sandbox_core.memory``: one heap for every thread, and a ``malloc_trim`` after the last large
request). Each test starts its own server, so nothing else runs in it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pybase64
import pytest

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import reset_peak, status_kib

MB = 1_000_000
MiB = 1024 * 1024


@pytest.fixture
def server(sandbox_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return sandbox_server_factory()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def settle(client: httpx.Client, scratch: Path) -> None:
    """Warm the server up with small requests of every kind the test makes, then let it idle."""
    assert client.get("/api/ping").status_code == 200
    assert client.post("/api/execute", json={"command": "echo warm"}).json()["exitCode"] == 0
    small = str(scratch / "small.bin")
    assert client.post("/api/write", json={"path": small, "content": "aGk=", "encoding": "base64"}).is_success
    assert client.post("/api/read", json={"path": small, "encoding": "base64"}).is_success
    time.sleep(1.5)


def test_base64_write_peaks_at_about_its_body(server: ServerProcess, client: httpx.Client, tmp_path: Path) -> None:
    """The server's peak RSS during a 40 MB base64 write is at most 1.6x the body over idle.

    Was about 2x (the content decoded into a ``str`` next to the body, then into bytes next to
    that); with the transport's old body join, about 2.75x."""
    settle(client, tmp_path)
    data = os.urandom(30 * MB)
    path = tmp_path / "big.bin"
    body = json.dumps({"path": str(path), "content": pybase64.b64encode_as_string(data), "encoding": "base64"})
    raw = body.encode()
    del body
    pid = server.pid
    if not reset_peak(pid):
        pytest.skip("/proc/PID/clear_refs is not writable here: no way to measure one request's peak")
    idle = status_kib(pid, "VmRSS")
    response = client.post("/api/write", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["bytesWritten"] == len(data)
    growth = (status_kib(pid, "VmHWM") - idle) * 1024
    assert growth <= 1.6 * len(raw), f"peak {growth / MiB:.0f} MiB over idle for a {len(raw) / MiB:.0f} MiB body"
    assert path.read_bytes() == data


def test_memory_comes_back_after_big_requests(server: ServerProcess, client: httpx.Client, tmp_path: Path) -> None:
    """A few seconds after 16 MiB base64 writes and reads and 20 MB execs, RSS is within 20 MB
    of what it was before them. Was about 80 MB over (the allocator kept what they used)."""
    settle(client, tmp_path)
    pid = server.pid
    before = status_kib(pid, "VmRSS") * 1024
    data = os.urandom(16 * MiB)
    encoded = pybase64.b64encode_as_string(data)
    path = str(tmp_path / "16mib.bin")
    for _ in range(3):
        assert client.post("/api/write", json={"path": path, "content": encoded, "encoding": "base64"}).is_success
        read = client.post("/api/read", json={"path": path, "encoding": "base64"})
        assert read.status_code == 200 and read.json()["size"] == len(data)
        ran = client.post("/api/execute", json={"command": "head -c 20000000 /dev/zero | tr '\\0' x"})
        assert ran.status_code == 200 and len(ran.json()["stdout"]) == 20_000_000
        del read, ran
    peak = status_kib(pid, "VmRSS") * 1024
    deadline = time.monotonic() + 10
    while (now := status_kib(pid, "VmRSS") * 1024) - before > 20 * MB and time.monotonic() < deadline:
        time.sleep(0.25)
    assert now - before <= 20 * MB, (
        f"RSS {now / MiB:.0f} MiB, {(now - before) / MB:.0f} MB over {before / MiB:.0f} MiB before "
        f"(peak seen {peak / MiB:.0f} MiB)"
    )


async def test_one_trim_after_the_last_of_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """``trim_soon`` calls in a burst share one trim, run in a worker thread after the last."""
    import asyncio
    import threading

    from sandbox_core import memory

    if memory._libc_function("malloc_trim") is None:
        pytest.skip("no malloc_trim (not glibc)")
    trims: list[tuple[float, threading.Thread]] = []
    monkeypatch.setattr(memory, "TRIM_DELAY_S", 0.5)
    monkeypatch.setattr(memory, "malloc_trim", lambda: trims.append((time.monotonic(), threading.current_thread())))
    loop_thread = threading.current_thread()
    for _ in range(5):
        memory.trim_after(memory.TRIM_AFTER_BYTES - 1)  # small: asks for none
        memory.trim_soon()
        last = time.monotonic()
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    assert len(trims) == 1, trims
    assert trims[0][0] >= last + 0.45  # the delay counts from the last call of the burst
    assert trims[0][1] is not loop_thread
    memory.trim_after(memory.TRIM_AFTER_BYTES - 1)
    await asyncio.sleep(0.7)
    assert len(trims) == 1
