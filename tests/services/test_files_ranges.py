"""Ranged and tail reads in the files service, called in-process through the registry: the tail
scan goes backwards in bounded steps, stops at the read limit, and stops when its stream does."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers_registry import files_registry

from sandbox_core.errors import SandboxError
from sandbox_core.registry import ServiceRegistry
from sandbox_services.files.ranges import TailScan

MiB = 1024 * 1024


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[ServiceRegistry]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    reg = await files_registry(workspace)
    try:
        yield reg
    finally:
        await reg.aclose()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sparse(path: Path, size: int) -> str:
    """A file of ``size`` bytes of hole (no newline anywhere); its path."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return str(path)


def test_tail_scan_reads_backwards_in_bounded_steps(tmp_path: Path) -> None:
    """A file without newlines: the scan needs a step per budget, and ends with the whole file;
    with a cap it stops once the tail is known to be longer, without reading the rest."""
    path = tmp_path / "nolines"
    path.write_bytes(b"x" * (5 * MiB))
    fd = os.open(path, os.O_RDONLY)
    try:
        scan = TailScan(5 * MiB, 3)
        steps = 1
        while not scan.step(fd, MiB):
            steps += 1
        assert (scan.start, scan.too_long, steps) == (0, False, 5)
        capped = TailScan(5 * MiB, 3, cap=2 * MiB)
        steps = 1
        while not capped.step(fd, MiB):
            steps += 1
        assert (capped.start, capped.too_long) == (None, True)
        assert capped.pos >= 5 * MiB - 3 * MiB  # it never went further back than the cap
        assert steps <= 3
    finally:
        os.close(fd)


async def test_tail_over_the_read_limit_is_413(registry: ServiceRegistry, tmp_path: Path) -> None:
    path = sparse(tmp_path / "big.log", 1024**4)
    with pytest.raises(SandboxError) as info:
        await registry.call("files", "read", {"path": path, "tailLines": 1})
    assert (info.value.code, info.value.status) == ("FILE_TOO_LARGE", 413)
    assert info.value.details["limit"] == 32 * MiB


async def test_a_closed_tail_stream_stops_its_scan(registry: ServiceRegistry, tmp_path: Path) -> None:
    """A stream's tail of a 1 TiB file without newlines would scan it all before its first event;
    cancelled, the scan stops at its next step and the file is closed (not minutes later)."""
    path = sparse(tmp_path / "huge.log", 1024**4)
    fds = open_fds()
    stream = registry.stream("files", "read_stream", {"path": path, "tailLines": 1})
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.2)
    assert not first.done()  # still scanning
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await stream.aclose()
    for _ in range(500):  # the step under way finishes (at most io_batch_bytes), then the file closes
        if open_fds() == fds:
            break
        await asyncio.sleep(0.02)
    assert open_fds() == fds, "the file is still open: the scan goes on"
