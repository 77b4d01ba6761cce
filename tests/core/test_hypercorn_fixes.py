"""The fixes to hypercorn (sandbox_core.hypercorn_fixes) as a whole: every fix still applies to
the hypercorn (and wsproto) code it was written for, each is applied once per process, each names
the test that shows its bug, and each server follows its own settings, even beside another server
in the same process. The bugs themselves are shown by tests/core/test_connections.py,
tests/core/test_websocket_messages.py, tests/http/test_edge_http.py and tests/ws."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from helpers_inprocess import in_process_plugins

from sandbox_core import hypercorn_fixes
from sandbox_core.config import Config, ServerConfig
from sandbox_core.server import serve

ROOT = Path(__file__).resolve().parents[2]


def test_hypercorn_code_the_fixes_patch_is_unchanged() -> None:
    """The hypercorn (and wsproto) code each fix replaces, wraps or relies on is what the fix was
    written for: an upgrade that changes any of it fails here, naming the fix to review."""
    problems = hypercorn_fixes.changed_code()
    assert not problems, "\n".join(problems)


def test_every_fix_lists_the_code_it_patches() -> None:
    """Every fix :func:`apply` applies has its entries in PATCHED_CODE (and nothing else has)."""
    names = [fix.__name__ for fix in hypercorn_fixes.FIXES]
    assert len(names) == len(set(names)) == 7
    assert set(hypercorn_fixes.PATCHED_CODE) == set(names)
    assert all(hypercorn_fixes.PATCHED_CODE[name] for name in names)


def test_a_change_in_patched_code_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the guard says when the installed code is not what a fix was written for."""
    pieces = hypercorn_fixes.PATCHED_CODE["refuse_h2c"]
    name = "hypercorn.protocol.h11:H11Protocol._check_protocol"
    monkeypatch.setitem(pieces, name, "0" * 16)
    monkeypatch.setitem(pieces, "hypercorn.protocol.h11:H11Protocol.gone", "1" * 16)
    problems = hypercorn_fixes.changed_code()
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"sandbox_core.hypercorn_fixes.refuse_h2c: {name} has changed")
    assert "hypercorn_fixes.refuse_h2c: hypercorn.protocol.h11:H11Protocol.gone is gone" in problems[1]


def test_each_fix_names_an_existing_test_that_shows_its_bug() -> None:
    for fix in hypercorn_fixes.FIXES:
        doc = " ".join((fix.__doc__ or "").split())
        shown = re.findall(r"(tests/[\w/]+\.py)(?:::(test_\w+))?", doc)
        assert shown, f"{fix.__name__}: its docstring names no test"
        for path, test in shown:
            source = (ROOT / path).read_text()
            assert not test or f"def {test}(" in source, f"{fix.__name__}: {path}::{test} does not exist"


def test_each_fix_is_applied_once_per_process() -> None:
    from hypercorn.asyncio import tcp_server
    from hypercorn.protocol import ProtocolWrapper, h2, h11, ws_stream

    def methods() -> list[object]:
        """The hypercorn methods the fixes replace, as they are now."""
        return [
            tcp_server.TCPServer._read_data,
            tcp_server.TCPServer._close,
            ProtocolWrapper.handle,
            h11.H11Protocol.handle,
            h11.H11Protocol._check_protocol,
            ws_stream.WSStream.handle,
            ws_stream.WSStream._send_pings,
            ws_stream.WSStream._handle_events,
            h2.StreamBuffer.pop,
        ]

    hypercorn_fixes.apply()
    patched = methods()
    assert all("hypercorn_fixes" in method.__module__ for method in patched)
    hypercorn_fixes.apply()
    for fix in hypercorn_fixes.FIXES:
        fix()
    again = methods()
    assert again == patched, "a fix was applied twice: hypercorn's methods were wrapped again"


# --- two servers in one process, each with its own settings ---------------------------------------


@contextlib.contextmanager
def servers_in_this_process(*configs: Config) -> Iterator[list[int]]:
    """Serve each config in this process (one event loop in a thread, the servers started one
    after the other); the ports, in the order of ``configs``."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ports: list[int] = []
    started = threading.Event()
    failed: list[BaseException] = []

    async def main() -> None:
        servers = []
        try:
            for config in configs:
                up: asyncio.Future[str] = loop.create_future()
                servers.append(
                    asyncio.ensure_future(
                        serve(config, shutdown_trigger=stop.wait, on_started=up.set_result, pm=in_process_plugins())
                    )
                )
                done, _ = await asyncio.wait([up, servers[-1]], timeout=30, return_when=asyncio.FIRST_COMPLETED)
                assert up in done, "a server did not start"
                ports.append(int(up.result().rsplit(":", 1)[1]))
        except BaseException as exc:
            failed.append(exc)
            stop.set()
        finally:
            started.set()
        await asyncio.gather(*servers)

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            failed.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert started.wait(60), "the servers did not start"
        assert not failed, failed
        yield ports
    finally:
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not thread.is_alive(), "the servers did not stop"
        loop.close()
    assert not failed, failed


def h2_ping(port: int) -> tuple[int, bytes]:
    """``GET /api/ping`` over h2c with prior knowledge: the status and the body (0: the server
    answered something other than HTTP/2)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":path", "/api/ping"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}")],
        end_stream=True,
    )
    status, body = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65536)
            if not data:
                return status, body
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return 0, data  # not HTTP/2: the refusal
            for event in events:
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    return status, body
            sock.sendall(conn.data_to_send())


def h1_preface(port: int) -> bytes:
    """What the server answers to the HTTP/2 preface alone."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        return sock.recv(65536)


def slow_ping(port: int, seconds: float) -> bytes:
    """``GET /api/ping`` with its head sent in 30 pieces over ``seconds`` seconds; what the server
    answered (empty: it closed the connection first)."""
    head = b"GET /api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 60 + b"\r\nConnection: close\r\n\r\n"
    size = -(-len(head) // 30)
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            for start in range(0, len(head), size):
                sock.sendall(head[start : start + size])
                time.sleep(seconds / 30)
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:  # reset: the server closed it while we were sending
            pass
    return answer


def test_two_servers_in_one_process_keep_their_own_settings(tmp_path: Path) -> None:
    """One server with HTTP/2 and a 1 s header timeout, one without HTTP/2 and a 30 s one, in the
    same process: each answers per its own settings (they used to share the last one started's)."""
    fast = Config(
        server=ServerConfig(port=0, workspace=str(tmp_path), http2=True, header_timeout=1.0, keep_alive_timeout=60.0)
    )
    slow = Config(
        server=ServerConfig(port=0, workspace=str(tmp_path), http2=False, header_timeout=30.0, keep_alive_timeout=60.0)
    )
    with servers_in_this_process(fast, slow) as (fast_port, slow_port):
        status, body = h2_ping(fast_port)
        assert status == 200 and b"pong" in body, (status, body[:200])  # HTTP/2 served
        assert h1_preface(slow_port).startswith(b"HTTP/1.1 505")  # HTTP/2 refused
        # a request head that takes 3 s: more than one server's header timeout, less than the other's
        assert slow_ping(fast_port, 3.0) == b"", "the head was not cut off after the server's 1 s header timeout"
        answer = slow_ping(slow_port, 3.0)
        assert answer.startswith(b"HTTP/1.1 200") and b"pong" in answer, answer[:200]
