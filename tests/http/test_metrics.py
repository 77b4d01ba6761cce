"""``GET /metrics``: the server's Prometheus metrics (:mod:`sandbox_core.metrics`) as a scraper
reads them, parsed with prometheus-client's own text parser; the values move with what the
server does, on every transport; behind the token when one is set; off with ``server.metrics``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sandbox_core import Sandbox
from sandbox_core.metrics import CATALOGUE, MetricSpec
from sandbox_core.testing import ServerProcess, assert_error

ServerFactory = Callable[..., ServerProcess]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def family_name(spec: MetricSpec) -> str:
    """The name the parser gives a metric's family (a counter's without ``_total``)."""
    return spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name


async def scrape(http: httpx.AsyncClient, **kwargs: object) -> tuple[set[str], Samples]:
    """The families' names and every sample (name and labels to value) of one scrape."""
    answer = await http.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(answer.text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return {f.name for f in families}, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_every_metric_is_there_and_parses(http: httpx.AsyncClient) -> None:
    names, samples = await scrape(http)
    assert {family_name(spec) for spec in CATALOGUE.values()} <= names
    assert all(name.startswith("sandbox_") for name in names)
    assert value(samples, "sandbox_process_resident_memory_bytes") > 0
    assert value(samples, "sandbox_process_open_fds") > 0
    assert [v for (n, _), v in samples.items() if n == "sandbox_build_info"] == [1.0]
    assert value(samples, "sandbox_open_connections", transport="http") >= 1  # this scrape


async def test_values_move_with_what_the_server_does(sandbox_server_factory: ServerFactory) -> None:
    server = sandbox_server_factory()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        await http.post("/api/execute", json={"command": "true"})  # the default session exists from here on
        _, before = await scrape(http)
        assert (await http.post("/api/session/create", json={"id": "counted"})).status_code == 200
        exec_ = await http.post("/api/execute", json={"command": "echo hi", "sessionId": "counted"})
        assert exec_.json()["stdout"] == "hi"
        started = await http.post("/api/process/start", json={"command": "sleep 60"})
        process_id = started.json()["processId"]
        streamed = await http.post("/api/execute/stream", json={"command": "echo streamed"})
        assert "streamed" in streamed.text
        _, after = await scrape(http)
        assert value(after, "sandbox_sessions") == value(before, "sandbox_sessions") + 1
        count = "sandbox_exec_duration_seconds_count"
        assert value(after, count, transport="http") == value(before, count, transport="http") + 1
        assert value(after, "sandbox_exec_duration_seconds_sum", transport="http") > 0
        assert (
            value(after, "sandbox_processes", state="running")
            == value(before, "sandbox_processes", state="running") + 1
        )
        out = "sandbox_stream_bytes_total"
        assert value(after, out, transport="http", direction="out") >= value(
            before, out, transport="http", direction="out"
        ) + len(streamed.content)
        assert value(after, out, transport="http", direction="in") > value(
            before, out, transport="http", direction="in"
        )
        # the other transports label their execs, connections and bytes with their names
        for transport in ("ws", "rpc"):
            async with Sandbox(server.url, transport=transport) as sb:
                assert (await sb.exec("echo hi")).stdout == "hi"
                _, during = await scrape(http)
                assert value(during, "sandbox_open_connections", transport=transport) == 1
            assert value(during, count, transport=transport) == value(after, count, transport=transport) + 1
            assert value(during, out, transport=transport, direction="in") > 0
            assert value(during, out, transport=transport, direction="out") > 0
        assert (await http.delete(f"/api/process/{process_id}")).status_code == 200
        assert (await http.post("/api/session/delete", json={"sessionId": "counted"})).status_code == 200
        _, end = await scrape(http)
        assert value(end, "sandbox_sessions") == value(before, "sandbox_sessions")
        assert value(end, "sandbox_processes", state="running") == value(before, "sandbox_processes", state="running")
        assert value(end, "sandbox_commands_running") == 0


async def test_contexts_and_backups_are_counted(sandbox_server_factory: ServerFactory, tmp_path: Path) -> None:
    server = sandbox_server_factory(config={"services": {"backup": {"archive_root": str(tmp_path)}}})
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        _, before = await scrape(http)
        created = await http.post("/api/contexts", json={"language": "python"})
        assert created.status_code == 200, created.text
        made = await http.post(
            "/api/backup/create", json={"dir": server.workspace, "archivePath": str(tmp_path / "metrics.sqsh")}
        )
        _, after = await scrape(http)
        contexts = "sandbox_interpreter_contexts"
        assert value(after, contexts, language="python") == value(before, contexts, language="python") + 1
        outcome = "ok" if made.status_code == 200 else "failed"  # a machine without mksquashfs fails it
        backups = "sandbox_backups_total"
        assert value(after, backups, operation="create", outcome=outcome) == 1
        assert value(after, "sandbox_backups_running", operation="create") == 0
        assert (await http.delete(f"/api/contexts/{created.json()['contextId']}")).status_code == 200
        _, end = await scrape(http)
        assert value(end, contexts, language="python") == value(before, contexts, language="python")


async def test_metrics_need_the_token(sandbox_server_factory: ServerFactory) -> None:
    token = "m3trics-token"
    server = sandbox_server_factory(config={"server": {"token": token}})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer wr0ng"}):
            assert_error(await http.get("/metrics", headers=headers), 401, "UNAUTHORIZED")
        names, _ = await scrape(http, headers={"Authorization": f"Bearer {token}"})
        assert "sandbox_sessions" in names


async def test_metrics_can_be_turned_off(sandbox_server_factory: ServerFactory) -> None:
    server = sandbox_server_factory(config={"server": {"metrics": False}})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        body = assert_error(await http.get("/metrics"), 404, "UNKNOWN_ERROR")
        assert "server.metrics" in body["message"]
        assert (await http.post("/api/execute", json={"command": "echo hi"})).json()["stdout"] == "hi"
