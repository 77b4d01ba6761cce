"""The server's Prometheus metrics: one :class:`Metrics` (its own ``CollectorRegistry``, never the
global default one, so two servers in one process keep theirs) per service registry.

Most values are read when ``/metrics`` is scraped, not kept up to date as things happen: a
service registers a *source* (:meth:`Metrics.source`), a function that reads its own state
(how many sessions it holds, its processes by state...), for one of the metrics of
:data:`CATALOGUE`. What can only be counted as it happens (an exec's duration, the bytes a
transport streams) is one cheap call on its path, a no-op when metrics are off
(``[server] metrics = false``). Transports say who they are with :data:`TRANSPORT` (set once
per request or connection), which labels the exec durations with the transport that ran them.

Counting is plain arithmetic on plain numbers: prometheus-client is imported, and its registry
built, at the first scrape, so a server nobody scrapes never loads it (about 2.5 MB).

Every metric the server exports is in :data:`CATALOGUE` (name, type, labels, help), from which
the reference page is generated; a source for a metric outside it is an error (a third-party
plugin passes its own :class:`MetricSpec`).
"""

from __future__ import annotations

import bisect
import contextvars
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = structlog.get_logger("sandbox.metrics")

#: The transport serving the current request (set by each transport, per request or connection);
#: ``none`` for a call made in-process.
TRANSPORT: contextvars.ContextVar[str] = contextvars.ContextVar("sandbox_transport", default="none")

