"""Helpers of the Cap'n Web interop tests: the real capnweb under Node as a peer of our engine.

* :func:`node_capnweb_server` (fixture) starts ``capnweb_server.mjs`` (the JS ``Api``) on a free
  127.0.0.1 port, for our Python client to talk to; it records every frame (:class:`NodeServer`).
* :func:`run_js_client` runs ``capnweb_client.mjs`` (one scenario) against a URL and returns its
  JSON result.
* :class:`TestApi` mirrors the JS ``Api`` with our engine, and :func:`py_capnweb_server` (fixture)
  serves it through hypercorn on a free 127.0.0.1 port, recording every frame too
  (:class:`PyServer`).
* :func:`vector` reads a conformance vector (``vectors/<scenario>.<transport>.jsonl``).

Test modules import the fixtures by name (``from capnweb_peer import py_capnweb_server as
py_capnweb_server``) and ask for them through a wrapper fixture of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import capnweb
from capnweb import ReadableStream, RpcError, RpcTarget
from sandbox_core.server import answer_lifespan

HERE = Path(__file__).parent
VECTORS = HERE / "vectors"
Frame = dict[str, Any]  # {"conn": n, "dir": "c2s"|"s2c"|"close", "frame": text} (+ code, reason)


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "capnweb").is_dir():
        pytest.fail(
            "Node and tests/interop/node_modules are required: "
            "run `npm ci --prefix tests/interop --ignore-scripts --no-audit --no-fund`"
        )
    return node


# --------------------------------------------------------------------------------------------------
# transcripts


def parse_frames(lines: list[Frame], conn: int | None = None, direction: str | None = None) -> list[Any]:
    """The parsed messages of ``lines`` (of one connection / direction when given)."""
    out = []
    for rec in lines:
        if conn is not None and rec["conn"] != conn:
            continue
        if rec["dir"] not in ("c2s", "s2c") or (direction is not None and rec["dir"] != direction):
            continue
        out.append(json.loads(rec["frame"]))
    return out


def format_frames(lines: list[Frame]) -> str:
    """One line per event, for assertion messages (long frames cut)."""
    out = []
    for rec in lines:
        if rec["dir"] == "close":
            out.append(f"  [{rec['conn']}] CLOSE {rec.get('code')} {rec.get('reason')}")
        else:
            text = rec["frame"] if len(rec["frame"]) < 300 else rec["frame"][:300] + f"...<{len(rec['frame'])} chars>"
            out.append(f"  [{rec['conn']}] {rec['dir']} {text}")
    return "\n".join(out)


def vector(scenario: str, transport: str = "ws") -> tuple[dict[str, Any], list[Frame]]:
    """The conformance vector of a scenario: its ``meta`` and its frames (see vectors/README.md)."""
    lines = (VECTORS / f"{scenario}.{transport}.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line]
    return records[0]["meta"], records[1:]


def read_jsonl(path: Path) -> list[Frame]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# the Node server


@dataclass
class NodeServer:
    """``capnweb_server.mjs`` in a subprocess this fixture started."""

    proc: subprocess.Popen[bytes]
    port: int
    transcript: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/rpc"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/rpc"

    def frames(self) -> list[Frame]:
        return read_jsonl(self.transcript)

    def last_conn(self) -> int:
        conns = [rec["conn"] for rec in self.frames()]
        return max(conns, default=0)

    def conn_frames(self, conn: int) -> list[Frame]:
        return [rec for rec in self.frames() if rec["conn"] == conn]

    async def wait_for(self, pred: Callable[[list[Frame]], bool], limit_s: float = 5.0) -> list[Frame]:
        """Poll the transcript until ``pred`` holds (returns the transcript; raises after ``limit_s``)."""
        deadline = time.monotonic() + limit_s
        while True:
            frames = self.frames()
            if pred(frames):
                return frames
            if time.monotonic() > deadline:
                raise AssertionError(f"transcript condition not met in {limit_s}s:\n{format_frames(frames[-40:])}")
            await asyncio.sleep(0.02)


@contextlib.contextmanager
def start_node_server(workdir: Path, start_timeout: float = 15.0) -> Iterator[NodeServer]:
    port_file = workdir / "port"
    transcript = workdir / "transcript.jsonl"
    stderr = (workdir / "stderr.txt").open("wb")
    proc = subprocess.Popen(
        [_node(), str(HERE / "capnweb_server.mjs"), str(port_file), str(transcript)],
        cwd=HERE,
        stdin=subprocess.DEVNULL,
        stdout=stderr,
        stderr=stderr,
    )
    try:
        deadline = time.monotonic() + start_timeout
        while not port_file.exists():
            if proc.poll() is not None:
                output = (workdir / "stderr.txt").read_text()
                raise RuntimeError(f"capnweb_server.mjs exited {proc.returncode}: {output}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"capnweb_server.mjs wrote no port in {start_timeout}s")
            time.sleep(0.02)
        yield NodeServer(proc=proc, port=int(port_file.read_text()), transcript=transcript)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        stderr.close()


@pytest.fixture(scope="module")
def node_capnweb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    """The real capnweb serving the JS ``Api`` (one per test module)."""
    with start_node_server(tmp_path_factory.mktemp("capnweb-node")) as server:
        yield server


# --------------------------------------------------------------------------------------------------
# the Node client


def run_js_client(
    url: str, scenario: str, *, batch: bool = False, transcript: Path | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Run one scenario of ``capnweb_client.mjs`` against ``url``; its JSON line, parsed."""
    args = [_node(), str(HERE / "capnweb_client.mjs"), url, scenario]
    if batch:
        args.append("--batch")
    if transcript is not None:
        args += ["--transcript", str(transcript)]
    env = {**os.environ, "CAPNWEB_CLIENT_TIMEOUT_MS": str(int((timeout - 5) * 1000))}
    proc = subprocess.run(args, cwd=HERE, capture_output=True, timeout=timeout, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON from capnweb_client {scenario}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    out: dict[str, Any] = json.loads(lines[-1])
    return out


# --------------------------------------------------------------------------------------------------
# our engine's side: TestApi and its server


class Counter(RpcTarget):
    def __init__(self, api: TestApi, start: int) -> None:
        self._api = api
        self._value = start

    def increment(self, n: int = 1) -> int:
        self._value += n
        return self._value

    @property
    def value(self) -> int:
        return self._value

    def __rpc_dispose__(self) -> None:
        self._api._disposed += 1


class TestApi(RpcTarget):
    """The JS ``Api`` of capnweb_server.mjs, with our engine (one per connection). Besides the
    RPC methods it records, for the tests, what happened to the streams it sent."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._disposed = 0
        self._session: Any = None
        self.stream_events: list[str] = []  # "start:<name>", "end:<name>", "cancelled:<name>"
        self.produced = 0  # chunks bigStream has produced so far
        self.read_started: float | None = None  # time.monotonic() when slowUpload began to read

    def _set_session(self, session: Any) -> None:
        self._session = session

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def getUser(self, id: int) -> dict[str, Any]:
        return {"id": id, "name": f"user{id}", "tags": [f"tag{id}", "user"]}

    def greet(self, name: str) -> str:
        return "hello, " + name

    async def callMe(self, cb: Any, x: Any) -> dict[str, Any]:
        return {"got": await cb(x)}

    def makeCounter(self, i: int) -> Counter:
        return Counter(self, i)

    def fail(self) -> None:
        raise RpcError("RangeError", "boom", {"code": 42})

    def echo(self, v: Any) -> Any:
        return v

    def listUsers(self) -> list[dict[str, Any]]:
        return [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]

    def _tracked(self, name: str, chunks: Callable[[], Iterator[bytes]]) -> Any:
        events = self.stream_events

        async def gen() -> AsyncIterator[bytes]:
            events.append(f"start:{name}")
            try:
                for chunk in chunks():
                    yield chunk
            except GeneratorExit:
                events.append(f"cancelled:{name}")
                raise
            events.append(f"end:{name}")

        return ReadableStream(gen())

    def streamBytes(self, n: int) -> Any:
        return self._tracked("streamBytes", lambda: (bytes([i & 255, (i + 1) & 255, (i + 2) & 255]) for i in range(n)))

    def bigStream(self, count: int, size: int) -> Any:
        def chunks() -> Iterator[bytes]:
            for i in range(count):
                self.produced += 1
                yield bytes([i & 255]) * size

        return self._tracked("bigStream", chunks)

    async def upload(self, rs: Any) -> dict[str, int]:
        total = chunks = 0
        async for chunk in rs:
            total += len(chunk)
            chunks += 1
        return {"total": total, "chunks": chunks}

    async def slowUpload(self, rs: Any, start_ms: float, per_chunk_ms: float) -> dict[str, int]:
        await asyncio.sleep(start_ms / 1000)
        self.read_started = time.monotonic()
        total = chunks = 0
        async for chunk in rs:
            total += len(chunk)
            chunks += 1
            await asyncio.sleep(per_chunk_ms / 1000)
        return {"total": total, "chunks": chunks}

    async def writeTo(self, ws: Any) -> str:
        await ws.write("x1")
        await ws.write(bytes([9, 9]))
        await ws.close()
        return "done"

    async def sleep(self, ms: float, v: Any) -> Any:
        await asyncio.sleep(ms / 1000)
        return v

    async def callTarget(self, t: Any, n: int) -> Any:
        return await t.increment(n)

    async def pingClient(self, x: Any) -> Any:
        if self._session is None:
            raise RpcError("Error", "no client main")
        return await self._session.remote_main().ping(x)

    def disposals(self) -> int:
        return self._disposed


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class PyServer:
    """Our engine serving :class:`TestApi` through hypercorn, in a thread with its own loop."""

    port: int = 0
    frames: list[Frame] = field(default_factory=list)
    apis: dict[int, TestApi] = field(default_factory=dict)  # conn -> its TestApi
    errors: list[BaseException] = field(default_factory=list)
    _conns: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/rpc"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/rpc"

    def last_conn(self) -> int:
        return max(self.apis, default=0)

    def conn_frames(self, conn: int) -> list[Frame]:
        return [rec for rec in list(self.frames) if rec["conn"] == conn]

    def _log(self, conn: int, direction: str, text: str) -> None:
        self.frames.append({"conn": conn, "dir": direction, "frame": text, "t": time.monotonic()})

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope.get("path") != "/rpc":
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        conn = next(self._conns)
        api = TestApi()
        self.apis[conn] = api
        try:
            if scope["type"] == "websocket":
                await self._serve_ws(conn, api, scope, receive, send)
            elif scope["type"] == "http":
                await self._serve_batch(conn, api, scope, receive, send)
        except BaseException as exc:  # recorded for the tests, then re-raised to hypercorn
            self.errors.append(exc)
            raise

    async def _serve_ws(self, conn: int, api: TestApi, scope: Scope, receive: Receive, send: Send) -> None:
        async def logged_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                self._log(conn, "c2s", text if text is not None else "<binary>")
            elif message["type"] == "websocket.disconnect":
                self.frames.append({"conn": conn, "dir": "close", "code": message.get("code"), "reason": ""})
            return message

        async def logged_send(message: Message) -> None:
            if message["type"] == "websocket.send":
                text = message.get("text")
                self._log(conn, "s2c", text if text is not None else "<binary>")
            elif message["type"] == "websocket.close":
                rec = {"conn": conn, "dir": "close", "code": message.get("code"), "reason": message.get("reason")}
                self.frames.append({**rec, "by": "server"})
            await send(message)

        await capnweb.serve_websocket(scope, logged_receive, logged_send, main=api, on_session=api._set_session)

    async def _serve_batch(self, conn: int, api: TestApi, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        response = bytearray()

        async def logged_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False) and body:
                    for line in body.decode().split("\n"):
                        self._log(conn, "c2s", line)
            return message

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                response.extend(message.get("body", b""))
                if not message.get("more_body", False) and response:
                    for line in response.decode().split("\n"):
                        self._log(conn, "s2c", line)
            await send(message)

        await capnweb.serve_http_batch(scope, logged_receive, logged_send, main=api)

    def start(self, start_timeout: float = 15.0) -> PyServer:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) the listening socket
        config.graceful_timeout = 1
        config.accesslog = None
        config.websocket_max_message_size = 64 * 1024 * 1024
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._stop = asyncio.Event()
                ready.set()
                loop.run_until_complete(serve(self.app, config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
            except BaseException as exc:
                self.errors.append(exc)
            finally:
                ready.set()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="capnweb-py-server", daemon=True)
        self._thread.start()
        if not ready.wait(start_timeout):
            raise TimeoutError("the hypercorn thread did not start")
        deadline = time.monotonic() + start_timeout
        while True:  # until it accepts
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or not self._thread.is_alive():
                    raise RuntimeError(f"our server did not come up: {self.errors!r}") from None
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)


@pytest.fixture(scope="module")
def py_capnweb_server() -> Iterator[PyServer]:
    """Our engine serving :class:`TestApi` on 127.0.0.1 (one per test module)."""
    server = PyServer().start()
    try:
        yield server
    finally:
        server.stop()
