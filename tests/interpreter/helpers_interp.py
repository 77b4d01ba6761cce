"""Helpers of the interpreter tests."""

from __future__ import annotations

from typing import Any

from sandbox_core.models.interpreter import (
    AnyCodeEvent,
    CodeResultEvent,
    CodeStartEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)
from sandbox_core.registry import ServiceRegistry


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
