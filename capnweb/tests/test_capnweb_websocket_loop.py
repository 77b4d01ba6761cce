"""The engine's WebSocket loop (``serve_websocket``, a raw ASGI handler) when its side of the
socket fails: the reading loop and the writer end together.

The handler is driven through its ASGI ``receive``/``send`` directly (the engine is generic: any
ASGI server may run it, and some raise from ``send`` once the peer is gone where hypercorn does
not), the peer a script of protocol messages that then never says anything again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from capnweb import RpcSession, RpcTarget
from capnweb.websocket import serve_websocket


class Adder(RpcTarget):
    def add(self, a: int, b: int) -> int:
        return a + b


async def test_a_send_that_fails_ends_the_connection() -> None:
    script = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": '["push", ["pipeline", 0, ["add"], [1, 2]]]'},
        {"type": "websocket.receive", "text": '["pull", 1]'},
    ]
    sent: list[dict[str, Any]] = []
    silent = asyncio.Event()  # never set: the peer neither writes nor closes any more

    async def receive() -> dict[str, Any]:
        if script:
            return script.pop(0)
        await silent.wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] != "websocket.accept":
            raise OSError("the peer is gone")

    sessions: list[RpcSession] = []
    # before: the writer died alone and the handler waited for the silent peer for ever
    await asyncio.wait_for(
        serve_websocket({"type": "websocket"}, receive, send, main=Adder(), on_session=sessions.append), 10
    )
    assert [m["type"] for m in sent][:2] == ["websocket.accept", "websocket.send"]  # the answer it tried
    (session,) = sessions
    assert session.closed is not None
    assert "sending to the peer failed" in str(session.closed)
    assert "the peer is gone" in str(session.closed)
