"""The http wire of the processes service."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx

from sandbox_core.testing import ServerProcess, assert_error


async def sse(client: httpx.AsyncClient, method: str, path: str, **kwargs: object) -> list[dict[str, object]]:
    async with client.stream(method, path, **kwargs) as response:  # type: ignore[arg-type]
        assert response.status_code == 200
        raw = (await response.aread()).decode()
    return [json.loads(frame[len("data: ") :]) for frame in raw.split("\n\n") if frame.startswith("data: ")]


async def test_execute_background_is_a_process_start(http: httpx.AsyncClient) -> None:
    body = (await http.post("/api/execute", json={"command": "echo bg", "background": True})).json()
    assert body["success"] is True and body["processId"].startswith("proc_") and isinstance(body["pid"], int)
    events = await sse(http, "GET", f"/api/process/{body['processId']}/stream")
    assert [e["type"] for e in events] == ["process_info", "stdout", "exit"]
    assert events[0]["processId"] == body["processId"] and events[0]["command"] == "echo bg"
    assert events[1]["data"] == "bg\n" and events[1]["processId"] == body["processId"]
    assert events[2]["exitCode"] == 0


async def test_process_routes_shapes(http: httpx.AsyncClient) -> None:
    name = f"r-{uuid.uuid4().hex[:8]}"
    start = (await http.post("/api/process/start", json={"command": "printf x", "processId": name})).json()
    assert start["processId"] == name and start["command"] == "printf x"
    await sse(http, "GET", f"/api/process/{name}/stream")
    got = (await http.get(f"/api/process/{name}")).json()
    assert got["success"] is True and got["process"]["id"] == name and got["process"]["status"] == "completed"
    assert got["process"]["exitCode"] == 0 and got["process"]["endTime"].endswith("Z")
    logs = (await http.get(f"/api/process/{name}/logs")).json()
    assert (logs["processId"], logs["stdout"], logs["stderr"]) == (name, "x", "")
    listed = (await http.get("/api/process/list", params={"status": "completed"})).json()
    assert name in [p["id"] for p in listed["processes"]]
    resumed = await sse(http, "GET", f"/api/process/{name}/stream", params={"offset": "1"})
    assert [e["type"] for e in resumed] == ["process_info", "exit"]
    killed = await http.delete(f"/api/process/{name}")
    assert killed.status_code == 404 and killed.json()["code"] == "COMMAND_NOT_FOUND"
    all_killed = (await http.delete("/api/process/kill-all")).json()
    assert all_killed["success"] is True and isinstance(all_killed["cleanedCount"], int)


async def test_process_route_errors(http: httpx.AsyncClient) -> None:
    missing = await http.get("/api/process/nope-nope")
    assert missing.status_code == 404 and missing.json()["code"] == "PROCESS_NOT_FOUND"
    bad_status = await http.get("/api/process/list", params={"status": "sleeping"})
    assert bad_status.status_code == 400 and bad_status.json()["context"]["field"] == "status"
    bad_offset = await http.get("/api/process/x/stream", params={"offset": "-1"})
    assert bad_offset.status_code == 400 and bad_offset.json()["context"]["field"] == "offset"
    bad_id = await http.post("/api/process/start", json={"command": "true", "processId": "../../etc"})
    assert bad_id.status_code == 400 and bad_id.json()["context"]["field"] == "processId"


def test_finished_records_are_bounded(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory(config={"services": {"processes": {"max_finished": 3}}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(6):
            client.post("/api/process/start", json={"command": "true", "processId": f"f{i}"})
            with client.stream("GET", f"/api/process/f{i}/stream") as response:
                response.read()
        ids = [p["id"] for p in client.get("/api/process/list").json()["processes"]]
        assert ids == ["f3", "f4", "f5"]
        assert client.get("/api/process/f0").status_code == 404


async def test_runtime_id_and_a_process_of_an_earlier_runtime(http: httpx.AsyncClient) -> None:
    """Ours: ``runtimeId`` in ping and version; a generated id of another runtime is a 404 saying so."""
    runtime = (await http.get("/api/ping")).json()["runtimeId"]
    assert (await http.get("/api/version")).json()["runtimeId"] == runtime
    started = (await http.post("/api/process/start", json={"command": "true"})).json()
    assert started["processId"].split("_")[2] == runtime
    stale = f"proc_1_{'0' * 16}_abcdef"
    body = assert_error(await http.get(f"/api/process/{stale}"), 404, "PROCESS_NOT_FOUND")
    assert body["context"] == {"processId": stale, "runtimeId": runtime, "processRuntimeId": "0" * 16}
    assert "belongs to an earlier runtime" in body["message"]
    body = assert_error(await http.delete(f"/api/process/{stale}"), 404, "PROCESS_NOT_FOUND")
    assert body["context"]["runtimeId"] == runtime


async def test_idempotency_key_on_the_wire(http: httpx.AsyncClient) -> None:
    key = f"k-{uuid.uuid4().hex}"
    request = {"command": "echo $RANDOM$RANDOM", "sessionId": "__DISABLE_SESSION__", "idempotencyKey": key}
    first = (await http.post("/api/execute", json=request)).json()
    assert (await http.post("/api/execute", json=request)).json() == first
    body = assert_error(
        await http.post("/api/execute", json={**request, "command": "true"}), 409, "IDEMPOTENCY_KEY_REUSED"
    )
    assert body["context"]["idempotencyKey"] == key and key in body["message"]
    for route in ("/api/execute", "/api/process/start", "/api/execute/stream"):
        for bad in ("", "k" * 129, "k" * 10_240, 7):
            body = assert_error(
                await http.post(route, json={"command": "true", "idempotencyKey": bad}), 400, "VALIDATION_FAILED"
            )
            assert body["context"]["field"] == "idempotencyKey", (route, body)
