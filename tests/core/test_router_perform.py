"""One way to run an operation for every transport (:func:`sandbox_core.router.perform`): the
router's routes (http, ws) and the rpc transport's calls get the same outcome, a result, the
error, or an event stream whose first event has come, and render it their own way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox_core.contract.routes import TABLE
from sandbox_core.errors import ErrorCode, SandboxError, lookup
from sandbox_core.registry import ServiceContext, ServiceRegistry, ServiceSpec, operation
from sandbox_core.router import (
    Done,
    EventStream,
    Failed,
    Reply,
    Router,
    RouteRequest,
    Target,
    perform,
    stream_error_event,
)


class Sample:
    def __init__(self, ctx: ServiceContext) -> None:
        self.closed: list[str] = []

    @operation
    async def greet(self, name: str, times: int = 1) -> dict[str, Any]:
        if times < 0:
            raise SandboxError(ErrorCode.RESOURCE_BUSY, "no", {"times": times})
        return {"greeting": f"hi {name}" * times}

    @operation
    async def count(self, upto: int, fail_at: int = 0) -> AsyncIterator[dict[str, Any]]:
        try:
            for i in range(1, upto + 1):
                if i == fail_at:
                    raise SandboxError(ErrorCode.FILESYSTEM_ERROR, f"failed at {i}", {"at": i})
                yield {"type": "number", "value": i}
        finally:
            self.closed.append(f"count({upto}, {fail_at})")


@pytest.fixture
async def registry(tmp_path: Any) -> AsyncIterator[ServiceRegistry]:
    reg = ServiceRegistry({"sample": ServiceSpec("sample", Sample)}, settings={}, workspace=str(tmp_path))
    await reg.start()
    try:
        yield reg
    finally:
        await reg.aclose()


def closed(registry: ServiceRegistry) -> list[str]:
    return registry.get("sample", Sample).closed


async def test_a_unary_operation_is_done_or_failed(registry: ServiceRegistry) -> None:
    op = registry.operation("sample", "greet")
    assert await perform(registry, op, {"name": "ann"}) == Done({"greeting": "hi ann"})
    refused = await perform(registry, op, {"times": 2})
    assert isinstance(refused, Failed) and refused.error.code == ErrorCode.VALIDATION_FAILED
    assert refused.error.details["field"] == "name"
    busy = await perform(registry, op, {"name": "ann", "times": -1})
    assert isinstance(busy, Failed) and (busy.error.code, busy.error.details) == ("RESOURCE_BUSY", {"times": -1})


async def test_binding_failures_are_the_calls_failures(registry: ServiceRegistry) -> None:
    """What makes the parameters may fail: that is the call's Failed outcome, not an exception."""
    op = registry.operation("sample", "greet")

    def bind() -> dict[str, Any]:
        raise SandboxError(ErrorCode.VALIDATION_FAILED, "bad argument", {"field": "arguments"})

    outcome = await perform(registry, op, bind)
    assert isinstance(outcome, Failed) and outcome.error.details == {"field": "arguments"}


async def test_a_stream_answers_once_its_first_event_has_come(registry: ServiceRegistry) -> None:
    op = registry.operation("sample", "count")
    outcome = await perform(registry, op, {"upto": 3})
    assert isinstance(outcome, EventStream) and outcome.first == {"type": "number", "value": 1}
    assert [e["value"] async for e in outcome.each()] == [1, 2, 3]
    assert closed(registry) == ["count(3, 0)"]
    empty = await perform(registry, op, {"upto": 0})
    assert isinstance(empty, EventStream) and empty.first is None
    assert [e async for e in empty.each()] == []


async def test_a_stream_that_fails_to_start_is_failed_and_closed(registry: ServiceRegistry) -> None:
    outcome = await perform(registry, registry.operation("sample", "count"), {"upto": 3, "failAt": 1})
    assert isinstance(outcome, Failed) and outcome.error.code == ErrorCode.FILESYSTEM_ERROR
    assert closed(registry) == ["count(3, 1)"]


async def test_a_stream_that_fails_later_ends_with_the_error_event(registry: ServiceRegistry) -> None:
    op = registry.operation("sample", "count")
    outcome = await perform(registry, op, {"upto": 5, "failAt": 3})
    assert isinstance(outcome, EventStream)
    events = [e async for e in outcome.each(stream_error_event)]
    assert [e["type"] for e in events] == ["number", "number", "error"]
    assert (events[-1]["code"], events[-1]["error"]) == ("FILESYSTEM_ERROR", "failed at 3")
    assert "details" not in events[-1]  # http's and ws's event, as upstream's
    assert closed(registry) == ["count(5, 3)"]

    again = await perform(registry, op, {"upto": 5, "failAt": 2})
    assert isinstance(again, EventStream)
    last = [e async for e in again.each(lambda err: stream_error_event(err, details=True))][-1]
    assert last["details"] == {"at": 2}  # rpc's event: a client raises the typed error from it
    # without an error event, the failure is the reader's
    third = await perform(registry, op, {"upto": 5, "failAt": 2})
    assert isinstance(third, EventStream)
    with pytest.raises(SandboxError):
        _ = [e async for e in third.each()]
    assert closed(registry) == ["count(5, 3)", "count(5, 2)", "count(5, 2)"]


async def test_a_reader_that_stops_closes_the_stream(registry: ServiceRegistry) -> None:
    outcome = await perform(registry, registry.operation("sample", "count"), {"upto": 100})
    assert isinstance(outcome, EventStream)
    reader = outcome.each()
    assert (await reader.__anext__())["value"] == 1
    await reader.aclose()
    assert closed(registry) == ["count(100, 0)"]


async def test_the_router_renders_the_same_outcome(registry: ServiceRegistry) -> None:
    """The generic route runs through perform: its failure is the contract's error body, with the
    status of the error's code, naming the operation."""
    router = Router(registry, TABLE)

    async def post(path: str, body: bytes) -> Reply | EventStream:
        target = router.match("POST", path)
        assert isinstance(target, Target)
        return await router.run(target, RouteRequest("POST", path, body=body))

    reply = await post("/api/sample/greet", b'{"name": "bo", "times": -1}')
    entry = lookup("RESOURCE_BUSY")
    assert isinstance(reply, Reply) and entry is not None and reply.status == entry.status
    assert (reply.body["code"], reply.body["context"], reply.body["operation"]) == (
        "RESOURCE_BUSY",
        {"times": -1},
        "sample.greet",
    )
    failed = await post("/api/sample/count", b'{"upto": 2, "failAt": 1}')
    assert isinstance(failed, Reply) and failed.body["code"] == "FILESYSTEM_ERROR"
    stream = await post("/api/sample/count", b'{"upto": 2}')
    assert isinstance(stream, EventStream) and [e["value"] async for e in stream.each()] == [1, 2]