#: A source's reading: a number (a metric without labels), or ``(label values, number)`` pairs.
Reading = float | Iterable[tuple[Sequence[str], float]]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its full name (``sandbox_`` prefix; a counter's ends in ``_total``), its type,
    its labels and its help text."""

    name: str
    kind: Literal["gauge", "counter", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    #: who reports it (for the reference page)
    source: str = "core"


SESSIONS = MetricSpec("sandbox_sessions", "gauge", "Sessions held (each a persistent shell)", source="sessions")
COMMANDS_RUNNING = MetricSpec(
    "sandbox_commands_running", "gauge", "Foreground commands running (execute and execute_stream)", source="commands"
)
PROCESSES = MetricSpec(
    "sandbox_processes",
    "gauge",
    "Process records held, by state (finished ones are kept up to a limit)",
    ("state",),
    source="processes",
)
EXEC_DURATION = MetricSpec(
    "sandbox_exec_duration_seconds",
    "histogram",
    "Duration of foreground commands (commands.execute), by the transport that ran them",
    ("transport",),
    source="commands",
)
STREAM_BYTES = MetricSpec(
    "sandbox_stream_bytes_total",
    "counter",
    "Bytes a transport received (direction=in: request bodies, WebSocket messages) and streamed out "
    "(direction=out: SSE events, WebSocket messages)",
    ("transport", "direction"),
    source="transports",
)
CONNECTIONS = MetricSpec(
    "sandbox_open_connections",
    "gauge",
    "Open connections by transport (ws: WebSockets on /ws and /api/ws, terminals not counted; rpc: WebSockets; "
    "http: requests in flight, an SSE stream while it is open)",
    ("transport",),
    source="transports",
)
CONTEXTS = MetricSpec(
    "sandbox_interpreter_contexts", "gauge", "Code interpreter contexts, by language", ("language",), "interpreter"
)
WATCHES = MetricSpec("sandbox_watches", "gauge", "File watches active", source="watch")
BACKUPS_RUNNING = MetricSpec(
    "sandbox_backups_running", "gauge", "Backups being made or restored", ("operation",), "backup"
)
BACKUPS = MetricSpec(
    "sandbox_backups_total",
    "counter",
    "Backups made or restored since the server started, by outcome (ok, failed)",
    ("operation", "outcome"),
    "backup",
)
BUILD_INFO = MetricSpec("sandbox_build_info", "gauge", "Always 1: the server's version", ("version",), "utils")

#: What prometheus-client's process collector reports (namespace ``sandbox``).
PROCESS_METRICS = (
    MetricSpec("sandbox_process_resident_memory_bytes", "gauge", "Resident memory size in bytes"),
    MetricSpec("sandbox_process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes"),
    MetricSpec("sandbox_process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds"),
    MetricSpec("sandbox_process_open_fds", "gauge", "Number of open file descriptors"),
    MetricSpec("sandbox_process_max_fds", "gauge", "Maximum number of open file descriptors"),
    MetricSpec("sandbox_process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds"),
)

#: Every metric the server exports (its own and the services'), as the reference lists them.
CATALOGUE: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        SESSIONS,
        COMMANDS_RUNNING,
        PROCESSES,
        EXEC_DURATION,
        STREAM_BYTES,
        CONNECTIONS,
        CONTEXTS,
        WATCHES,
        BACKUPS_RUNNING,
        BACKUPS,
        BUILD_INFO,
        *PROCESS_METRICS,
    )
}

#: Exec durations' buckets (seconds): from a quick command's few milliseconds to minutes.
EXEC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))


def _ignore(_: float) -> None:
    """What counting costs when metrics are off."""


class _Histogram:
    """One label set's exec durations: a count per bucket of :data:`EXEC_BUCKETS`, and their sum."""

    __slots__ = ("counts", "created", "sum")

    def __init__(self) -> None:
        self.counts = [0] * len(EXEC_BUCKETS)
        self.sum = 0.0
        self.created = time.time()  # exported as ``_created``, as prometheus-client's own do

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        self.counts[bisect.bisect_left(EXEC_BUCKETS, seconds)] += 1  # the first bucket with le >= seconds


class _Total:
    """One label set's counter."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float) -> None:
        self.value += amount


class Metrics:
    """One server's metrics. With ``enabled=False`` nothing is registered, counted or served."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._sources: dict[str, tuple[MetricSpec, list[Callable[[], Reading]]]] = {}
        self._exec: dict[str, _Histogram] = {}  # by transport
        self._bytes: dict[tuple[str, str], _Total] = {}  # by (transport, direction)
        self._registry: CollectorRegistry | None = None  # made at the first scrape

    def source(self, spec: MetricSpec, read: Callable[[], Reading]) -> None:
        """Report ``spec``'s value(s) by calling ``read`` at each scrape (several sources of one
        metric add their samples: one per transport, say). ``spec`` is one of :data:`CATALOGUE`
        or a plugin's own (named ``sandbox_...``, not one of the catalogue's)."""
        if not self.enabled:
            return
        known = CATALOGUE.get(spec.name)
        if known is not None and known != spec:
            raise ValueError(f"metric {spec.name} is in the catalogue with another type, labels or help")
        if not spec.name.startswith("sandbox_") or spec.kind == "histogram":
            raise ValueError(f"metric {spec.name}: a source reports a sandbox_ gauge or counter")
        self._sources.setdefault(spec.name, (spec, []))[1].append(read)

    def observe_exec(self, seconds: float) -> None:
        """One foreground command's duration, labelled with the current :data:`TRANSPORT`."""
        if not self.enabled:
            return
        transport = TRANSPORT.get()
        histogram = self._exec.get(transport)
        if histogram is None:
            histogram = self._exec[transport] = _Histogram()
        histogram.observe(seconds)

    def byte_counter(self, transport: str, direction: Literal["in", "out"]) -> Callable[[float], None]:
        """What a transport calls with each message's size (a no-op when metrics are off)."""
        if not self.enabled:
            return _ignore
        total = self._bytes.get((transport, direction))
        if total is None:
            total = self._bytes[(transport, direction)] = _Total()
        return total.inc

    def _collect(self) -> Iterator[Metric]:
        """Every family but the process collector's, read now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        from prometheus_client.samples import Sample

        for spec, reads in list(self._sources.values()):
            family: GaugeMetricFamily | CounterMetricFamily
            if spec.kind == "counter":
                family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            else:
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for read in reads:
                try:
                    reading = read()
                    if isinstance(reading, (int, float)):
                        family.add_metric([], reading)
                    else:
                        for values, value in reading:
                            family.add_metric(list(values), value)
                except Exception as exc:  # one source's failure leaves the others' values
                    log.warning("metrics.read_failed", metric=spec.name, error=repr(exc))
            yield family
        durations = HistogramMetricFamily(EXEC_DURATION.name, EXEC_DURATION.help, labels=EXEC_DURATION.labels)
        for transport, histogram in list(self._exec.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(EXEC_BUCKETS, histogram.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
            durations.add_metric([transport], buckets, histogram.sum)
            created = Sample(f"{EXEC_DURATION.name}_created", {"transport": transport}, histogram.created)
            durations.samples.append(created)
        yield durations
        moved = CounterMetricFamily(STREAM_BYTES.name, STREAM_BYTES.help, labels=STREAM_BYTES.labels)
        for (transport, direction), total in list(self._bytes.items()):
            moved.add_metric([transport, direction], total.value, created=total.created)
        yield moved

    def exposition(self) -> tuple[bytes, str]:
        """The current values in the Prometheus text format, and its content type."""
        from prometheus_client import CollectorRegistry, ProcessCollector
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.registry import Collector

        if not self.enabled:
            return b"", CONTENT_TYPE_LATEST
        if self._registry is None:
            collect = self._collect

            class Families(Collector):
                def collect(self) -> Iterator[Metric]:
                    return collect()

            registry = CollectorRegistry(auto_describe=False)
            registry.register(Families())
            ProcessCollector(namespace="sandbox", registry=registry)
            self._registry = registry
        return generate_latest(self._registry), CONTENT_TYPE_LATEST
