"""The ``idempotencyKey`` table: at most once, the same outcome, bounded, expiring, and a first
request that was cancelled leaves nothing behind (the conformance kit checks it end to end)."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_core.errors import ErrorCode, IdempotencyKeyReused, SandboxError
from sandbox_services.idempotency import ENTRY_OVERHEAD, IdempotencyTable

SAFETY_S = 10


class Clock:
    """A clock the test moves (the table's window is measured on it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Runs:
    """A function to run once per key: counts its runs; ``gate`` holds each run until set."""

    def __init__(self) -> None:
        self.count = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self) -> str:
        self.count += 1
        self.started.set()
        await self.gate.wait()
        return f"run {self.count}"


def table(clock: Clock | None = None, **limits: int) -> IdempotencyTable:
    return IdempotencyTable(
        window_s=limits.pop("window_s", 600),
        max_keys=limits.pop("max_keys", 100),
        max_bytes=limits.pop("max_bytes", 1 << 20),
        clock=clock or Clock(),
    )


async def test_a_key_runs_once_and_answers_the_first_result() -> None:
    t, runs = table(), Runs()
    assert await t.once("k", "op", {"a": 1}, runs) == "run 1"
    assert await t.once("k", "op", {"a": 1, "b": None}, runs) == "run 1"  # None is "not given"
    assert runs.count == 1
    assert await t.once(None, "op", {"a": 1}, runs) == "run 2"  # no key: no memory
    assert await t.once(None, "op", {"a": 1}, runs) == "run 3"


async def test_other_parameters_or_operation_is_409_naming_the_key() -> None:
    t, runs = table(), Runs()
    await t.once("k", "op", {"a": 1}, runs)
    for operation, params in (("op", {"a": 2}), ("other", {"a": 1}), ("op", {})):
        with pytest.raises(IdempotencyKeyReused) as info:
            await t.once("k", operation, params, runs)
        assert (info.value.code, info.value.status) == (ErrorCode.IDEMPOTENCY_KEY_REUSED, 409)
        assert info.value.details["idempotencyKey"] == "k" and info.value.details["field"] == "idempotencyKey"
    assert runs.count == 1


async def test_concurrent_requests_run_once_and_wait_for_the_first() -> None:
    t, runs = table(), Runs()
    runs.gate.clear()
    calls = [asyncio.ensure_future(t.once("k", "op", {}, runs)) for _ in range(5)]
    await asyncio.wait_for(runs.started.wait(), SAFETY_S)
    await asyncio.sleep(0)  # every call has reached the table
    assert not any(c.done() for c in calls) and runs.count == 1
    runs.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*calls), SAFETY_S) == ["run 1"] * 5
    assert runs.count == 1


async def test_an_error_is_answered_again_as_a_fresh_exception() -> None:
    t = table()
    count = 0

    async def fail() -> str:
        nonlocal count
        count += 1
        raise SandboxError(ErrorCode.PROCESS_ALREADY_EXISTS, "already", {"processId": "p"})

    with pytest.raises(SandboxError) as first:
        await t.once("k", "op", {}, fail)
    with pytest.raises(SandboxError) as again:
        await t.once("k", "op", {}, fail)
    assert count == 1 and again.value is not first.value
    assert (again.value.code, again.value.message, again.value.details) == (
        first.value.code,
        first.value.message,
        first.value.details,
    )


async def test_an_unexpected_exception_is_not_remembered() -> None:
    t = table()
    count = 0

    async def broken() -> str:
        nonlocal count
        count += 1
        raise RuntimeError("bug")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            await t.once("k", "op", {}, broken)
    assert count == 2 and len(t) == 0


async def test_a_cancelled_first_leaves_its_waiters_to_run_it() -> None:
    t, runs = table(), Runs()
    runs.gate.clear()
    first = asyncio.ensure_future(t.once("k", "op", {}, runs))
    await asyncio.wait_for(runs.started.wait(), SAFETY_S)
    waiter = asyncio.ensure_future(t.once("k", "op", {}, runs))
    await asyncio.sleep(0)
    first.cancel()  # the first's client left before it ended
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.sleep(0)
    runs.gate.set()
    assert await asyncio.wait_for(waiter, SAFETY_S) == "run 2"  # the waiter ran it
    assert await t.once("k", "op", {}, runs) == "run 2"


async def test_a_cancelled_waiter_leaves_the_first_be() -> None:
    t, runs = table(), Runs()
    runs.gate.clear()
    first = asyncio.ensure_future(t.once("k", "op", {}, runs))
    await asyncio.wait_for(runs.started.wait(), SAFETY_S)
    waiter = asyncio.ensure_future(t.once("k", "op", {}, runs))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    runs.gate.set()
    assert await asyncio.wait_for(first, SAFETY_S) == "run 1"


async def test_keys_expire_after_the_window_counted_from_the_end() -> None:
    clock, runs = Clock(), Runs()
    t = table(clock, window_s=60)
    runs.gate.clear()
    first = asyncio.ensure_future(t.once("k", "op", {}, runs))
    await asyncio.wait_for(runs.started.wait(), SAFETY_S)
    clock.now += 3600  # a run longer than the window: still held while it runs
    waiter = asyncio.ensure_future(t.once("k", "op", {}, runs))
    await asyncio.sleep(0)
    runs.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, waiter), SAFETY_S) == ["run 1", "run 1"]
    clock.now += 59
    assert await t.once("k", "op", {}, runs) == "run 1"
    clock.now += 1
    assert await t.once("k", "op", {}, runs) == "run 2"  # forgotten: runs again
    assert runs.count == 2


async def test_the_table_is_bounded_by_count_oldest_out_first() -> None:
    t, runs = table(max_keys=3), Runs()
    for k in "abcd":
        await t.once(k, "op", {}, runs)
    assert len(t) == 3
    assert await t.once("d", "op", {}, runs) == "run 4"
    assert await t.once("a", "op", {}, runs) == "run 5"  # forgotten
    assert len(t) == 3


async def test_the_table_is_bounded_by_bytes() -> None:
    t = table(max_bytes=2 * (ENTRY_OVERHEAD + 1 + 1000) + 10)
    count = 0

    async def big() -> str:
        nonlocal count
        count += 1
        return "x" * 1000

    for k in "abc":
        await t.once(k, "op", {}, big, len)
        assert t.bytes <= t.max_bytes
    assert len(t) == 2 and count == 3
    await t.once("c", "op", {}, big, len)
    assert count == 3
    await t.once("a", "op", {}, big, len)  # pushed out by c
    assert count == 4

    async def huge() -> str:
        return "x" * 100_000

    assert await t.once("h", "op", {}, huge, len) == "x" * 100_000  # answered, but too big to hold
    assert "h" not in t._entries and t.bytes <= t.max_bytes
