"""The server's connections under clients that misbehave (sandbox_core.hypercorn_fixes and the
hypercorn settings of sandbox_core.server): closed connections are released at once, slow or idle
ones time out, HTTP/2 is off unless enabled and bounded when it is, and the server keeps serving
at its descriptor limit."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import time
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest

from sandbox_core.plugins import installed_plugins
from sandbox_core.testing import ServerProcess, installed_transports
from sandbox_core.testing.procs import status_kib

PING = b"GET /api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


def ping(port: int, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(PING)
        return sock.recv(65536)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess(config={"server": {"keep_alive_timeout": 2.0}}).start()
    try:
        yield proc
    finally:
        proc.stop()


def wait_until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_connections_closed_by_the_client_are_released_at_once() -> None:
    """A connection closed by its client is released at once, not when the keep-alive timeout
    (long here, so that only the fix can release them in time) runs out."""
    proc = ServerProcess(config={"server": {"keep_alive_timeout": 60.0}}).start()
    try:
        ping(proc.port)  # warm: whatever the first request opens stays open
        base = open_fds(proc.pid)
        for _ in range(300):  # connect and close without a request: it used to sit in CLOSE-WAIT
            socket.create_connection(("127.0.0.1", proc.port)).close()
        for _ in range(100):  # a request, then close before reading the answer
            with socket.create_connection(("127.0.0.1", proc.port)) as sock:
                sock.sendall(PING)
        assert wait_until(lambda: open_fds(proc.pid) <= base + 5, 5), open_fds(proc.pid) - base
    finally:
        proc.stop()


def trickle_head(sock: socket.socket) -> float | None:
    """Send a request head one byte every 0.1 s (for about 14 s): the seconds after which the
    server had closed the connection, or None if it never did."""
    t0 = time.monotonic()
    for byte in b"GET /api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def test_slow_request_head_and_idle_connection_time_out(server: ServerProcess) -> None:
    slow = socket.create_connection(("127.0.0.1", server.port))
    idle = socket.create_connection(("127.0.0.1", server.port))
    try:
        idle.sendall(PING)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        closed_after = trickle_head(slow)
        assert closed_after is not None and closed_after < 4, "a request head trickled in is cut off"
        idle.settimeout(3)
        while idle.recv(65536):  # the rest of the answer, then the server's close
            pass
    finally:
        slow.close()
        idle.close()
    assert ping(server.port).startswith(b"HTTP/1.1 200")


def test_a_slow_request_head_is_cut_off_before_the_keep_alive_timeout() -> None:
    proc = ServerProcess(config={"server": {"keep_alive_timeout": 30.0, "header_timeout": 1.0}}).start()
    slow = socket.create_connection(("127.0.0.1", proc.port))
    idle = socket.create_connection(("127.0.0.1", proc.port))
    try:
        idle.sendall(PING)
        answers = idle.recv(65536)  # the first answer's head, and its body or not yet
        assert answers.startswith(b"HTTP/1.1 200")
        closed_after = trickle_head(slow)
        assert closed_after is not None and closed_after < 4, "the trickled head is cut off after header_timeout"
        idle.sendall(PING)  # an idle connection is still served: only the keep-alive timeout closes it
        idle.settimeout(5)
        while answers.count(b'"pong"') < 2:  # both answers, whatever the reads they arrive in
            chunk = idle.recv(65536)
            assert chunk, "the idle connection was closed"
            answers += chunk
    finally:
        slow.close()
        idle.close()
        proc.stop()


def test_http2_is_off_by_default(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 505"), answer[:100]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"GET /api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]  # answered over HTTP/1.1, no 101


def h2_stream_without_window_updates(port: int, seconds: float) -> int:
    """Open ``POST /api/execute/stream {"command":"yes"}`` over h2c (prior knowledge), read for
    ``seconds`` without ever sending WINDOW_UPDATE; the number of DATA bytes received."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    body = b'{"command":"yes"}'
    conn.send_headers(
        1,
        [
            (":method", "POST"),
            (":path", "/api/execute/stream"),
            (":scheme", "http"),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ],
    )
    conn.send_data(1, body, end_stream=True)
    received = 0
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    received += len(event.data)  # never acknowledged: the window stays closed
            sock.sendall(conn.data_to_send())  # settings acks and pings only
    return received


def test_stalled_http2_stream_keeps_memory_bounded() -> None:
    proc = ServerProcess(config={"server": {"http2": True}}).start()
    try:
        ping(proc.port)
        before = rss_mb(proc.pid)
        received = h2_stream_without_window_updates(proc.port, 4.0)
        grown = rss_mb(proc.pid) - before
        assert 0 < received <= 65535, received  # one initial window, then the stream waits
        assert grown < 40, f"RSS grew {grown:.0f} MB during a 4 s h2 stall"
        assert ping(proc.port).startswith(b"HTTP/1.1 200")
    finally:
        proc.stop()


