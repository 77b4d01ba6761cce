"""The interpreter over a real server: the contract's snake_case bodies on the wire, SSE as it is
produced, and a client that disconnects interrupting its run."""

from __future__ import annotations

import json

import httpx

from sandbox_core import Sandbox
from sandbox_core.contract.models.interpreter import CodeCompleteEvent, CodeResultEvent, CodeStdoutEvent
from sandbox_core.testing import ServerProcess


async def test_interpreter_http_wire_shapes(interp_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=interp_server.url, timeout=60) as client:
        health = (await client.get("/api/interpreter/health")).json()
        assert (health["success"], health["status"]) == (True, "healthy")
        created = (await client.post("/api/contexts", json={"language": "python", "env_vars": {"W": "1"}})).json()
        assert created["success"] and created["language"] == "python" and created["contextId"]
        ctx = created["contextId"]
        listed = (await client.get("/api/contexts")).json()
        assert ctx in [c["id"] for c in listed["contexts"]]
        body = {"context_id": ctx, "code": "import os\nprint(os.environ['W'])\n6 * 7", "timeout_ms": 10_000}
        async with client.stream("POST", "/api/execute/code", json=body) as response:
            assert response.headers["content-type"] == "text/event-stream"
            text = (await response.aread()).decode()
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        assert events[1:] == [
            {"type": "stdout", "text": "1\n"},
            {"type": "result", "text": "42", "metadata": {}},
            {"type": "execution_complete", "execution_count": 1},
        ]
        # the registry's camelCase would be contextId: the contract's name is the one that counts
        bad = await client.post("/api/execute/code", json={"contextId": ctx, "code": "1"})
        assert bad.status_code == 400 and bad.json()["context"]["field"] == "context_id"
        missing = await client.post("/api/execute/code", json={"context_id": "nope", "code": "1"})
        assert missing.status_code == 404 and missing.json()["code"] == "CONTEXT_NOT_FOUND"
        deleted = (await client.delete(f"/api/contexts/{ctx}")).json()
        assert deleted == {"success": True, "contextId": ctx, "timestamp": deleted["timestamp"]}
        again = await client.delete(f"/api/contexts/{ctx}")
        assert again.status_code == 404 and again.json()["code"] == "CONTEXT_NOT_FOUND"


async def test_interpreter_http_client_leaving_interrupts_the_run(interp_server: ServerProcess) -> None:
    async with Sandbox(interp_server.url, transport="http") as sb:
        ctx = (await sb.interpreter.create_context()).context_id
        code = "import time\ncount = 0\nfor i in range(600):\n    count = i\n    print(i)\n    time.sleep(0.05)"
        stream = sb.interpreter.run_code(code, context_id=ctx)
        async for event in stream:
            if isinstance(event, CodeStdoutEvent):
                break
        await stream.aclose()  # the connection closes: the server interrupts the run
        events = [e async for e in sb.interpreter.run_code("count", context_id=ctx, timeout_ms=20_000)]
        assert isinstance(events[-1], CodeCompleteEvent), events
        value = next(e.text for e in events if isinstance(e, CodeResultEvent))
        assert value is not None and int(value) < 300
        await sb.interpreter.delete_context(ctx)
