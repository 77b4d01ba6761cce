"""The batched JSON encoder both the http and ws transports use for answers with a long list
(sandbox_core.json_batches): the pieces join to exactly the whole encoding, and other tasks
run between two batches."""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import pytest

from sandbox_core.json_batches import BATCH_ITEMS, split_long_list


class Entry(msgspec.Struct, rename="camel"):
    name: str
    size_bytes: int


class Listing(msgspec.Struct, rename="camel"):
    before: str
    entries: list[Entry]
    after_count: int
    tags: list[str] = []


class Frame(msgspec.Struct):
    id: int
    body: Listing


def listing(count: int) -> Listing:
    entries = [Entry(f'é-{i}-"q"', i) for i in range(count)]
    return Listing(before='a "head" ✓', entries=entries, after_count=count, tags=["x"])


@pytest.mark.parametrize("count", [BATCH_ITEMS + 1, 2 * BATCH_ITEMS, 2 * BATCH_ITEMS + 7])
async def test_the_pieces_join_to_the_whole_encoding(count: int) -> None:
    body = listing(count)
    split = split_long_list(body)
    assert split is not None and split.items is body.entries
    chunks = [chunk async for chunk in split.chunks()]
    assert b"".join(chunks) == msgspec.json.encode(body)
    assert msgspec.json.decode(b"".join(chunks), type=Listing).after_count == count
    assert len(chunks) == 2 + -(-count // BATCH_ITEMS)  # head, each batch, tail
    assert await split.encode() == msgspec.json.encode(body)


async def test_a_wrapper_is_encoded_around_the_answer() -> None:
    body = listing(BATCH_ITEMS + 5)
    split = split_long_list(body, lambda outer: Frame(id=7, body=outer))
    assert split is not None
    assert await split.encode() == msgspec.json.encode(Frame(id=7, body=body))


@pytest.mark.parametrize("body", [listing(BATCH_ITEMS), {"entries": list(range(3 * BATCH_ITEMS))}, None, "text"])
def test_an_answer_without_a_long_list_is_not_split(body: object) -> None:
    assert split_long_list(body) is None


async def test_other_tasks_run_between_two_batches() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    split = split_long_list(listing(4 * BATCH_ITEMS))
    assert split is not None
    task = asyncio.ensure_future(ticker())
    try:
        seen = [ticks async for _ in split.chunks()]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    batches = seen[1:-1]
    assert len(batches) == 4
    assert all(later > earlier for earlier, later in itertools.pairwise(batches)), seen
