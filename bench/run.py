"""Benchmark of the sandbox runtime against its performance targets (each figure carries its own).

    python bench/run.py [--transport NAME ...] [--json PATH] [--quick]

For each transport (default: every installed one) this starts one real ``sandbox serve``
(:class:`sandbox_core.testing.ServerProcess`) on loopback, opens one client, runs every
registered figure against it, stops the server, and prints a table::

    figure | transport | measured | target | upstream | ok?

A missed target is reported, not fatal (exit 0). A figure that raises is reported as an
error and makes the run exit 1.

Adding a figure: write ``async def fig(ctx: Ctx) -> dict[str, float]`` and decorate it with
``@figure(Metric(...), ...)``; it returns one value per declared metric key. Figures run in
registration order, except those marked ``at_start=True``, which run first on the freshly
started server after one ping (idle RSS), then those marked ``before_load=True`` (after one
warm-up exec).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pybase64

from sandbox_core import Sandbox
from sandbox_core.contract.models import StdoutEvent
from sandbox_core.contract.models.files import FileChunkEvent, FileErrorEvent
from sandbox_core.contract.models.processes import LogGapEvent, LogStdoutEvent
from sandbox_core.server import answer_lifespan
from sandbox_core.testing import ServerProcess, installed_transports

# registry ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One row of the table: what is measured, its target and the upstream figure."""

    key: str
    label: str
    unit: str
    target: float | Mapping[str, float] | None = None  # a number, or per transport with "*" as default
    better: Literal["lower", "higher"] = "lower"
    upstream: float | None = None  # the upstream Bun runtime on the same machine (http)

    def target_for(self, transport: str) -> float | None:
        if isinstance(self.target, Mapping):
            return self.target.get(transport, self.target.get("*"))
        return self.target

    def ok(self, value: float, transport: str) -> bool | None:
        target = self.target_for(transport)
        if target is None:
            return None
        return value <= target if self.better == "lower" else value >= target


@dataclass
class Figure:
    name: str
    metrics: tuple[Metric, ...]
    fn: Callable[[Ctx], Awaitable[Mapping[str, float]]]
    before_load: bool = False
    at_start: bool = False  # on the fresh server, after one ping and before the warm-up exec
    transports: tuple[str, ...] | None = None  # None: every transport
    skip_transports: tuple[str, ...] = ()  # not for these (a figure of their own measures it)

    def runs_on(self, transport: str) -> bool:
        if self.transports is None:  # every transport with a client of ours (sandboxd: only its own figures)
            return transport not in CLIENTLESS_TRANSPORTS and transport not in self.skip_transports
        return transport in self.transports and transport not in self.skip_transports


FIGURES: list[Figure] = []
#: the transports whose server has no client of ours (``sandbox_core.Sandbox`` cannot speak them)
CLIENTLESS_TRANSPORTS = ("sandboxd",)


def figure(
    *metrics: Metric,
    before_load: bool = False,
    at_start: bool = False,
    transports: tuple[str, ...] | None = None,
    skip_transports: tuple[str, ...] = (),
) -> Callable[[Callable[[Ctx], Awaitable[Mapping[str, float]]]], Callable[[Ctx], Awaitable[Mapping[str, float]]]]:
    """Register a figure: an async function returning ``{metric.key: value}``."""

    def register(
        fn: Callable[[Ctx], Awaitable[Mapping[str, float]]],
    ) -> Callable[[Ctx], Awaitable[Mapping[str, float]]]:
        FIGURES.append(
            Figure(
                fn.__name__,
                metrics,
                fn,
                before_load=before_load,
                at_start=at_start,
                transports=transports,
                skip_transports=skip_transports,
            )
        )
        return fn

    return register


