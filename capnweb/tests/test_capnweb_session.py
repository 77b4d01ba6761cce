"""The engine's session, two of them joined in memory: calls, pipelining, order, ownership,
errors, map, the end of a session, and what a hostile peer's messages do."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any

import pytest
from capnweb_pair import Pair, Raw

from capnweb import Limits, RpcError, RpcTarget, SessionClosed


class Counter(RpcTarget):
    disposed = 0

    def __init__(self, value: int) -> None:
        self.count = value  # an instance attribute: never reachable

    def increment(self, n: int = 1) -> int:
        self.count += n
        return self.count

    @property
    def value(self) -> int:
        return self.count

    def _secret(self) -> str:
        return "hidden"

    def __rpc_dispose__(self) -> None:
        Counter.disposed += 1


class Held:
    """Something a call's frame holds (weakly referenced by the test)."""

    last: weakref.ref[Held] | None = None


class Api(RpcTarget):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.kept: list[Any] = []
        self.release = asyncio.Event()

    def add(self, a: int, b: int) -> int:
        return a + b

    def getUser(self, i: int) -> dict[str, Any]:
        return {"id": i, "name": f"user{i}"}

    def greet(self, name: str) -> str:
        return f"hello, {name}"

    def makeCounter(self, i: int) -> Counter:
        return Counter(i)

    async def callMe(self, cb: Any, x: int) -> dict[str, Any]:
        return {"got": await cb(x)}

    async def keep(self, cb: Any) -> str:
        self.kept.append(cb.dup())
        return "kept"

    def record(self, name: str) -> str:
        self.calls.append(name)
        return name

    async def slow(self, ms: int, value: Any) -> Any:
        await asyncio.sleep(ms / 1000)
        return value

    async def block(self) -> str:
        self.calls.append("block started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.calls.append("block cancelled")
            raise
        return "never"

    def fail(self) -> None:
        raise RpcError("RangeError", "boom", {"code": 42})

    def crash(self) -> None:
        raise ValueError("python error")

    async def failHolding(self) -> None:
        held = Held()  # a local of the failing call's frame, as a large argument would be
        Held.last = weakref.ref(held)
        try:
            await asyncio.sleep(0)
            raise KeyError("inner")
        except KeyError:
            raise RpcError("Error", "failed while holding something") from None

    def listUsers(self) -> list[dict[str, Any]]:
        return [{"name": "ann"}, {"name": "bob"}]

    def echo(self, value: Any) -> Any:
        return value

    def size(self, items: list[Any]) -> int:
        return len(items)

    def nested(self) -> list[list[int]]:
        return [[1, 2], [3, 4]]


@pytest.fixture
async def pair() -> Pair:
    return Pair(None, Api())


async def test_simple_call_matches_the_reference_frames(pair: Pair) -> None:
    assert await pair.api.add(1, 2) == 3
    await pair.settle()
    assert pair.frames() == [
        ["push", ["pipeline", 0, ["add"], [1, 2]]],
        ["pull", 1],
        ["resolve", 1, 3],
        ["release", 1, 1],
    ]


async def test_pipelined_property_and_promise_argument_take_one_round_trip(pair: Pair) -> None:
    assert await pair.api.getUser(1).name == "user1"
    user = pair.api.getUser(7)
    assert await pair.api.greet(user.name) == "hello, user7"
    c2s = pair.frames("c2s")
    assert ["push", ["pipeline", 1, ["name"]]] in c2s
    assert ["push", ["pipeline", 0, ["greet"], [["pipeline", 3, ["name"]]]]] in c2s


async def test_calls_on_a_returned_target_getters_and_disposal(pair: Pair) -> None:
    before = Counter.disposed
    assert await pair.api.makeCounter(10).increment(1) == 11
    counter = await pair.api.makeCounter(5)
    with counter:
        assert await counter.increment(2) == 7
        assert await counter.value == 7
    await pair.settle()
    assert ["release", -1, 1] in pair.frames("c2s")
    assert Counter.disposed == before + 1


async def test_only_methods_and_properties_of_the_class_are_reachable(pair: Pair) -> None:
    counter = await pair.api.makeCounter(1)
    with pytest.raises(RpcError, match="instance property") as info:
        await counter.count
    assert info.value.name == "TypeError"
    with pytest.raises(RpcError, match="'_secret' is not a function"):
        await counter["_secret"]()
    with pytest.raises(RpcError, match="'__init__' is not a function"):
        await counter["__init__"](1)
    with pytest.raises(RpcError, match="'nope' is not a function"):
        await pair.api.nope(1)
    with pytest.raises(RpcError, match="'' is not a function"):
        await pair.api()


async def test_errors_keep_name_message_and_props(pair: Pair) -> None:
    with pytest.raises(RpcError) as info:
        await pair.api.fail()
    assert (info.value.name, info.value.message, info.value.props) == ("RangeError", "boom", {"code": 42})
    with pytest.raises(RpcError) as crash:
        await pair.api.crash()
    assert (crash.value.name, crash.value.message) == ("Error", "python error")
    await pair.settle()
    assert ["reject", 1, ["error", "RangeError", "boom", None, {"code": 42}]] in pair.frames("s2c")
    # a pipelined call on a failed promise fails with the same error
    with pytest.raises(RpcError, match="boom"):
        await pair.api.fail().anything


async def test_callbacks_are_called_and_their_stubs_released_when_the_call_returns(pair: Pair) -> None:
    assert await pair.api.callMe(lambda x: x * 10, 4) == {"got": 40}
    await pair.settle()
    s2c = pair.frames("s2c")
    assert ["push", ["pipeline", -1, [], [4]]] in s2c
    assert ["release", -1, 1] in s2c
    assert pair.client.stats()["exports"] == 1  # only the main object is left


async def test_a_dup_keeps_a_callback_past_the_call(pair: Pair) -> None:
    got: list[int] = []
    assert await pair.api.keep(got.append) == "kept"
    await pair.settle()
    assert pair.client.stats()["exports"] == 2  # the callback is still exported
    api: Api = pair.server._exports[0].future.result()
    await api.kept[0](5)
    assert got == [5]
    api.kept[0].dispose()
    await pair.settle()
    assert pair.client.stats()["exports"] == 1


async def test_calls_are_delivered_in_message_order_and_answered_in_completion_order(pair: Pair) -> None:
    results = await asyncio.gather(*(pair.api.record(str(i)).as_future() for i in range(50)))
    assert results == [str(i) for i in range(50)]
    api: Api = pair.server._exports[0].future.result()
    assert api.calls == [str(i) for i in range(50)]
    order: list[str] = []

    async def run(ms: int, name: str) -> None:
        order.append(await pair.api.slow(ms, name))

    await asyncio.gather(run(60, "slow"), run(5, "fast"))
    assert order == ["fast", "slow"]


async def test_calls_pipelined_on_one_promise_keep_their_order(pair: Pair) -> None:
    counter = pair.api.makeCounter(0)  # not awaited: every call is pipelined on the promise
    results = await asyncio.gather(*(counter.increment(1).as_future() for _ in range(20)))
    assert results == list(range(1, 21))


async def test_map_runs_on_the_server_with_captures(pair: Pair) -> None:
    assert await pair.api.listUsers().map(lambda u: u.name) == ["ann", "bob"]
    api = pair.api
    assert await pair.api.listUsers().map(lambda u: api.greet(u.name)) == ["hello, ann", "hello, bob"]
    assert await pair.api.echo(None).map(lambda u: u.name) is None
    assert await pair.api.getUser(3).map(lambda u: u.name) == "user3"
    pushes = [f for f in pair.frames("c2s") if f[0] == "push" and f[1][0] == "remap"]
    assert pushes[0][1][2:] == [[], [], [["pipeline", 0, ["name"]]]]
    assert pushes[1][1][3] == [["import", 0]]


async def test_tables_do_not_grow_over_10000_calls(pair: Pair) -> None:
    assert await pair.api.add(0, 0) == 0
    await pair.settle()
    before = (pair.client.stats(), pair.server.stats())
    for i in range(10_000):
        assert await pair.api.add(i, 1) == i + 1
    counter = await pair.api.makeCounter(0)
    for _ in range(100):
        await counter.increment(1)
    counter.dispose()
    for _ in range(100):
        await pair.api.callMe(lambda x: x, 1)
    await pair.settle()
    assert (pair.client.stats(), pair.server.stats()) == before


async def test_a_failed_call_waiting_for_its_pull_keeps_its_error_not_its_frames(pair: Pair) -> None:
    # the export of a call lives until the peer pulls and releases it; its error must not keep
    # the frames it was raised through, and with them the call's arguments and locals
    promise = pair.api.failHolding()
    await pair.settle()
    gc.collect()
    assert Held.last is not None and Held.last() is None
    with pytest.raises(RpcError, match="failed while holding something"):
        await promise


async def test_releasing_an_unfinished_call_cancels_it(pair: Pair) -> None:
    api: Api = pair.server._exports[0].future.result()
    promise = pair.api.block()
    await pair.settle()
    assert api.calls == ["block started"]
    promise.dispose()
    await pair.settle()
    assert api.calls == ["block started", "block cancelled"]
    with pytest.raises(RpcError, match="disposed"):
        await promise


async def test_the_end_of_a_session_fails_every_pending_call_at_once(pair: Pair) -> None:
    pending = pair.api.block().as_future()
    await pair.settle()
    pair.client.close("test")
    with pytest.raises(SessionClosed):
        await asyncio.wait_for(pending, 1)
    with pytest.raises(SessionClosed):
        await pair.api.add(1, 2)


async def test_disposing_the_main_stub_shuts_the_session_down(pair: Pair) -> None:
    pair.api.dispose()
    await pair.settle()
    assert pair.closes == [("client", 3000, "RPC session was shut down by disposing the main stub")]
    assert pair.client.closed is not None and pair.server.closed is not None


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[]",
        '["bogus"]',
        '{"push": 1}',
        '["push", ["pipeline", 99, ["x"], []]]',
        '["pull", 42]',
        '["release", 0, -1]',
        '["release", 77, 1]',
        '["push", ["nonsense"]]',
        '["push", ["bytes", "!!!"]]',
        '["push", ["readable", 5]]',
        '["push", ["export", 3]]',
        '["push", ' + "[[" * 300 + "1" + "]]" * 300 + "]",
        '["push", ["bigint", "' + "9" * 20000 + '"]]',
    ],
)
async def test_a_malformed_message_aborts_that_session_and_closes_it(message: str) -> None:
    other = Pair(None, Api())
    pair = Pair(None, Api())
    pair.server.receive(message)
    await pair.settle()
    aborts = [f for f in pair.frames("s2c") if f[0] == "abort"]
    assert len(aborts) == 1 and aborts[0][1][0] == "error"
    assert pair.closes and pair.closes[0][:2] == ("server", 3000)
    assert pair.server.closed is not None
    assert await other.api.add(1, 1) == 2  # nothing else is touched


