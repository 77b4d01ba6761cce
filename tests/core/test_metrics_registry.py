"""sandbox_core.metrics: one registry per server (two in one process keep theirs), sources read
at scrape time (a failing one costs only its own values), nothing registered when off."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox_core.metrics import SESSIONS, TRANSPORT, Metrics, MetricSpec


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.exposition()
    families = text_string_to_metric_families(body.decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_two_servers_in_one_process_keep_their_own() -> None:
    one, two = Metrics(), Metrics()
    held = {"one": 3, "two": 5}
    one.source(SESSIONS, lambda: held["one"])
    two.source(SESSIONS, lambda: held["two"])  # the global registry would refuse a second one
    token = TRANSPORT.set("ws")
    try:
        one.observe_exec(0.5)
    finally:
        TRANSPORT.reset(token)
    two.observe_exec(0.25)  # no transport: an in-process call
    first, second = samples(one), samples(two)
    assert first[("sandbox_sessions", ())] == 3 and second[("sandbox_sessions", ())] == 5
    held["one"] = 4  # read when scraped
    assert samples(one)[("sandbox_sessions", ())] == 4
    assert first[("sandbox_exec_duration_seconds_count", (("transport", "ws"),))] == 1
    assert ("sandbox_exec_duration_seconds_count", (("transport", "ws"),)) not in second
    assert second[("sandbox_exec_duration_seconds_count", (("transport", "none"),))] == 1


def test_a_failing_source_costs_only_its_own_values() -> None:
    metrics = Metrics()
    metrics.source(SESSIONS, lambda: 1 / 0)
    watches = MetricSpec("sandbox_plugin_things", "gauge", "A plugin's own", ("kind",), "plugin")
    metrics.source(watches, lambda: [(("a",), 2.0)])
    found = samples(metrics)
    assert found[("sandbox_plugin_things", (("kind", "a"),))] == 2
    assert ("sandbox_sessions", ()) not in found


def test_a_source_names_a_known_metric_as_the_catalogue_does() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="catalogue"):
        metrics.source(MetricSpec("sandbox_sessions", "counter", "other"), lambda: 1)
    with pytest.raises(ValueError, match="sandbox_"):
        metrics.source(MetricSpec("sessions", "gauge", "no prefix"), lambda: 1)


def test_off_registers_and_counts_nothing() -> None:
    metrics = Metrics(enabled=False)
    metrics.source(SESSIONS, lambda: 1)
    metrics.observe_exec(1.0)
    metrics.byte_counter("http", "in")(10)
    assert metrics.exposition()[0] == b""
