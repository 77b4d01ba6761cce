"""Helpers of the watch tests: open a watch, read until some events have come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

from sandbox_core.contract.models.watch import FileWatchEvent, WatchingEvent
from sandbox_core.registry import ServiceRegistry
from sandbox_services.watch import WatchService

#: A bound on waiting for something that must happen (a safety net, never an assertion on time).
SAFETY_S = 30.0

Stream = AsyncGenerator[Any, None]


def touch(path: str, data: str = "") -> None:
    """Write ``path`` (blocking, on purpose: the loop waits, the kernel queues the events)."""
    with open(path, "w") as f:
        f.write(data)


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def service(registry: ServiceRegistry) -> WatchService:
    return registry.get("watch", WatchService)


async def open_watch(registry: ServiceRegistry, path: str, **params: Any) -> tuple[WatchingEvent, Stream]:
    """A watch stream whose ``watching`` event has come."""
    stream = registry.stream("watch", "watch", {"path": path, **params})
    first = await asyncio.wait_for(stream.__anext__(), SAFETY_S)
    assert isinstance(first, WatchingEvent), first
    return first, stream


def seen(events: list[Any]) -> set[tuple[str, str, bool]]:
    return {(e.event_type, e.path, e.is_directory) for e in events if isinstance(e, FileWatchEvent)}


async def until(stream: Stream, done: Callable[[list[Any]], bool]) -> list[Any]:
    async def read() -> list[Any]:
        events: list[Any] = []
        async for event in stream:
            events.append(event)
            if done(events):
                return events
        raise AssertionError(f"the stream ended first: {events}")

    return await asyncio.wait_for(read(), SAFETY_S)


async def expect(stream: Stream, *wanted: tuple[str, str, bool]) -> list[Any]:
    return await until(stream, lambda events: set(wanted) <= seen(events))


async def eventually(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (polling; bounded by the safety net)."""

    async def poll() -> None:
        while True:
            if check():
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), SAFETY_S)
