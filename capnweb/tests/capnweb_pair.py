"""Two engine sessions joined in memory, each message delivered on a later loop turn (as a
socket would), with every message logged: the engine's tests need no network. And one session
fed raw messages (a peer that need not follow the protocol)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from capnweb import Limits, RpcSession, RpcStub


class Pair:
    def __init__(self, client_main: object | None, server_main: object | None, limits: Limits | None = None) -> None:
        self.log: list[tuple[str, str]] = []
        self.closes: list[tuple[str, int, str]] = []
        loop = asyncio.get_running_loop()

        def sender(name: str, other: str) -> Any:
            def send(text: str) -> None:
                self.log.append((name, text))
                loop.call_soon(self._deliver, other, text)

            return send

        def closer(name: str) -> Any:
            def close(code: int, reason: str) -> None:
                self.closes.append((name, code, reason))
                loop.call_soon(self._peer_gone, "server" if name == "client" else "client")

            return close

        self.sessions = {
            "client": RpcSession(client_main, send=sender("c2s", "server"), on_close=closer("client"), limits=limits),
            "server": RpcSession(server_main, send=sender("s2c", "client"), on_close=closer("server"), limits=limits),
        }

    def _deliver(self, to: str, text: str) -> None:
        self.sessions[to].receive(text)

    def _peer_gone(self, who: str) -> None:
        self.sessions[who].close("the peer closed the connection")

    @property
    def client(self) -> RpcSession:
        return self.sessions["client"]

    @property
    def server(self) -> RpcSession:
        return self.sessions["server"]

    @property
    def api(self) -> RpcStub:
        return self.client.remote_main()

    def frames(self, direction: str | None = None) -> list[Any]:
        return [msgspec.json.decode(t) for d, t in self.log if direction is None or d == direction]

    async def settle(self) -> None:
        """Let every message in flight arrive (and what it triggers)."""
        for _ in range(20):
            await asyncio.sleep(0)


class Raw:
    """A server session fed raw messages by the test, its messages to the peer kept."""

    def __init__(self, main: object, limits: Limits) -> None:
        self.sent: list[Any] = []
        self.closes: list[tuple[int, str]] = []
        self.session = RpcSession(
            main,
            send=lambda text: self.sent.append(msgspec.json.decode(text)),
            on_close=lambda code, reason: self.closes.append((code, reason)),
            limits=limits,
        )

    def receive(self, message: Any) -> None:
        self.session.receive(message if isinstance(message, str) else msgspec.json.encode(message).decode())

    def frames(self, kind: str) -> list[Any]:
        return [f for f in self.sent if f[0] == kind]

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)