async def test_a_message_over_the_size_limit_aborts() -> None:
    pair = Pair(None, Api(), limits=Limits(max_message_chars=1000))
    pair.server.receive('["push", ["pipeline", 0, ["echo"], ["' + "x" * 2000 + '"]]]')
    await pair.settle()
    assert pair.server.closed is not None
    assert "over the limit" in str(pair.server.closed)


async def test_unsupported_values_reject_the_call_not_the_session(pair: Pair) -> None:
    pair.server.receive('["push", ["pipeline", 0, ["echo"], [["headers", [["a", "b"]]]]]]')
    pair.server.receive('["pull", 1]')
    await pair.settle()
    rejected = [f for f in pair.frames("s2c") if f[0] == "reject"]
    assert rejected and "not supported" in rejected[0][2][2]
    assert pair.server.closed is None


async def test_an_abort_from_the_peer_ends_the_session(pair: Pair) -> None:
    pending = pair.api.block().as_future()
    await pair.settle()
    pair.client.receive('["abort", ["error", "Error", "going away"]]')
    with pytest.raises(SessionClosed, match="going away"):
        await asyncio.wait_for(pending, 1)


async def test_a_peer_that_never_releases_is_stopped_at_the_table_limit() -> None:
    pair = Pair(None, Api(), limits=Limits(max_exports=50))
    for _ in range(60):
        pair.server.receive('["push", ["pipeline", 0, ["add"], [1, 2]]]')
    await pair.settle()
    assert pair.server.closed is not None
    assert "without releasing" in str(pair.server.closed)


