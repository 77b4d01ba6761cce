"""Drives the ws app in process with a real registry and an ASGI ``send`` that starts failing;
prints what happened as one JSON line. Run by test_failed_send.py in a subprocess of its own:
the sessions service makes its process a child subreaper and, when it closes, ends every child
it did not start itself (which, in the test process, would include the test servers).

    python failed_send_harness.py WORKDIR
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from sandbox_core.plugins import Hooks, make_plugin_manager
from sandbox_core.registry import ServiceRegistry
from sandbox_core.testing.procs import Proc
from sandbox_core.transport import ServerContext
from sandbox_services.sessions import SessionSettings
from sandbox_transport_ws.server import make_server
from sandbox_transport_ws.settings import WsSettings


def request(rid: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    frame = {"type": "request", "id": rid, "method": "POST", "path": path, "body": body}
    return {"type": "websocket.receive", "text": json.dumps(frame)}


async def until(predicate: Any, within_s: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def main(workdir: Path) -> dict[str, Any]:
    specs = Hooks(make_plugin_manager()).services()
    names = ("sessions", "processes", "commands", "files")
    settings: dict[str, Any] = {"sessions": SessionSettings(kill_grace_ms=500)}
    registry = ServiceRegistry({n: specs[n] for n in names}, settings=settings, workspace=str(workdir))
    await registry.start()
    try:
        mount = make_server(ServerContext(registry, WsSettings(), None))
        incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sent: list[dict[str, Any]] = []
        broken = False

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if broken and message["type"] == "websocket.send":
                raise OSError("the socket failed")

        def frames() -> list[dict[str, Any]]:
            return [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]

        pidfile = workdir / "unary.pid"
        await incoming.put({"type": "websocket.connect"})
        app = asyncio.ensure_future(mount.app({"type": "websocket", "path": "/ws", "headers": []}, incoming.get, send))
        await incoming.put(request("s", "/api/execute/stream", {"command": "while :; do echo tick; sleep 0.05; done"}))
        command = f"sh -c 'echo $$ > {pidfile}; exec sleep 600'"
        await incoming.put(request("u", "/api/execute", {"command": command, "sessionId": "u"}))
        if not await until(lambda: len(frames()) >= 3 and pidfile.exists() and pidfile.read_text().strip()):
            return {"error": "the requests did not start", "frames": frames()}
        start = json.loads(frames()[0]["data"])
        sleeper = Proc.of(int(pidfile.read_text()))
        broken = True  # the stream's next tick fails to send
        await asyncio.wait_for(app, 10)  # the connection is over
        record: Any = await registry.call("processes", "get", {"id": start["processId"]})
        sleeper_ended = await until(lambda: not sleeper.alive())
        count = len(sent)
        await asyncio.sleep(0.3)
        return {
            "start": start["type"],
            "closes": [m for m in sent if m["type"] == "websocket.close"],
            "stream_status": record.process.status,
            "sleeper_ended": sleeper_ended,
            "sent_after_close": len(sent) - count,
        }
    finally:
        await registry.aclose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1])))))