@dataclass
class Ctx:
    """What a figure gets: the running server, an open client on it, and the iteration scale."""

    transport: str
    server: ServerProcess
    sb: Sandbox
    quick: bool
    notes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def n(self, full: int, minimum: int = 1) -> int:
        """An iteration count: ``full`` normally, about a tenth of it with --quick."""
        return max(minimum, full // 10) if self.quick else full

    def client(self) -> Sandbox:
        """A new, unopened client for the same server (for figures that need their own connection)."""
        return Sandbox(self.url, transport=self.transport)

    def note(self, text: str) -> None:
        self.notes.append(text)


# helpers ----------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MB (10^6 bytes), from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def check(result: Any, expect_stdout: str | None = None) -> None:
    if result.exit_code != 0:
        raise RuntimeError(f"exec failed: exit {result.exit_code}, stderr {result.stderr[:200]!r}")
    if expect_stdout is not None and result.stdout != expect_stdout:
        raise RuntimeError(f"unexpected stdout {result.stdout[:200]!r}, expected {expect_stdout!r}")


# floor of the session exec latency ----------------------------------------------------------------

#: What the floor app answers to ``POST /api/execute``: shaped like a real answer to a session ``echo hi``.
FLOOR_EXEC_BODY = (
    b'{"success":true,"exitCode":0,"stdout":"hi","stderr":"","command":"echo hi","duration":0.1,'
    b'"timestamp":"2025-01-01T00:00:00.000Z","sessionId":"bench-echo"}'
)
FLOOR_EXEC_HEADERS = [  # those of the http transport's JSON answers
    (b"content-type", b"application/json"),
    (b"content-length", str(len(FLOOR_EXEC_BODY)).encode()),
    (b"access-control-allow-origin", b"*"),
]


class FloorBash:
    """The floor server's persistent bash (started on first use): ``round_trip()`` writes
    ``echo hi; printf 'END\\n'`` to its script pipe and waits, on the event loop, for stdout to
    end with the marker; no wrapper, no redirections, no completion file."""

    COMMAND = b"echo hi; printf 'END\\n'\n"

    def __init__(self) -> None:
        self.script_w = -1
        self.out = -1
        self.received = bytearray()
        self.waiter: asyncio.Future[None] | None = None

    def start(self) -> None:
        script_r, self.script_w = os.pipe()
        proc = subprocess.Popen(  # ends at EOF on its script, when the floor server exits
            ["bash", "--norc", "--noprofile", f"/dev/fd/{script_r}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            pass_fds=(script_r,),
        )
        os.close(script_r)
        assert proc.stdout is not None
        self.out = os.dup(proc.stdout.fileno())
        proc.stdout.close()
        os.set_blocking(self.out, False)
        asyncio.get_running_loop().add_reader(self.out, self._on_output)

    def _on_output(self) -> None:
        try:
            chunk = os.read(self.out, 65536)
        except BlockingIOError:
            return
        if not chunk:
            raise RuntimeError("the floor server's bash exited")
        self.received += chunk
        if self.received.endswith(b"END\n") and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def round_trip(self) -> bytes:
        if self.script_w < 0:
            self.start()
        self.received.clear()
        self.waiter = asyncio.get_running_loop().create_future()
        os.write(self.script_w, self.COMMAND)
        await self.waiter
        return bytes(self.received)


#: Set in the floor server by ``--floor-server bash``: each exec answer waits for a bash round trip.
FLOOR_BASH: FloorBash | None = None

#: The floor's websocket answer to any request frame: a ``response`` frame carrying FLOOR_EXEC_BODY,
#: split around the request's id.
FLOOR_WS_HEAD = '{"type":"response","id":"'
FLOOR_WS_TAIL = '","status":200,"body":' + FLOOR_EXEC_BODY.decode() + ',"done":true}'


#: The rpc floor answers Cap'n Web ``["pull",N]`` messages with ``["resolve",N,FLOOR_EXEC_BODY]``
#: (pushes and releases need no answer).
FLOOR_RPC_PULL = '["pull",'
FLOOR_RPC_TAIL = "," + FLOOR_EXEC_BODY.decode() + "]"


async def floor_ws(receive: Any, send: Any) -> None:
    """A bare websocket echo: each text frame is answered with the fixed ``response`` frame under
    the frame's id (cut out of the text, no JSON decoding), after a bare bash round trip where
    FLOOR_BASH is set; frames are answered one at a time, in order. A Cap'n Web message (the rpc
    floor) is answered the same way when it is a ``pull``, with the fixed result under its id,
    and not at all otherwise."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text") or ""
        if text.startswith("["):  # Cap'n Web (the rpc floor): each pull gets the fixed result
            if text.startswith(FLOOR_RPC_PULL):
                if FLOOR_BASH is not None and await FLOOR_BASH.round_trip() != b"hi\nEND\n":
                    raise RuntimeError("the floor server's bash answered something else than hi")
                await send({"type": "websocket.send", "text": '["resolve",' + text[8:-1] + FLOOR_RPC_TAIL})
            continue
        start = text.index('"id":"') + 6
        rid = text[start : text.index('"', start)]
        if FLOOR_BASH is not None and await FLOOR_BASH.round_trip() != b"hi\nEND\n":
            raise RuntimeError("the floor server's bash answered something else than hi")
        await send({"type": "websocket.send", "text": FLOOR_WS_HEAD + rid + FLOOR_WS_TAIL})


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app: reads the request body, answers ``POST /api/execute`` with
    FLOOR_EXEC_BODY (after a bare bash round trip where FLOOR_BASH is set) and anything else
    with 404; no routing table, no JSON, no services. A websocket (any path) is the bare echo
    of :func:`floor_ws`."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await floor_ws(receive, send)
        return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    if scope["method"] == "POST" and scope["path"] == "/api/execute":
        if FLOOR_BASH is not None and await FLOOR_BASH.round_trip() != b"hi\nEND\n":
            raise RuntimeError("the floor server's bash answered something else than hi")
        await send({"type": "http.response.start", "status": 200, "headers": FLOOR_EXEC_HEADERS})
        await send({"type": "http.response.body", "body": FLOOR_EXEC_BODY})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def floor_server_main(mode: str) -> int:
    """``run.py --floor-server MODE``: serve floor_app on 127.0.0.1, a free port, with the
    hypercorn settings of ``sandbox_core.server.serve()`` on the same loop as ``sandbox serve``
    (uvloop when installed); print the URL on stdout; stop on SIGTERM or when stdin reaches EOF.
    MODE ``bash``: each exec answer waits for a bare bash round trip (FloorBash); ``app``: not."""
    global FLOOR_BASH
    if mode == "grpc":
        return floor_grpc_main()
    if mode == "bash":
        FLOOR_BASH = FloorBash()
    import logging

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # as sandbox_core.server.bind_socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    host, port = sock.getsockname()[:2]
    config = Config()  # as sandbox_core.server.serve()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 5.0  # [server] shutdown_timeout's default
    config.keep_alive_timeout = 75
    config.keep_alive_max_requests = 10_000_000
    config.include_server_header = False
    config.websocket_max_message_size = 64 * 1024 * 1024

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stdin = sys.stdin.fileno()

        def stdin_closed() -> None:  # the bench closed our stdin (or died): stop
            loop.remove_reader(stdin)
            stop.set()

        loop.add_reader(stdin, stdin_closed)
        print(f"http://{host}:{port}", flush=True)
        await serve(floor_app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0


#: The bare app of the idle-RSS floor, run as ``python -c``: hypercorn on uvloop answering every
#: request with an empty 200, importing nothing of the sandbox (run.py itself imports the client).
BARE_APP = """
import asyncio, socket, sys
import uvloop
from hypercorn.asyncio import serve
from hypercorn.config import Config

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})

async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    host, port = sock.getsockname()
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    print(f"http://{host}:{port}", flush=True)
    await serve(app, config, shutdown_trigger=stop.wait)

