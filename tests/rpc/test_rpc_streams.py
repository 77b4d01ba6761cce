"""Streams over rpc: a large file in (``files.writeFileStream``) and out (``files.readFile`` with
``{encoding: 'none'}``) in bounded server memory, and a reader that cancels or stops reading an
exec stream stops its command."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers_rpc import FRAME, sid, wait_for

from capnweb import ReadableStream, RpcStub
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import Proc, reset_peak, status_kib

MiB = 1024 * 1024


async def test_large_file_round_trip_in_bounded_server_memory(
    api: RpcStub, rpc_server: ServerProcess, tmp_path: Path
) -> None:
    total, size = 128 * MiB, 256 * 1024
    block = os.urandom(size)
    sent = hashlib.sha256()

    async def source() -> AsyncIterator[bytes]:
        for i in range(total // size):
            chunk = i.to_bytes(4, "big") + block[4:]  # each chunk differs
            sent.update(chunk)
            yield chunk

    assert await api.utils.ping() == "healthy"  # warm
    pid = rpc_server.pid
    if not reset_peak(pid):
        pytest.skip("/proc/PID/clear_refs is not writable here: no way to measure the peak")
    idle = status_kib(pid, "VmRSS")
    path = str(tmp_path / "big.bin")
    written = await api.files.writeFileStream(path, ReadableStream(source()), None)
    assert set(written) >= {"success", "path", "bytesWritten", "timestamp"}
    assert (written["success"], written["path"], written["bytesWritten"]) == (True, path, total)

    result = await api.files.readFile(path, None, {"encoding": "none"})
    assert (result["size"], result["mimeType"]) == (total, "application/octet-stream")
    received = hashlib.sha256()
    count = 0
    async for chunk in result["content"]:
        received.update(chunk)
        count += len(chunk)
    assert count == total and received.digest() == sent.digest()
    growth = (status_kib(pid, "VmHWM") - idle) * 1024
    assert growth <= 64 * MiB, f"server peak {growth / MiB:.0f} MiB over idle for a {total // MiB} MiB round trip"


async def test_write_stream_errors(api: RpcStub, tmp_path: Path) -> None:
    async def text() -> AsyncIterator[str]:
        yield "not bytes"

    try:
        await api.files.writeFileStream(str(tmp_path / "t"), ReadableStream(text()), None)
    except Exception as err:
        assert getattr(err, "props", {}).get("code") == "VALIDATION_FAILED"
    else:
        raise AssertionError("a stream of strings was written")
    assert not (tmp_path / "t").exists()


def start_of(chunk: bytes) -> dict[str, object]:
    m = FRAME.match(chunk)
    assert m is not None and m.group(1) == b"start", chunk
    event: dict[str, object] = json.loads(m.group(2))
    return event


async def process_status(api: RpcStub, process_id: object) -> str:
    return str((await api.processes.getProcess(process_id))["process"]["status"])


async def test_a_reader_that_cancels_ends_the_command(api: RpcStub) -> None:
    """The command keeps writing: the engine's next write is rejected and the source closed."""
    stream = await api.commands.executeStream("echo started; exec yes", sid())
    chunks = stream.__aiter__()
    start = start_of(await chunks.__anext__())
    assert b"started" in await chunks.__anext__()
    await stream.aclose()
    assert await wait_for(lambda: _is(api, start["processId"], "killed"))


async def test_a_reader_that_cancels_ends_a_silent_command(api: RpcStub) -> None:
    stream = await api.commands.executeStream("echo started; exec sleep 600", sid())
    chunks = stream.__aiter__()
    start = start_of(await chunks.__anext__())
    assert b"started" in await chunks.__anext__()
    proc = Proc.of(int(str(start["pid"])))
    await stream.aclose()
    assert await wait_for(lambda: _is(api, start["processId"], "killed"), timeout_s=5)
    assert await wait_for(lambda: _false(proc.alive()), timeout_s=5)


async def test_a_reader_that_stops_reading_stops_the_command(api: RpcStub, rpc_server: ServerProcess) -> None:
    """Flow control: ``yes`` fills its pipe and waits; the server holds a bounded amount."""
    stream = await api.commands.executeStream("yes", sid())
    chunks = stream.__aiter__()
    start = start_of(await chunks.__anext__())
    await chunks.__anext__()
    before = status_kib(rpc_server.pid, "VmRSS")
    await asyncio.sleep(1.5)
    grown = (status_kib(rpc_server.pid, "VmRSS") - before) * 1024
    assert grown < 64 * MiB, f"the server grew {grown / MiB:.0f} MiB for a reader that does not read"
    assert await process_status(api, start["processId"]) == "running"
    await stream.aclose()
    assert await wait_for(lambda: _is(api, start["processId"], "killed"))


async def test_cancelling_a_file_read_midway(api: RpcStub, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(8 * MiB))
    result = await api.files.readFile(str(path), None, {"encoding": "none"})
    chunks = result["content"].__aiter__()
    assert len(await chunks.__anext__()) > 0
    await result["content"].aclose()
    assert await api.utils.ping() == "healthy"  # the session carries on


async def _is(api: RpcStub, process_id: object, status: str) -> bool:
    return await process_status(api, process_id) == status


async def _false(value: bool) -> bool:
    return not value