async def test_results_and_errors_are_freed_without_the_garbage_collector(pair: Pair) -> None:
    """No reference cycle holds a call's result, error or stream: each is freed as soon as it is
    released (a cycle kept 20 MB results alive until the collector's next full pass)."""
    import gc

    async def calls() -> None:
        assert await pair.api.add(1, 2) == 3
        assert await pair.api.getUser(1).name == "user1"
        assert await pair.api.callMe(lambda x: x * 2, 3) == {"got": 6}
        counter = await pair.api.makeCounter(1)
        assert await counter.increment(1) == 2
        counter.dispose()
        for failing in (pair.api.fail, pair.api.nope):
            with pytest.raises(RpcError):
                await failing()
        assert await pair.api.listUsers().map(lambda u: u.name) == ["ann", "bob"]
        await pair.settle()

    await calls()  # warm: caches and first-use objects
    gc.collect()
    gc.disable()
    try:
        await calls()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [o for o in gc.garbage if type(o).__module__.startswith(("capnweb", "asyncio", "_asyncio"))]
        assert ours == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_on_broken_tells_of_the_end_once(pair: Pair) -> None:
    seen: list[SessionClosed] = []
    pair.client.on_broken(seen.append)
    assert await pair.api.add(1, 1) == 2
    assert seen == []
    pair.client.close("test")
    pair.client.close("again")
    assert len(seen) == 1 and "test" in str(seen[0])
    late: list[SessionClosed] = []
    pair.client.on_broken(late.append)  # registered after the end: called at once
    assert late == [seen[0]]


