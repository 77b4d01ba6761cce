"""Helpers of the interpreter tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from sandbox_core.contract.models.interpreter import (
    AnyCodeEvent,
    CodeResultEvent,
    CodeStartEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)
from sandbox_core.registry import ServiceRegistry
from sandbox_core.testing import subreaper
from sandbox_services import procfs, spawn


@contextlib.contextmanager
def others_spared() -> Iterator[None]:
    """While an in-process interpreter service runs: it makes the test process a child subreaper
    and reaps the children it did not spawn, which here include the servers other fixtures
    started; they are counted as spawned meanwhile, and the subreaper flag is put back after."""
    others = set(procfs.children(os.getpid())) - spawn._SPAWNED
    was_subreaper = subreaper()
    spawn._SPAWNED.update(others)
    try:
        yield
    finally:
        spawn._SPAWNED.difference_update(others)
        subreaper(was_subreaper)


async def create(registry: ServiceRegistry, language: str = "python", **params: Any) -> str:
    created = await registry.call("interpreter", "create_code_context", {"language": language, **params})
    return str(created.context_id)  # type: ignore[attr-defined]


async def run(registry: ServiceRegistry, context_id: str, code: str, **params: Any) -> list[AnyCodeEvent]:
    events: list[AnyCodeEvent] = []
    async for event in registry.stream("interpreter", "run_code", {"context_id": context_id, "code": code, **params}):
        events.append(event)  # type: ignore[arg-type]
    assert isinstance(events[0], CodeStartEvent)
    return events[1:]


def out(events: list[AnyCodeEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, CodeStdoutEvent))


def err(events: list[AnyCodeEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, CodeStderrEvent))


def results(events: list[AnyCodeEvent]) -> list[str | None]:
    return [e.text for e in events if isinstance(e, CodeResultEvent)]