def h2_pings(sock: socket.socket, port: int, count: int, pause: float) -> list[int]:
    """``count`` requests ``GET /api/ping`` over one h2c connection (prior knowledge), ``pause``
    seconds apart: the status of each answer (none for those the server never answered)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    statuses: list[int] = []
    for n in range(count):
        if n:
            time.sleep(pause)
        stream_id = conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", "/api/ping"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}")]
        conn.send_headers(stream_id, headers, end_stream=True)
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            return statuses
        ended = False
        while not ended:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                return statuses
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses.append(int(dict(event.headers)[":status"]))
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    ended = True
            sock.sendall(conn.data_to_send())
    return statuses


def test_an_http2_connection_is_not_cut_off_by_the_header_timeout() -> None:
    """The header timeout times a request head on HTTP/1.1; a connection that turned to HTTP/2
    (prior knowledge) used to keep the timer its first bytes started, and was closed by it."""
    proc = ServerProcess(config={"server": {"http2": True, "header_timeout": 1.0, "keep_alive_timeout": 30.0}}).start()
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
            assert h2_pings(sock, proc.port, 2, 2.0) == [200, 200]
    finally:
        proc.stop()


def test_keeps_serving_at_the_descriptor_limit() -> None:
    limit = 256
    proc = ServerProcess(config={"server": {"keep_alive_timeout": 60}}).start()
    with contextlib.ExitStack() as stack:
        stack.callback(proc.stop)
        ping(proc.port)
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (limit, limit))  # its descriptors run out
        held = []
        for _ in range(limit + 50):  # more connections than it can hold; each sends a request
            try:
                sock = socket.create_connection(("127.0.0.1", proc.port), timeout=2)
                sock.sendall(PING)
            except OSError:
                break
            stack.callback(sock.close)
            held.append(sock)
        time.sleep(0.5)
        assert open_fds(proc.pid) <= limit
        assert proc.proc is not None and proc.proc.poll() is None, "the server is still running"
        for sock in held:  # the descriptors come back: the server serves again
            sock.close()
        assert wait_until(lambda: open_fds(proc.pid) < limit - 20, 5), open_fds(proc.pid)
        assert ping(proc.port).startswith(b"HTTP/1.1 200")


def test_shutdown_with_open_connections_is_quiet_and_on_time() -> None:
    timeout = 2.0
    proc = ServerProcess(config={"server": {"shutdown_timeout": timeout}}).start()
    held: list[socket.socket] = []
    try:
        for _ in range(3):  # idle keep-alive connections
            sock = socket.create_connection(("127.0.0.1", proc.port))
            sock.sendall(PING)
            sock.recv(65536)
            held.append(sock)
        for body in (b'{"command":"while :; do echo x; sleep 0.1; done"}', b'{"command":"sleep 30"}'):
            path = b"/api/execute/stream" if b"while" in body else b"/api/execute"
            sock = socket.create_connection(("127.0.0.1", proc.port))
            sock.sendall(
                b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (path, len(body), body)
            )
            held.append(sock)
        time.sleep(0.5)
        assert proc.proc is not None
        t0 = time.monotonic()
        proc.proc.terminate()
        proc.proc.wait(timeout + 10)
        took = time.monotonic() - t0
        time.sleep(0.2)  # the log reader catches up
        assert took <= timeout + 0.3, f"exited {took:.2f} s after SIGTERM (shutdown_timeout {timeout})"
        log = "\n".join(proc.log)
        assert "Traceback" not in log and "CancelledError" not in log, log[-2000:]
        assert "server.stopped" in log
    finally:
        for sock in held:
            sock.close()
        proc.stop()


@pytest.mark.parametrize(
    ("disabled", "message"),
    [
        (
            ",".join(installed_transports(need_client=False)),  # every one with a server side
            "no transport is installed: install one, for example sandbox-transport-http",
        ),
        (  # every service of sandbox-services (each is a plugin of its own)
            ",".join(sorted(p.name for p in installed_plugins() if p.distribution == "sandbox-services")),
            "install sandbox-services",
        ),
    ],
)
def test_a_server_with_nothing_to_serve_refuses_to_start(disabled: str, message: str) -> None:
    proc = ServerProcess(env={"SANDBOX_DISABLED_PLUGINS": disabled}, startup_timeout=20)
    try:
        with pytest.raises(RuntimeError):
            proc.start()
        assert any(message in line for line in proc.log), list(proc.log)[-5:]
    finally:
        proc.stop()


def test_started_line_lists_transports_and_services(server: ServerProcess) -> None:
    started = json.loads(server.started_line)
    assert "http" in started["transports"]
    assert {"commands", "files", "git", "ports", "processes", "sessions", "utils"} <= set(started["services"])
