"""``processes.run_stream`` in-process: a reader that stops reading stalls the process (bounded
memory), and closing the stream ends it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers_registry import services_registry

from sandbox_core.contract.models.processes import RunStartEvent, RunStdoutEvent
from sandbox_core.registry import ServiceRegistry
from sandbox_services.processes import ProcessesService

MiB = 1024 * 1024


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[ServiceRegistry]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    async with services_registry(workspace) as reg:
        yield reg


async def test_a_reader_that_stops_stalls_the_process_and_closing_ends_it(registry: ServiceRegistry) -> None:
    processes = registry.get("processes", ProcessesService)
    stream = registry.stream("processes", "run_stream", {"argv": ["yes", "y" * 1000]})
    start = await anext(stream)
    assert isinstance(start, RunStartEvent)
    job = processes.records[start.process_id].job
    first = await anext(stream)
    assert isinstance(first, RunStdoutEvent) and first.data.startswith(b"y")
    # the reader stops here; `yes` could write gigabytes meanwhile, but the ring is never overtaken
    ends = []
    for _ in range(5):
        await asyncio.sleep(0.2)
        ends.append(job.ring.end)
    capacity = processes.settings.output_ring_bytes
    assert not job.done
    assert ends[-1] <= len(first.data) + capacity + 2 * MiB, ends  # a ring, a pipe, one read at most
    assert len(job.ring.held()) <= capacity + 2 * MiB
    await stream.aclose()  # the reader leaves before the process ended
    assert job.done and processes.records[start.process_id].status == "killed"
