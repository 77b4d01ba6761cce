"""The files service's byte streams (for streaming transports), called in-process through the registry."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers_registry import services_registry

from sandbox_core.errors import SandboxError
from sandbox_core.registry import ServiceRegistry

MiB = 1024 * 1024


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[ServiceRegistry]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    async with services_registry(workspace) as reg:
        yield reg


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def chunks(total: int, size: int, digest: Any) -> AsyncIterator[bytes]:
    block = os.urandom(size)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        piece = bytes([sent // size % 251]) + block[1:n]  # each chunk differs
        digest.update(piece)
        sent += n
        yield piece


async def test_stream_operations_are_indexed(registry: ServiceRegistry) -> None:
    """A parameter typed as an async iterable of bytes does not break the registry's params struct."""
    write = registry.operation("files", "write_file_stream")
    assert not write.streaming and write.param_names == ("path", "data", "session_id", "mode")
    read = registry.operation("files", "read_bytes")
    assert read.streaming


async def test_64_mib_round_trip_in_bounded_memory(registry: ServiceRegistry, tmp_path: Path) -> None:
    path = str(tmp_path / "big.bin")
    total = 64 * MiB
    sent = hashlib.sha256()
    received = hashlib.sha256()
    largest = 0
    count = 0
    tracemalloc.start()
    try:
        result = await registry.call(
            "files", "write_file_stream", {"path": path, "data": chunks(total, 64 * 1024, sent)}
        )
        assert (result.success, result.path, result.bytes_written) == (True, path, total)
        assert (await anyio.Path(path).stat()).st_size == total
        written_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        async for data in registry.stream("files", "read_bytes", {"path": path}):
            assert isinstance(data, bytes)
            received.update(data)
            largest = max(largest, len(data))
            count += len(data)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == total and received.hexdigest() == sent.hexdigest()
    assert 0 < largest <= MiB  # bounded chunks
    assert written_peak < 16 * MiB, written_peak  # a quarter of the file: memory does not grow with it
    assert read_peak < 16 * MiB, read_peak


async def test_write_stream_is_atomic_and_keeps_mode(registry: ServiceRegistry, tmp_path: Path) -> None:
    target = tmp_path / "tool.sh"
    target.write_text("old")
    target.chmod(0o755)
    before = target.stat().st_ino

    async def data() -> AsyncIterator[bytes]:
        yield b"#!/bin/sh\n"
        yield bytearray(b"echo new\n")
        yield memoryview(b"")

    result = await registry.call("files", "write_file_stream", {"path": str(target), "data": data()})
    assert result.bytes_written == len("#!/bin/sh\necho new\n")
    assert target.read_text() == "#!/bin/sh\necho new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755 and target.stat().st_ino != before
    assert sorted(os.listdir(tmp_path)) == ["tool.sh", "workspace"]


async def test_write_stream_creates_parents_and_resolves_relative_paths(registry: ServiceRegistry) -> None:
    async def data() -> AsyncIterator[bytes]:
        yield b"rel"

    await registry.call("files", "write_file_stream", {"path": "a/b/c.txt", "data": data()})
    assert (Path(registry.workspace) / "a/b/c.txt").read_bytes() == b"rel"


async def test_failed_write_stream_leaves_the_old_file(registry: ServiceRegistry, tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("original")
    fds = open_fds()

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (3 * MiB)
        raise ConnectionError("peer went away")

    with pytest.raises(SandboxError) as info:
        await registry.call("files", "write_file_stream", {"path": str(target), "data": broken()})
    assert info.value.code == "INTERNAL_ERROR"
    assert target.read_text() == "original"
    assert sorted(os.listdir(tmp_path)) == ["keep.txt", "workspace"]
    assert open_fds() == fds


async def test_write_stream_rejects_non_bytes(registry: ServiceRegistry, tmp_path: Path) -> None:
    async def text() -> AsyncIterator[Any]:
        yield b"ok"
        yield "not bytes"

    with pytest.raises(SandboxError) as info:
        await registry.call("files", "write_file_stream", {"path": str(tmp_path / "t"), "data": text()})
    assert (info.value.code, info.value.details.get("field")) == ("VALIDATION_FAILED", "data")
    assert sorted(os.listdir(tmp_path)) == ["workspace"]
    with pytest.raises(SandboxError) as decoded:  # a JSON body cannot carry a stream
        await registry.call("files", "write_file_stream", b'{"path": "/tmp/x", "data": "abc"}')
    assert (decoded.value.code, decoded.value.details.get("field")) == ("VALIDATION_FAILED", "data")


async def test_cancelled_write_stream_cleans_up(registry: ServiceRegistry, tmp_path: Path) -> None:
    started = asyncio.Event()
    fds = open_fds()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"y" * 65536
            started.set()
            await asyncio.sleep(0)

    task = asyncio.ensure_future(
        registry.call("files", "write_file_stream", {"path": str(tmp_path / "never.bin"), "data": endless()})
    )
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):  # a worker thread may still finish its write, then it closes and unlinks
        if sorted(os.listdir(tmp_path)) == ["workspace"] and open_fds() == fds:
            break
        await asyncio.sleep(0.01)
    assert sorted(os.listdir(tmp_path)) == ["workspace"]
    assert open_fds() == fds


async def test_read_bytes_errors_and_early_close(registry: ServiceRegistry, tmp_path: Path) -> None:
    with pytest.raises(SandboxError) as info:
        async for _ in registry.stream("files", "read_bytes", {"path": str(tmp_path / "missing")}):
            pass
    assert info.value.code == "FILE_NOT_FOUND" and info.value.details["operation"] == "file.read"
    with pytest.raises(SandboxError) as is_dir:
        async for _ in registry.stream("files", "read_bytes", {"path": str(tmp_path)}):
            pass
    assert is_dir.value.code == "IS_DIRECTORY"

    path = tmp_path / "sparse.bin"
    async with await anyio.open_file(path, "wb") as fh:
        await fh.truncate(40 * MiB)  # over the 32 MiB cap of `read`: the byte stream has none
    fds = open_fds()
    stream = registry.stream("files", "read_bytes", {"path": str(path)})
    first = await stream.__anext__()
    assert first == bytes(len(first))
    await stream.aclose()  # type: ignore[attr-defined]
    assert open_fds() == fds


async def test_read_stream_closes_its_file_when_abandoned(registry: ServiceRegistry, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(5 * MiB))
    fds = open_fds()
    stream = registry.stream("files", "read_stream", {"path": str(path)})
    meta = await stream.__anext__()
    assert meta.size == 5 * MiB and meta.is_binary
    assert len((await stream.__anext__()).data) == 87380
    await stream.aclose()  # type: ignore[attr-defined]
    assert open_fds() == fds


async def test_write_stream_mode_sets_the_bits_and_a_bad_one_names_the_field(
    registry: ServiceRegistry, tmp_path: Path
) -> None:
    path = str(tmp_path / "run.sh")

    async def body() -> AsyncIterator[bytes]:
        yield b"#!/bin/sh\n"

    await registry.call("files", "write_file_stream", {"path": path, "data": body(), "mode": "0700"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    await registry.call("files", "write_file_stream", {"path": path, "data": body(), "mode": 0o640})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    await registry.call("files", "write_file_stream", {"path": path, "data": body()})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640  # kept without one
    with pytest.raises(SandboxError) as caught:
        await registry.call("files", "write_file_stream", {"path": path, "data": body(), "mode": "0o777"})
    assert (caught.value.code, caught.value.details.get("field")) == ("VALIDATION_FAILED", "mode")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