uvloop.run(main())
"""


class FloorServer:
    """``run.py --floor-server MODE`` in a subprocess, for the duration of a ``with`` block
    (``bare``: :data:`BARE_APP` instead)."""

    def __init__(self, mode: Literal["app", "bash", "bare", "grpc"], startup_timeout: float = 30.0) -> None:
        self.mode = mode
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> FloorServer:
        argv = ["-c", BARE_APP] if self.mode == "bare" else [os.path.abspath(__file__), "--floor-server", self.mode]
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # its stderr is ours: a failure shows in the bench's log
        )
        try:
            assert self.proc.stdout is not None
            line = b""
            with selectors.DefaultSelector() as selector:
                selector.register(self.proc.stdout, selectors.EVENT_READ)
                deadline = time.monotonic() + self.startup_timeout
                while not line.endswith(b"\n"):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not selector.select(remaining):
                        raise RuntimeError(f"the floor server reported no URL within {self.startup_timeout} s")
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        raise RuntimeError(f"the floor server exited before listening (exit {self.proc.wait(5)})")
                    line += chunk
            self.url = line.decode().strip()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()  # EOF: it shuts down
        wait_or_kill(proc, 10)
        proc.stdout.close()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_or_kill(proc: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait ``seconds`` for ``proc`` to end by itself, then kill it."""
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class BareBash:
    """One persistent bash for the duration of a ``with`` block, read as the sessions service
    starts a session's shell (``bash --norc --noprofile /dev/fd/N``, stdin /dev/null, stdout a
    pipe). See round_trips."""

    COMMAND, EXPECTED = b"echo hi; printf 'END\\n'\n", b"hi\nEND\n"

    def __enter__(self) -> BareBash:
        script_r, self.script_w = os.pipe()
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile", f"/dev/fd/{script_r}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            pass_fds=(script_r,),
        )
        os.close(script_r)
        return self

    def round_trips(self, n: int) -> list[float]:
        """ms of each of ``n`` round trips: write ``echo hi; printf 'END\\n'`` and read stdout
        until the marker, with blocking ``os.write``/``os.read`` (no event loop in between)."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.fileno()
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(self.script_w, self.COMMAND)
            received = b""
            while not received.endswith(b"END\n"):
                chunk = os.read(out, 65536)
                if not chunk:
                    raise RuntimeError(f"bash exited (exit {self.proc.wait(5)}) after {received!r}")
                received += chunk
            samples.append((time.perf_counter() - t0) * 1000)
            if received != self.EXPECTED:
                raise RuntimeError(f"bash answered {received!r}, expected {self.EXPECTED!r}")
        return samples

    def __exit__(self, *exc: Any) -> None:
        os.close(self.script_w)  # EOF on its script: bash exits
        wait_or_kill(self.proc, 5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# figures ----------------------------------------------------------------------------------------


@figure(
    Metric("idle_rss", "idle server RSS (fresh, after one ping)", "MB", target=30, upstream=260),
    Metric("idle_rss_floor", "floor: bare hypercorn+uvloop app's idle RSS (after one request)", "MB"),
    Metric("idle_rss_ratio", "idle server RSS over that floor", "x", target=1.25),
    at_start=True,
)
async def idle_rss(ctx: Ctx) -> dict[str, float]:
    """The freshly started server, idle after answering one ping (no session shell started yet),
    and the same of a bare hypercorn+uvloop app (:data:`BARE_APP`, which imports nothing of ours)."""
    ours = rss_mb(ctx.pid)
    with FloorServer("bare") as floor:
        assert floor.proc is not None
        async with httpx.AsyncClient(base_url=floor.url, timeout=30) as client:
            (await client.get("/api/ping")).raise_for_status()
        bare = rss_mb(floor.proc.pid)
    return {"idle_rss": ours, "idle_rss_floor": bare, "idle_rss_ratio": ours / bare}


@figure(
    Metric("rss_after_big", "RSS 3 s after big requests, over idle before them", "MB", target=20),
    Metric("rss_big_peak", "RSS right after them, over idle", "MB"),
    at_start=True,
)
async def rss_after_big(ctx: Ctx) -> dict[str, float]:
    """Whether the memory of large requests comes back: on the nearly fresh server, after one small
    request of each kind (the sessions and code paths exist) and a short idle, a 16 MiB base64
    write and read and an exec of 20 MB of stdout, twice; then RSS 3 s later."""
    sb, sid = ctx.sb, "bench-memory"
    path = f"/tmp/bench-memory-{os.getpid()}.bin"
    await sb.create_session(sid)
    check(await sb.exec("echo warm", session_id=sid), "warm")
    await sb.files.write(path, b"warm")
    await sb.files.read(path, encoding="base64")
    await asyncio.sleep(1.5)
    idle = rss_mb(ctx.pid)
    data = os.urandom(16 * 1024 * 1024)
    for _ in range(2):
        await sb.files.write(path, data)
        read = await sb.files.read(path, encoding="base64")
        if read.size != len(data):
            raise RuntimeError(f"read {read.size} bytes of {len(data)}")
        del read
        ran = await sb.exec("head -c 20000000 /dev/zero | tr '\\0' x", session_id=sid)
        check(ran)
        del ran
    peak = rss_mb(ctx.pid)
    await asyncio.sleep(3.0)
    after = rss_mb(ctx.pid)
    await sb.files.delete(path)
    await sb.delete_session(sid)
    return {"rss_after_big": after - idle, "rss_big_peak": peak - idle}


async def timed_execs(sb: Sandbox, sid: str, n: int) -> list[float]:
    """ms of each of ``n`` sequential ``sb.exec("echo hi")`` calls."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        result = await sb.exec("echo hi", session_id=sid)
        samples.append((time.perf_counter() - t0) * 1000)
        check(result, "hi")
    return samples