def push_call(method: str, items: list[Any]) -> str:
    """A call on the main object with one array argument (of expressions)."""
    return json.dumps(["push", ["pipeline", 0, [method], [[items]]]])


async def test_a_peer_that_exports_too_much_here_is_stopped_at_the_import_limit() -> None:
    raw = Raw(Api(), Limits(max_imports=50))
    for _ in range(3):  # under the limit: each call's stubs are released when it returns
        raw.receive(push_call("size", [["export", -k] for k in range(1, 41)]))
        await raw.settle()
    assert raw.session.closed is None and len(raw.frames("release")) == 3 * 40
    other = Pair(None, Api(), limits=Limits(max_imports=50))
    raw.receive(push_call("size", [["export", -k] for k in range(100, 160)]))
    aborts = raw.frames("abort")
    assert len(aborts) == 1 and "hold 50 of its objects" in aborts[0][1][2]
    assert raw.closes and raw.closes[0][0] == 3000
    assert await other.api.add(1, 1) == 2  # nothing else is touched


@pytest.mark.parametrize("kind", ["promise", "pipeline"])
async def test_what_the_peer_makes_this_side_wait_for_is_bounded(kind: str) -> None:
    """Promises the peer never resolves, and pipelined gets on a call that never returns (no
    import at all), each cost a future here: 50 at once at most."""
    raw = Raw(Api(), Limits(max_pending=50))
    raw.receive(["push", ["pipeline", 0, ["block"], []]])  # export 1: never returns
    next_id = 1

    def waits(n: int) -> list[Any]:
        nonlocal next_id
        if kind == "pipeline":
            return [["pipeline", 1, ["x"]]] * n
        next_id += n
        return [["promise", -k] for k in range(next_id - n, next_id)]

    raw.receive(push_call("size", waits(40)))  # export 2: waits
    await raw.settle()
    raw.receive(["release", 2, 1])  # given up: what it waited for is freed
    await raw.settle()
    raw.receive(push_call("size", waits(40)))  # export 3: 40 again, within the limit
    await raw.settle()
    assert raw.session.closed is None
    raw.receive(push_call("size", waits(20)))  # 60
    assert raw.session.closed is not None
    aborts = raw.frames("abort")
    assert len(aborts) == 1 and "wait for 50 results" in aborts[0][1][2]


async def test_the_end_of_a_session_with_large_tables_is_spread_over_turns_of_the_loop() -> None:
    """Ending a session frees its tables a slice per turn of the loop, so other connections are
    served in between; every pending call still fails."""
    n = 4_000  # four times what it frees a turn (TEARDOWN_STEPS)
    raw = Raw(Api(), Limits())
    raw.receive(push_call("size", [["promise", -k] for k in range(1, n + 1)]))
    waiting = [entry.future for entry in raw.session._imports.values() if entry.future is not None]
    assert len(waiting) == n
    raw.session.close("test")
    at_close = sum(f.done() for f in waiting)
    await asyncio.sleep(0)
    after_a_turn = sum(f.done() for f in waiting)
    assert 0 < at_close < after_a_turn < n
    await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    assert all(isinstance(f.exception(), SessionClosed) for f in waiting)


async def test_a_map_evaluates_no_more_than_one_message_carries() -> None:
    """A mapper's instructions run once per element (and a map inside it once per element of
    that): together they may evaluate no more characters than one message may carry."""
    pair = Pair(None, Api(), limits=Limits(max_message_chars=1000))
    assert await pair.api.listUsers().map(lambda u: [u.name, "x" * 100]) == [["ann", "x" * 100], ["bob", "x" * 100]]
    with pytest.raises(RpcError, match=r"map\(\) refused") as refused:
        await pair.api.listUsers().map(lambda u: [u.name, "x" * 600])  # 2 x 650 characters
    assert refused.value.name == "RangeError"
    assert await pair.api.add(1, 2) == 3
    # each map alone is within the limit (2 x 222, then 2 x 202 for each outer element); not all
    raw = Raw(Api(), Limits(max_message_chars=1000))
    raw.receive(["push", ["pipeline", 0, ["nested"], []]])  # export 1: [[1, 2], [3, 4]]
    raw.receive(["push", ["remap", 1, [], [], [["remap", 0, [], [], ["y" * 198]]]]])
    raw.receive(["pull", 2])
    await raw.settle()
    rejects = [f for f in raw.frames("reject") if f[1] == 2]
    assert len(rejects) == 1 and "map() refused" in rejects[0][2][2]
    assert raw.session.closed is None
