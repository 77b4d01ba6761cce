"""Liveness (``GET /api/ping``) and readiness (``GET /api/ready``) as a load balancer or a
Kubernetes ``httpGet`` probe uses them: no token needed (and then nothing told but up or down),
readiness 503 from the moment the server begins to shut down while the work it has goes on."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from sandbox_core.edge import PROBES
from sandbox_core.testing import ServerProcess, assert_error

ServerFactory = Callable[..., ServerProcess]


async def test_ready_answers_while_the_server_serves(http: httpx.AsyncClient) -> None:
    ready = await http.get("/api/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["success"] is True and body["status"] == "ready"
    assert (await http.post("/api/ready")).status_code == 404  # a probe is a GET


def test_the_probes_are_a_short_explicit_list() -> None:
    assert {("GET", "/api/ping"), ("GET", "/api/ready")} == PROBES


async def test_probes_need_no_token_and_tell_nothing_more(sandbox_server_factory: ServerFactory) -> None:
    token = "pr0be-token-value"
    server = sandbox_server_factory(config={"server": {"token": token}})
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer wr0ng"}):
            ready = await http.get("/api/ready", headers=headers)
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            ping = await http.get("/api/ping", headers=headers)
            assert ping.status_code == 200
            # up, and nothing that tells one run of the server from another
            assert set(ping.json()) == {"success", "status", "message", "timestamp"}
            assert ping.json()["status"] == "healthy"
        # with the token, ping is the operation it always was
        assert "runtimeId" in (await http.get("/api/ping", headers=auth)).json()
        # everything else still needs it: another method on a probe's path, and the metrics
        assert_error(await http.post("/api/ping", json={}), 401, "UNAUTHORIZED")
        assert_error(await http.get("/api/version"), 401, "UNAUTHORIZED")
        assert_error(await http.get("/api/ready/x"), 401, "UNAUTHORIZED")
        assert_error(await http.post("/api/execute", json={"command": "echo hi"}), 401, "UNAUTHORIZED")
        # the Host check still applies to probes
        assert_error(await http.get("/api/ready", headers={"Host": "evil.example"}), 403, "HOST_NOT_ALLOWED")


async def test_not_ready_once_shutdown_begins_while_running_work_finishes(
    sandbox_server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = sandbox_server_factory(config={"server": {"drain_delay": 10.0, "shutdown_timeout": 10.0}})
    marker = tmp_path / "started"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.get("/api/ready")).status_code == 200
        running = asyncio.create_task(
            http.post("/api/execute", json={"command": f"touch {marker}; sleep 2; echo done"})
        )

        async def started() -> None:
            while True:
                if await asyncio.to_thread(marker.exists):
                    return
                await asyncio.sleep(0.05)

        async def not_ready() -> httpx.Response:  # readiness turns without waiting for anything to end
            while True:
                ready = await http.get("/api/ready")
                if ready.status_code != 200:
                    return ready
                await asyncio.sleep(0.05)

        await asyncio.wait_for(started(), 20)
        os.kill(server.pid, signal.SIGTERM)
        ready = await asyncio.wait_for(not_ready(), 20)
        assert not running.done()
        assert_error(ready, 503, "SHUTTING_DOWN")
        assert (await http.get("/api/ping")).status_code == 200  # still alive
        done = await running
        assert done.status_code == 200 and done.json()["stdout"] == "done"
    assert server.proc is not None
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