async def exec_and_floors(ctx: Ctx, floor_transport: str) -> dict[str, list[float]]:
    """Samples (ms) of session exec ``echo hi`` on the server (``real``), on the floor server doing
    a bare bash round trip per request (``joint``), on the floor server answering at once
    (``app``), and of a bare bash round trip in a blocking loop (``bare``), interleaved in rounds;
    the floor servers are timed with a client of ``floor_transport`` (the same client class and
    settings as the real figure's when that is the figure's transport)."""
    sb, sid = ctx.sb, "bench-echo"
    await sb.create_session(sid)
    warmup, timed, rounds = ctx.n(200), ctx.n(2000), 10
    per = max(timed // rounds, 1)
    real: list[float] = []
    joint: list[float] = []
    app: list[float] = []
    bare: list[float] = []
    with FloorServer("bash") as joint_floor, FloorServer("app") as app_floor, BareBash() as bash:
        async with (
            Sandbox(joint_floor.url, transport=floor_transport) as joint_sb,
            Sandbox(app_floor.url, transport=floor_transport) as app_sb,
        ):
            for client in (sb, joint_sb, app_sb):
                await timed_execs(client, sid, warmup)
            bash.round_trips(warmup)
            for _ in range(rounds):
                real += await timed_execs(sb, sid, per)
                joint += await timed_execs(joint_sb, sid, per)
                app += await timed_execs(app_sb, sid, per)
                bare += bash.round_trips(per)
    return {"real": real, "joint": joint, "app": app, "bare": bare}


@figure(
    Metric("exec_echo_median", "session exec `echo hi`, median", "ms", target={"http": 2.0, "*": 1.5}, upstream=52),
    Metric("exec_echo_p99", "session exec `echo hi`, p99", "ms"),
    Metric("floor_joint_median", "floor: bare http app doing a bare bash `echo hi` round trip, median", "ms"),
    Metric("exec_echo_over_floor", "session exec `echo hi`, median over that floor", "x", target=1.5),
    Metric("floor_http_median", "bare http app answering exec, median", "ms"),
    Metric("floor_bash_median", "bare bash `echo hi` round trip on its own, median", "ms"),
    Metric("exec_echo_over_parts", "session exec `echo hi`, median over the sum of those two", "x"),
    skip_transports=("ws", "rpc"),  # exec_echo_ws/_rpc: there the floor is a bare websocket echo
)
async def exec_echo(ctx: Ctx) -> dict[str, float]:
    """Session exec against its floor, measured in the same run, interleaved in rounds so that
    all see the same machine: the floor is a bare hypercorn+uvloop app that, per request, does a
    bare bash round trip on the event loop and answers a fixed body (FloorServer ``bash``), timed
    with the same client. For reference, the parts on their own too: the bare app answering at
    once (``app``) and a bare bash in a tight blocking loop (BareBash); their sum is lower than
    the floor, since a bash round trip inside a server answering HTTP costs more than in a loop."""
    if ctx.transport != "http":
        ctx.note(
            f"exec_echo [{ctx.transport}]: the floor is the bare http app timed with the http client "
            f"(no {ctx.transport} floor yet)"
        )
    samples = await exec_and_floors(ctx, "http")
    real, joint, app, bare = samples["real"], samples["joint"], samples["app"], samples["bare"]
    median = statistics.median(real)
    floor = statistics.median(joint)
    parts = statistics.median(app) + statistics.median(bare)
    return {
        "exec_echo_median": median,
        "exec_echo_p99": percentile(real, 99),
        "floor_joint_median": floor,
        "exec_echo_over_floor": median / floor,
        "floor_http_median": statistics.median(app),
        "floor_bash_median": statistics.median(bare),
        "exec_echo_over_parts": median / parts,
    }


@figure(
    Metric("exec_metrics_on", "session exec `echo hi`, metrics on (the default), median", "ms"),
    Metric("exec_metrics_off", "session exec `echo hi`, a server with `metrics = false`, median", "ms"),
    Metric("exec_metrics_on_over_off", "session exec `echo hi`, metrics on over off", "x", target=1.05),
)
async def exec_metrics(ctx: Ctx) -> dict[str, float]:
    """What the metrics cost an exec: the same calls on two fresh servers of this transport, one
    with metrics on (the default) and one with ``[server] metrics = false``, each through a fresh
    client of the same class, interleaved in rounds so that both see the same machine (as
    :func:`exec_and_floors`), each first in half of them."""
    sid = "bench-metrics"
    warmup, timed, rounds = ctx.n(200), ctx.n(2000), 10
    per = max(timed // rounds, 1)
    samples: dict[bool, list[float]] = {True: [], False: []}
    with (
        ServerProcess(transports=[ctx.transport]) as on_server,
        ServerProcess(transports=[ctx.transport], config={"server": {"metrics": False}}) as off_server,
    ):
        async with (
            Sandbox(on_server.url, transport=ctx.transport) as on_sb,
            Sandbox(off_server.url, transport=ctx.transport) as off_sb,
        ):
            clients = {True: on_sb, False: off_sb}
            for client in clients.values():
                await client.create_session(sid)
                await timed_execs(client, sid, warmup)
            for i in range(rounds):  # each goes first in half the rounds
                for metrics_on in (True, False) if i % 2 == 0 else (False, True):
                    samples[metrics_on] += await timed_execs(clients[metrics_on], sid, per)
    on, off = statistics.median(samples[True]), statistics.median(samples[False])
    return {"exec_metrics_on": on, "exec_metrics_off": off, "exec_metrics_on_over_off": on / off}


def ws_floor_metrics(transport: str) -> tuple[Metric, ...]:
    """The metrics of :func:`exec_over_ws_floor` for ``transport``."""
    t = transport
    return (
        Metric(f"exec_{t}_median", f"session exec `echo hi` over {t}, median", "ms", target=1.5),
        Metric(f"exec_{t}_p99", f"session exec `echo hi` over {t}, p99", "ms"),
        Metric(
            f"floor_{t}_joint_median", "floor: bare websocket echo doing a bare bash `echo hi` round trip, median", "ms"
        ),
        Metric(f"exec_{t}_over_floor", f"session exec `echo hi` over {t}, median over that floor", "x", target=1.5),
        Metric(f"floor_{t}_median", "bare websocket echo answering exec, median", "ms"),
        Metric(f"floor_{t}_bash_median", f"bare bash `echo hi` round trip on its own ({t} run), median", "ms"),
        Metric(f"exec_{t}_over_parts", f"session exec `echo hi` over {t}, median over the sum of those two", "x"),
    )


async def exec_over_ws_floor(ctx: Ctx, transport: str) -> dict[str, float]:
    """exec_echo's samples against the websocket floor, as the metrics ``exec_<transport>_*``."""
    samples = await exec_and_floors(ctx, transport)
    real, joint, app, bare = samples["real"], samples["joint"], samples["app"], samples["bare"]
    median = statistics.median(real)
    floor = statistics.median(joint)
    parts = statistics.median(app) + statistics.median(bare)
    return {
        f"exec_{transport}_median": median,
        f"exec_{transport}_p99": percentile(real, 99),
        f"floor_{transport}_joint_median": floor,
        f"exec_{transport}_over_floor": median / floor,
        f"floor_{transport}_median": statistics.median(app),
        f"floor_{transport}_bash_median": statistics.median(bare),
        f"exec_{transport}_over_parts": median / parts,
    }


@figure(*ws_floor_metrics("ws"), transports=("ws",))
async def exec_echo_ws(ctx: Ctx) -> dict[str, float]:
    """exec_echo over ws: the floor is the same bare hypercorn+uvloop server answering a websocket
    instead (each request frame gets a fixed ``response`` frame under its id, cut out of the text,
    after a bare bash round trip), timed with the same client (``Sandbox(..., transport="ws")``,
    one socket per client)."""
    return await exec_over_ws_floor(ctx, "ws")


@figure(*ws_floor_metrics("rpc"), transports=("rpc",))
async def exec_echo_rpc(ctx: Ctx) -> dict[str, float]:
    """exec_echo over rpc: the floor is the bare hypercorn+uvloop websocket answering each Cap'n
    Web ``pull`` with a fixed ``resolve`` (after a bare bash round trip), timed with the same
    client (``Sandbox(..., transport="rpc")``: push, pull, release per exec, one socket)."""
    return await exec_over_ws_floor(ctx, "rpc")


@figure(
    Metric(
        "concurrent_1000", "1,000 concurrent pings on one connection: answered", "calls", target=1000, better="higher"
    ),
    Metric("concurrent_1000_s", "time for all of them", "s"),
    transports=("ws", "rpc"),
)
async def concurrent_1000(ctx: Ctx) -> dict[str, float]:
    """1,000 calls started at once on the client's one connection; every answer is checked."""
    t0 = time.perf_counter()
    results = await asyncio.gather(*(ctx.sb.ping() for _ in range(1000)), return_exceptions=True)
    elapsed = time.perf_counter() - t0
    answered = sum(1 for r in results if r == "healthy")
    if answered != 1000:
        failures = [r for r in results if r != "healthy"][:3]
        ctx.note(f"concurrent_1000 [{ctx.transport}]: {1000 - answered} failed, e.g. {failures!r}")
    return {"concurrent_1000": answered, "concurrent_1000_s": elapsed}


@figure(
    Metric("rpc_stream_in", "256 MiB streamed in (files.writeFileStream)", "MiB/s", target=200, better="higher"),
    Metric("rpc_stream_in_rss", "server RSS growth during it", "MB", target=64),
    Metric(
        "rpc_stream_out", "256 MiB streamed out (files.readFile, encoding none)", "MiB/s", target=200, better="higher"
    ),
    Metric("rpc_stream_out_rss", "server RSS growth during it", "MB", target=64),
    transports=("rpc",),
    before_load=True,
)
async def rpc_streams(ctx: Ctx) -> dict[str, float]:
    """A 256 MiB file through Cap'n Web streams, straight on the engine's WebSocket client:
    written with ``files.writeFileStream`` from 1 MiB chunks, read back with ``files.readFile``
    (``encoding: 'none'``: a ReadableStream of raw bytes); both checked byte for byte (sha256)."""
    import hashlib

    from capnweb import ReadableStream, WebSocketClient

    size = (32 if ctx.quick else 256) * 1024 * 1024
    chunk = os.urandom(1024 * 1024)
    path = f"/tmp/bench-rpc-{os.getpid()}.bin"
    url = ctx.url.replace("http://", "ws://", 1).rstrip("/") + "/rpc"
    client = WebSocketClient(url)
    api = await client.connect()
    try:

        async def source() -> Any:
            for _ in range(size // len(chunk)):
                yield chunk

        expected = hashlib.sha256(chunk * (size // len(chunk))).hexdigest()
        async with RssSampler(ctx.pid) as rss_in:
            t0 = time.perf_counter()
            written = await api.files.writeFileStream(path, ReadableStream(source()), "bench-files")
            elapsed_in = time.perf_counter() - t0
        if written["bytesWritten"] != size:
            raise RuntimeError(f"writeFileStream wrote {written['bytesWritten']} bytes of {size}")
        digest = hashlib.sha256()
        received = 0
        async with RssSampler(ctx.pid) as rss_out:
            t0 = time.perf_counter()
            result = await api.files.readFile(path, "bench-files", {"encoding": "none"})
            async for data in result["content"]:
                digest.update(data)
                received += len(data)
            elapsed_out = time.perf_counter() - t0
        if received != size or digest.hexdigest() != expected:
            raise RuntimeError(f"readFile returned {received} bytes of {size}, or other bytes")
        await api.files.deleteFile(path, "bench-files")
    finally:
        await client.aclose()
    mib = size / 1024 / 1024
    return {
        "rpc_stream_in": mib / elapsed_in,
        "rpc_stream_in_rss": rss_in.growth,
        "rpc_stream_out": mib / elapsed_out,
        "rpc_stream_out_rss": rss_out.growth,
    }


@figure(
    Metric(
        "exec_8_sessions",
        "400 exec over 8 sessions, concurrent (median of 5)",
        "ops/s",
        target=2000,
        better="higher",
        upstream=175,
    )
)
async def exec_8_sessions(ctx: Ctx) -> dict[str, float]:
    sb, sessions, per = ctx.sb, 8, ctx.n(50)
    ids = [f"bench-conc-{i}" for i in range(sessions)]
    for sid in ids:
        await sb.create_session(sid)
        check(await sb.exec("echo hi", session_id=sid), "hi")  # the shell is up before timing

    async def worker(sid: str) -> None:
        for _ in range(per):
            check(await sb.exec("echo hi", session_id=sid), "hi")

    rates = []
    for _ in range(1 if ctx.quick else 5):  # one batch is ~0.2 s: take the median of five
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(sid) for sid in ids))
        rates.append(sessions * per / (time.perf_counter() - t0))
    return {"exec_8_sessions": statistics.median(rates)}


@figure(
    Metric("stream_first_byte", "exec stream, first stdout byte, median", "ms", target=5.0),
    Metric("stream_no_stdout", "exec streams that ended without stdout", "runs", target=0),
)
async def stream_first_byte(ctx: Ctx) -> dict[str, float]:
    sb, sid = ctx.sb, "bench-stream"
    await sb.create_session(sid)

    async def once() -> float | None:
        """ms to the first StdoutEvent; None when the stream completed without one."""
        first: float | None = None
        t0 = time.perf_counter()
        async for event in sb.exec_stream("echo hi", session_id=sid):
            if first is None and isinstance(event, StdoutEvent):
                first = (time.perf_counter() - t0) * 1000
                if event.data != "hi\n":
                    raise RuntimeError(f"unexpected stdout event data {event.data!r}")
        # drained to the end (not timed), so the session is idle for the next run
        return first

    runs = [await once() for _ in range(ctx.n(20) + ctx.n(200))][ctx.n(20) :]  # warm-up dropped
    samples = [r for r in runs if r is not None]
    missing = len(runs) - len(samples)
    if missing:
        ctx.note(
            f"stream_first_byte [{ctx.transport}]: {missing} of {len(runs)} `echo hi` streams "
            "completed without a stdout event (left out of the median)"
        )
    if len(samples) < len(runs) / 2:
        raise RuntimeError(f"{missing} of {len(runs)} exec streams ended without a stdout event")
    return {"stream_first_byte": statistics.median(samples), "stream_no_stdout": missing}


@figure(
    Metric("stdin_cat", "stdin through `cat` (1 MiB writes, output to its ring)", "MiB/s", target=50, better="higher"),
    Metric("stdin_cat_rss", "server RSS growth during it", "MB", target=32),
)
async def stdin_cat(ctx: Ctx) -> dict[str, float]:
    """``processes.start(argv=["cat"], stdin="pipe")``, then 1 MiB ``write_stdin`` calls (bytes:
    base64 on the wire) and EOF; timed until ``cat`` has exited, its output length checked."""
    sb, size, chunk = ctx.sb, (16 if ctx.quick else 128) * 1024 * 1024, os.urandom(1024 * 1024)
    name = f"bench-stdin-{os.getpid()}-{time.monotonic_ns()}"
    await sb.processes.start(argv=["cat"], stdin="pipe", process_id=name, session_id="bench-stdin")
    async with RssSampler(ctx.pid) as rss:
        t0 = time.perf_counter()
        for _ in range(size // len(chunk)):
            await sb.processes.write_stdin(name, chunk)
        await sb.processes.close_stdin(name)
        end = 0
        async for event in sb.processes.stream_logs(name, offset=size - 1):
            if isinstance(event, LogStdoutEvent):
                end = event.offset
        elapsed = time.perf_counter() - t0
    if end != size:
        raise RuntimeError(f"cat wrote {end} bytes of {size}")
    return {"stdin_cat": size / 1024 / 1024 / elapsed, "stdin_cat_rss": rss.growth}


@figure(Metric("argv_first_byte", "argv process (`echo hi`, no shell), first output byte, median", "ms", target=10))
async def argv_first_byte(ctx: Ctx) -> dict[str, float]:
    """``processes.start(argv=["echo", "hi"])`` in a session, then its log stream to the first
    stdout event: median of 100 after 10 warm-up runs."""
    sb, sid = ctx.sb, "bench-argv"
    await sb.create_session(sid)

    async def once(i: int) -> float:
        t0 = time.perf_counter()
        started = await sb.processes.start(argv=["echo", "hi"], session_id=sid, process_id=f"bench-argv-{i}")
        async for event in sb.processes.stream_logs(started.process_id):
            if isinstance(event, LogStdoutEvent):
                elapsed = (time.perf_counter() - t0) * 1000
                if event.data != "hi\n":
                    raise RuntimeError(f"unexpected stdout {event.data!r}")
                return elapsed
        raise RuntimeError("the argv process ended without stdout")

    runs = [await once(i) for i in range(ctx.n(10) + ctx.n(100))][ctx.n(10) :]
    return {"argv_first_byte": statistics.median(runs)}


@figure(Metric("exec_20mb", "exec producing 20 MB of stdout, median", "s", target=0.5, upstream=1.16))
async def exec_20mb(ctx: Ctx) -> dict[str, float]:
    sb, sid, size = ctx.sb, "bench-20mb", 20_000_000
    await sb.create_session(sid)
    command = f"head -c {size} /dev/zero | tr '\\0' x"
    samples = []
    for _ in range(1 if ctx.quick else 3):
        t0 = time.perf_counter()
        result = await sb.exec(command, session_id=sid)
        samples.append(time.perf_counter() - t0)
        check(result)
        if len(result.stdout) != size:
            raise RuntimeError(f"stdout has {len(result.stdout)} characters, expected {size}")
        del result
    return {"exec_20mb": statistics.median(samples)}


class RssSampler:
    """Samples a process's RSS every few ms while running; reports the peak growth in MB."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid, self.every = pid, every
        self.base = rss_mb(pid)
        self.peak = self.base
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb(self.pid))
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, rss_mb(self.pid))

    @property
    def growth(self) -> float:
        return self.peak - self.base


@figure(
    Metric("b64_write", "16 MiB base64 file write", "MiB/s", target=None, better="higher", upstream=140),
    Metric("b64_read", "16 MiB base64 file read", "MiB/s", target=None, better="higher", upstream=281),
)
async def file_base64(ctx: Ctx) -> dict[str, float]:
    sb, size = ctx.sb, 16 * 1024 * 1024
    data = os.urandom(size)
    path = f"/tmp/bench-b64-{os.getpid()}.bin"
    writes, reads = [], []
    for _ in range(1 if ctx.quick else 3):
        t0 = time.perf_counter()
        await sb.files.write(path, data)
        writes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = await sb.files.read(path, encoding="base64")
        got = pybase64.b64decode(result.content)
        reads.append(time.perf_counter() - t0)
        if got != data:
            raise RuntimeError("16 MiB base64 round trip differs")
    await sb.files.delete(path)
    mib = size / 1024 / 1024
    return {"b64_write": mib / statistics.median(writes), "b64_read": mib / statistics.median(reads)}


@figure(
    Metric("read_stream", "256 MiB file read stream", "MiB/s", target=200, better="higher"),
    Metric("read_stream_rss", "server RSS growth during it", "MB", target=64),
    before_load=True,
)
async def file_read_stream(ctx: Ctx) -> dict[str, float]:
    sb, size = ctx.sb, (32 if ctx.quick else 256) * 1024 * 1024
    path = f"/tmp/bench-stream-{os.getpid()}.bin"
    check(await sb.exec(f"head -c {size} /dev/urandom > {path}", session_id="bench-files"))
    received = 0
    async with RssSampler(ctx.pid) as rss:
        t0 = time.perf_counter()
        async for event in sb.files.read_stream(path):
            if isinstance(event, FileChunkEvent):
                received += len(pybase64.b64decode(event.data))
            elif isinstance(event, FileErrorEvent):
                raise RuntimeError(f"read stream error: {event.error}")
        elapsed = time.perf_counter() - t0
    await sb.files.delete(path)
    if received != size:
        raise RuntimeError(f"read stream delivered {received} bytes of {size}")
    return {"read_stream": size / 1024 / 1024 / elapsed, "read_stream_rss": rss.growth}


@figure(
    Metric("tail_1gb", "tail of a 1 GB file (`tailLines: 200`), median", "ms", target=10),
    Metric("tail_1gb_rss", "server RSS growth during the tails", "MB", target=20),
)
async def tail_1gb(ctx: Ctx) -> dict[str, float]:
    """``files.read(path, tail_lines=200)`` of a 1 GB log (sparse: 999 MB of hole, then 1 MB of
    100-byte lines, so no GB is written; read as UTF-8, since its head sniffs as binary); median
    of 50 after 5 warm-up reads, content checked."""
    sb, sid = ctx.sb, "bench-files"
    path = f"/tmp/bench-tail-{os.getpid()}.log"
    line = "x" * 99 + "\n"
    check(
        await sb.exec(f"truncate -s 999000000 {path} && yes '{'x' * 99}' | head -c 1000000 >> {path}", session_id=sid)
    )
    try:
        for _ in range(5):
            await sb.files.read(path, tail_lines=200, encoding="utf-8")
        times: list[float] = []
        async with RssSampler(ctx.pid) as rss:
            for _ in range(ctx.n(50, 10)):
                t0 = time.perf_counter()
                read = await sb.files.read(path, tail_lines=200, encoding="utf-8")
                times.append(time.perf_counter() - t0)
                if read.content != line * 200 or read.total_size != 1_000_000_000:
                    raise RuntimeError(f"tail read {read.length} bytes of {read.total_size}")
    finally:
        await sb.files.delete(path)
    return {"tail_1gb": statistics.median(times) * 1000, "tail_1gb_rss": rss.growth}


@figure(
    Metric("slow_reader_rss", "RSS growth, slow reader of an endless printer (3 s)", "MB", target=64), before_load=True
)
async def slow_reader(ctx: Ctx) -> dict[str, float]:
    sb = ctx.sb
    name = f"bench-endless-{os.getpid()}"
    await sb.processes.start("yes 'the quick brown fox jumps over the lazy dog'", process_id=name)
    seen = gaps = 0
    deadline = time.monotonic() + (1.0 if ctx.quick else 3.0)
    async with RssSampler(ctx.pid) as rss:
        async for event in sb.processes.stream_logs(name):
            if isinstance(event, LogGapEvent):
                gaps += 1
            elif isinstance(event, LogStdoutEvent):
                seen += len(event.data)
            await asyncio.sleep(0.02)  # the slow reader
            if time.monotonic() > deadline:
                break
    await sb.processes.kill(name)
    if not seen:
        raise RuntimeError("the slow reader saw no output")
    ctx.note(f"slow_reader [{ctx.transport}]: read {seen} bytes in {gaps} gap-separated runs")
    return {"slow_reader_rss": rss.growth}


# sandboxd (gRPC process.v1 and the REST files API on listeners of their own) ---------------------
#
# The sandboxd transport has no client of ours: its figures talk to its listeners (gRPC with
# grpc.aio, REST with httpx), found in the server's ``server.started`` line. Its server also
# serves http, so the runner's client and warm-up exec work as for the other transports.

EXECUTE = "/process.v1.ProcessService/Execute"
START = "/process.v1.ProcessService/Start"
ECHO_ARGV = ["/bin/sh", "-c", "echo hi"]  # what the SDK's commands.run("echo hi") sends


def floor_grpc_main() -> int:
    """``run.py --floor-server grpc``: a bare grpc.aio server on 127.0.0.1, a free port, on the
    loop ``sandbox serve`` uses (uvloop when installed), whose ``Execute`` spawns the request's
    argv with asyncio's subprocess (stdin /dev/null, stdout and stderr pipes, a process group of
    its own as sandboxd's), waits for it and answers its output: what sandboxd itself does per
    call, and nothing else (no token check, no limits, no services). Prints its target; stops on
    SIGTERM or when stdin reaches EOF.

    gRPC's fork support is off here: uvloop's subprocess forks (libuv), and gRPC's fork
    handlers then crashed children with SIGSEGV here (exit -11 within ten calls); the server spawns with
    subprocess.Popen, not through libuv, and showed no such crash."""
    os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    import grpc

    from sandbox_transport_sandboxd.pb import sandboxd_process_v1_pb2 as pb

    async def execute(request: Any, context: Any) -> Any:
        argv = list(request.config.command)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        out, err = await proc.communicate()
        return pb.ExecuteResponse(exit_code=proc.returncode or 0, stdout=out, stderr=err)

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            execute,
            request_deserializer=pb.ExecuteRequest.FromString,
            response_serializer=pb.ExecuteResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("process.v1.ProcessService", {"Execute": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stdin = sys.stdin.fileno()

        def stdin_closed() -> None:
            loop.remove_reader(stdin)
            stop.set()

        loop.add_reader(stdin, stdin_closed)
        print(f"127.0.0.1:{port}", flush=True)
        await stop.wait()
        await server.stop(1)

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0


def sandboxd_listener(ctx: Ctx, name: str) -> str:
    """``host:port`` of the server's gRPC listener (``sandboxd-grpc``), the URL of its REST one."""
    url = ctx.server.listeners[name]
    return url.removeprefix("grpc://")


def execute_callable(channel: Any) -> Any:
    from sandbox_transport_sandboxd.pb import sandboxd_process_v1_pb2 as pb

    return channel.unary_unary(
        EXECUTE,
        request_serializer=pb.ExecuteRequest.SerializeToString,
        response_deserializer=pb.ExecuteResponse.FromString,
    )


async def timed_executes(execute: Any, n: int, what: str) -> list[float]:
    """ms of each of ``n`` sequential ``Execute(argv ECHO_ARGV)`` calls, the answer checked."""
    from sandbox_transport_sandboxd.pb import sandboxd_process_v1_pb2 as pb

    request = pb.ExecuteRequest(config=pb.ProcessConfig(command=ECHO_ARGV))
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = await execute(request, timeout=30)
        samples.append((time.perf_counter() - t0) * 1000)
        if (response.exit_code, response.stdout) != (0, b"hi\n"):
            answer = f"exit {response.exit_code}, stdout {response.stdout!r}, stderr {response.stderr[-300:]!r}"
            raise RuntimeError(f"{what}: Execute answered {answer}")
    return samples


@figure(
    Metric("sbd_execute_median", "sandboxd gRPC Execute `echo hi` (argv /bin/sh -c), median", "ms"),
    Metric("sbd_execute_p99", "sandboxd gRPC Execute `echo hi`, p99", "ms"),
    Metric("sbd_execute_floor", "floor: bare grpc.aio Execute spawning the argv (asyncio subprocess), median", "ms"),
    Metric("sbd_execute_over_floor", "sandboxd gRPC Execute `echo hi`, median over that floor", "x", target=1.5),
    transports=("sandboxd",),
)
async def sandboxd_execute(ctx: Ctx) -> dict[str, float]:
    """Execute against its floor (FloorServer ``grpc``), interleaved in rounds on one grpc.aio
    channel each, as exec_echo does."""
    import grpc

    warmup, timed, rounds = ctx.n(100), ctx.n(1000), 10
    per = max(timed // rounds, 1)
    real: list[float] = []
    floor: list[float] = []
    with FloorServer("grpc") as floor_server:
        async with (
            grpc.aio.insecure_channel(sandboxd_listener(ctx, "sandboxd-grpc")) as real_channel,
            grpc.aio.insecure_channel(floor_server.url) as floor_channel,
        ):
            real_execute, floor_execute = execute_callable(real_channel), execute_callable(floor_channel)
            await timed_executes(real_execute, warmup, "sandboxd")
            await timed_executes(floor_execute, warmup, "the floor")
            for _ in range(rounds):
                real += await timed_executes(real_execute, per, "sandboxd")
                floor += await timed_executes(floor_execute, per, "the floor")
    median, floor_median = statistics.median(real), statistics.median(floor)
    return {
        "sbd_execute_median": median,
        "sbd_execute_p99": percentile(real, 99),
        "sbd_execute_floor": floor_median,
        "sbd_execute_over_floor": median / floor_median,
    }


@figure(
    Metric("sbd_start_first_byte", "sandboxd gRPC Start `echo hi` (argv), first stdout message, median", "ms"),
    transports=("sandboxd",),
)
async def sandboxd_start_first_byte(ctx: Ctx) -> dict[str, float]:
    """From calling ``Start(argv ["echo", "hi"])`` to its first ``stdout`` message; median of 100
    after 10 warm-up runs; each stream is read to its exit (untimed)."""
    import grpc

    from sandbox_transport_sandboxd.pb import sandboxd_process_v1_pb2 as pb

    request = pb.StartRequest(config=pb.ProcessConfig(command=["echo", "hi"]))
    warmup, timed = ctx.n(10), ctx.n(100)
    samples: list[float] = []
    async with grpc.aio.insecure_channel(sandboxd_listener(ctx, "sandboxd-grpc")) as channel:
        start = channel.unary_stream(
            START,
            request_serializer=pb.StartRequest.SerializeToString,
            response_deserializer=pb.StartResponse.FromString,
        )
        for i in range(warmup + timed):
            t0 = time.perf_counter()
            first: float | None = None
            out = b""
            exit_code = None
            async for event in start(request, timeout=30):
                kind = event.WhichOneof("event")
                if kind == "stdout":
                    if first is None:
                        first = (time.perf_counter() - t0) * 1000
                    out += event.stdout
                elif kind == "exit":
                    exit_code = event.exit.exit_code
            if (exit_code, out) != (0, b"hi\n") or first is None:
                raise RuntimeError(f"Start answered exit {exit_code}, stdout {out!r}")
            if i >= warmup:
                samples.append(first)
    return {"sbd_start_first_byte": statistics.median(samples)}


@figure(
    Metric("sbd_put_256", "sandboxd REST PUT /v1/files, 256 MiB", "MiB/s", better="higher"),
    Metric("sbd_put_256_rss", "sandboxd REST PUT 256 MiB, server RSS growth", "MB", target=64),
    Metric("sbd_get_256", "sandboxd REST GET /v1/files, 256 MiB", "MiB/s", better="higher"),
    Metric("sbd_get_256_rss", "sandboxd REST GET 256 MiB, server RSS growth", "MB", target=64),
    transports=("sandboxd",),
)
async def sandboxd_files_256(ctx: Ctx) -> dict[str, float]:
    """256 MiB in 1 MiB chunks through ``PUT /v1/files/{path}`` (a raw streamed body, as the SDK
    sends a file object), then back through ``GET`` read as a stream; both checked by sha256; the
    server's RSS sampled during each."""
    import hashlib

    total, chunk = (32 if ctx.quick else 256) * 1024 * 1024, os.urandom(1024 * 1024)
    name = f"bench-sandboxd-{os.getpid()}.bin"
    url = f"{sandboxd_listener(ctx, 'sandboxd-rest')}/v1/files/{name}"
    sent = hashlib.sha256()

    async def body() -> Any:
        for i in range(total // len(chunk)):
            piece = chunk[:-1] + bytes([i % 256])
            sent.update(piece)
            yield piece

    timeout = httpx.Timeout(120.0)
    async with httpx.AsyncClient(timeout=timeout) as client:
        try:
            async with RssSampler(ctx.pid) as put_rss:
                t0 = time.perf_counter()
                response = await client.put(url, content=body(), headers={"content-type": "application/octet-stream"})
                put_s = time.perf_counter() - t0
            if response.status_code != 204:
                raise RuntimeError(f"PUT answered {response.status_code}: {response.text[:200]}")
            got, size = hashlib.sha256(), 0
            async with RssSampler(ctx.pid) as get_rss:
                t0 = time.perf_counter()
                async with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"GET answered {response.status_code}: {(await response.aread())[:200]!r}")
                    async for data in response.aiter_raw():
                        got.update(data)
                        size += len(data)
                get_s = time.perf_counter() - t0
            if size != total or got.digest() != sent.digest():
                same = got.digest() == sent.digest()
                raise RuntimeError(f"GET gave back {size} of {total} bytes, sha256 {'equal' if same else 'different'}")
        finally:
            await client.delete(url)
    mib = total / (1024 * 1024)
    if ctx.quick:
        ctx.note("sandboxd_files_256 [sandboxd]: --quick moves 32 MiB, not 256")
    return {
        "sbd_put_256": mib / put_s,
        "sbd_put_256_rss": put_rss.growth,
        "sbd_get_256": mib / get_s,
        "sbd_get_256_rss": get_rss.growth,
    }


# runner -----------------------------------------------------------------------------------------


@dataclass
class Row:
    metric: Metric
    transport: str
    value: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool | None:
        return None if self.value is None else self.metric.ok(self.value, self.transport)


async def run_transport(transport: str, quick: bool, figures: list[Figure]) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    # a transport without a client of ours (sandboxd) is served beside http, the runner's client
    client_transport = transport if transport in installed_transports() else "http"
    server = ServerProcess(transports=sorted({transport, client_transport}))
    try:
        server.start()
    except Exception as exc:
        msg = f"server did not start: {exc}"
        return [Row(m, transport, error=msg) for f in figures for m in f.metrics], notes
    try:
        async with Sandbox(server.url, transport=client_transport) as sb:
            ctx = Ctx(transport, server, sb, quick, notes)
            await sb.ping()  # the server answers: the at_start figures see it fresh and idle
            at_start = [f for f in figures if f.at_start]
            rest = [f for f in figures if not f.at_start]
            ordered = [*at_start, *(f for f in rest if f.before_load), *(f for f in rest if not f.before_load)]
            results: dict[str, Mapping[str, float] | str] = {}
            for i, fig in enumerate(ordered):
                if i == len(at_start):
                    await sb.exec("echo warm-up")  # one warm-up exec before the other figures
                t0 = time.perf_counter()
                try:
                    results[fig.name] = await fig.fn(ctx)
                except Exception as exc:
                    results[fig.name] = f"{type(exc).__name__}: {exc}"
                    notes.append(f"{fig.name} [{transport}] failed:\n" + traceback.format_exc())
                print(f"  {transport:>6} {fig.name:<20} {time.perf_counter() - t0:6.1f} s", file=sys.stderr)
            for fig in figures:  # the table keeps registration order
                res = results[fig.name]
                for m in fig.metrics:
                    if isinstance(res, str):
                        rows.append(Row(m, transport, error=res))
                    elif m.key not in res:
                        rows.append(Row(m, transport, error=f"{fig.name} returned no {m.key!r}"))
                    else:
                        rows.append(Row(m, transport, value=float(res[m.key])))
    finally:
        code = server.stop()
        if code not in (0, None, -15):
            notes.append(
                f"server [{transport}] exited with {code}; last log lines:\n" + "\n".join(list(server.log)[-20:])
            )
    return rows, notes


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ops/s", "runs"):
        return f"{value:,.0f} {unit}"
    if unit == "s":
        return f"{value:.3f} {unit}"
    if unit == "x":
        return f"{value:.2f}x"
    if value < 0.1:
        return f"{value:.3f} {unit}"
    return f"{value:.2f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def table(rows: list[Row]) -> str:
    head = ("figure", "transport", "measured", "target", "upstream", "ok?")
    lines = []
    for r in rows:
        m = r.metric
        target = m.target_for(r.transport)
        tgt = "-" if target is None else ("≤ " if m.better == "lower" else "≥ ") + fmt(target, m.unit)
        measured = f"ERROR: {r.error}" if r.error else fmt(r.value, m.unit)
        ok = "ERROR" if r.error else {True: "yes", False: "NO", None: "-"}[r.ok]
        lines.append((m.label, r.transport, measured, tgt, fmt(m.upstream, m.unit), ok))
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(x) for x in lines)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--transport",
        action="append",
        metavar="NAME",
        help="transport to measure (repeatable; default: every installed transport)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--quick", action="store_true", help="about 10x fewer iterations (smoke test)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="FIGURE",
        help="run only this figure (function name; repeatable): " + ", ".join(f.name for f in FIGURES),
    )
    parser.add_argument("--floor-server", choices=("app", "bash", "grpc"), help=argparse.SUPPRESS)  # see FloorServer
    args = parser.parse_args(argv)
    if args.floor_server:
        return floor_server_main(args.floor_server)

    installed = installed_transports(need_client=False)  # sandboxd has no client: its figures need none
    transports = args.transport or installed
    figures = [f for f in FIGURES if not args.only or f.name in args.only]
    if args.only and len(figures) != len(set(args.only)):
        parser.error(f"unknown figure in {args.only}; known: {[f.name for f in FIGURES]}")

    rows: list[Row] = []
    notes: list[str] = []
    measured: list[str] = []
    t0 = time.perf_counter()
    for transport in transports:
        figs = [f for f in figures if f.runs_on(transport)]
        if not figs:
            continue
        measured.append(transport)
        if transport not in installed:
            rows += [
                Row(m, transport, error=f"transport not installed (installed: {installed})")
                for f in figs
                for m in f.metrics
            ]
            continue
        r, n = asyncio.run(run_transport(transport, args.quick, figs))
        rows += r
        notes += n
    elapsed = time.perf_counter() - t0

    print(table(rows))
    print(
        f"\n{len(measured)} transport(s), {elapsed:.1f} s{' (--quick)' if args.quick else ''}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    for note in notes:
        print("\n" + note, file=sys.stderr)

    if args.json:
        out = {
            "quick": args.quick,
            "elapsed_s": elapsed,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "results": [
                {
                    "key": r.metric.key,
                    "figure": r.metric.label,
                    "transport": r.transport,
                    "unit": r.metric.unit,
                    "value": r.value,
                    "target": r.metric.target_for(r.transport),
                    "better": r.metric.better,
                    "upstream": r.metric.upstream,
                    "ok": r.ok,
                    "error": r.error,
                }
                for r in rows
            ],
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
