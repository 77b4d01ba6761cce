"""Many requests on one socket: each runs on its own, answers come back in completion order, each
to its own id, and at most ``max_in_flight`` run at once (the excess is answered 503)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from helpers_ws import RawWs, wait_for

from sandbox_core import Sandbox
from sandbox_core.errors import SandboxError
from sandbox_core.testing import ServerProcess

DEBUG = {"server": {"log_level": "debug"}, "services": {"sessions": {"kill_grace_ms": 500}}}


def connections(server: ServerProcess) -> int:
    return sum('"ws.connected"' in line for line in server.log)


async def test_a_thousand_concurrent_requests_on_one_socket_each_get_their_answer(raw: RawWs) -> None:
    n = 1000
    for i in range(n):  # all sent before any answer is read
        if i % 4 == 3:
            await raw.request(f"q{i}", "POST", "/api/exists", {"path": f"/tmp/wscc-missing-{i}"})
        else:
            await raw.request(f"q{i}", "POST", "/api/execute", {"command": f"echo {i}", "sessionId": f"wscc-{i % 20}"})
    answers: dict[str, dict[str, object]] = {}
    while len(answers) < n:
        frame = await raw.frame(60)
        assert frame["type"] == "response" and frame["status"] == 200, frame
        assert frame["id"] not in answers
        answers[frame["id"]] = frame["body"]  # type: ignore[assignment]
    for i in range(n):
        body = answers[f"q{i}"]
        if i % 4 == 3:
            assert body["exists"] is False
        else:
            assert (body["stdout"], body["exitCode"]) == (str(i), 0)


async def test_answers_come_in_completion_order(raw: RawWs) -> None:
    await raw.request("slow", "POST", "/api/execute", {"command": "sleep 0.5; echo slow", "sessionId": "wscc-slow"})
    await raw.request("fast", "POST", "/api/execute", {"command": "echo fast", "sessionId": "wscc-fast"})
    first, second = await raw.frame(), await raw.frame()
    assert (first["id"], first["body"]["stdout"]) == ("fast", "fast")
    assert (second["id"], second["body"]["stdout"]) == ("slow", "slow")


async def test_python_client_shares_one_socket_among_a_thousand_concurrent_calls(
    sandbox_server_factory: Callable[..., ServerProcess],
) -> None:
    server = sandbox_server_factory(config=DEBUG)
    async with Sandbox(server.url, transport="ws") as sb:
        # the first calls are concurrent: they share one connection attempt
        results = await asyncio.gather(
            *(sb.exec(f"echo {i}", session_id=f"wscc-py-{i % 16}") for i in range(1000)),
            *(sb.ping() for _ in range(50)),
        )
        for i, result in enumerate(results[:1000]):
            assert result.stdout == str(i)  # type: ignore[union-attr]
        assert await wait_for(lambda: connections(server) == 1)
        assert connections(server) == 1


async def test_requests_over_the_limit_are_answered_503(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory(config={**DEBUG, "transports": {"ws": {"max_in_flight": 2}}})
    ws = await RawWs.connect(server.url)
    try:
        for rid in ("a", "b"):
            await ws.request(rid, "POST", "/api/execute/stream", {"command": "echo up; sleep 600"})
        for _ in range(4):  # both are running: start and stdout events
            assert (await ws.frame())["type"] == "stream"
        refused = await ws.call("c", "GET", "/api/ping")
        assert (refused["type"], refused["status"], refused["body"]["code"]) == ("response", 503, "RESOURCE_BUSY")
        assert refused["body"]["context"] == {"limit": 2, "setting": "transports.ws.max_in_flight"}
        await ws.send({"type": "cancel", "id": "a"})  # one ends: room for another
        answer: dict[str, object] = {}
        for _ in range(50):
            answer = await ws.call("d", "GET", "/api/ping")
            if answer["status"] == 200:
                break
            await asyncio.sleep(0.05)
        assert answer["status"] == 200
    finally:
        await ws.aclose()
    # and the Python client raises the typed error
    async with Sandbox(server.url, transport="ws") as sb:
        streams = [sb.exec_stream("echo up; sleep 600") for _ in range(2)]
        for stream in streams:
            await stream.__anext__()
        try:
            await sb.ping()
        except SandboxError as err:
            assert (err.code, err.status) == ("RESOURCE_BUSY", 503)
        else:
            raise AssertionError("a third request was run")
        for stream in streams:
            await stream.aclose()
