"""``/ws/pty`` on a real server (contract section a11): the upgrade, ``ready`` after the replay,
keys in, output out, resize, the contract's error messages, broadcast, the socket's close when
the terminal ends, the token, the Python :class:`Terminal` client, and the server's memory with
a client that never reads.

The server is ``serve_with_pty.py`` (http plus a test transport mounting the ws plugin's
``PtyEndpoint``); the last test runs the ws transport's own server where it mounts the endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest
from helpers_pty import PtyServer, pty_url, raw_pty, unique

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import Proc, reset_peak, status_kib, still_alive
from sandbox_transport_ws.terminal import Terminal, TerminalError

MiB = 1024 * 1024
POSITIVE = "Invalid dimensions: cols and rows must be positive"
AT_MOST = "Invalid dimensions: cols and rows must be at most 65535"


async def refused(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """The answer to a WebSocket upgrade that the server refuses (its body read)."""
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = {"connection": "upgrade", "upgrade": "websocket", "sec-websocket-version": "13", "sec-websocket-key": key}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url, headers={**upgrade, **(headers or {})})
    assert response.status_code != 101, response
    return response


async def test_the_upgrade_needs_a_session_id_and_positive_sizes(pty_server: PtyServer) -> None:
    response = await refused(pty_url(pty_server))
    assert (response.status_code, response.text) == (400, "sessionId query parameter required")
    assert response.headers["content-type"].startswith("text/plain")
    for bad in ({"cols": "0"}, {"rows": "-3"}, {"cols": "80x"}, {"rows": "1.5"}):
        response = await refused(pty_url(pty_server, unique(), **bad))
        assert (response.status_code, response.text) == (400, POSITIVE)
    response = await refused(pty_url(pty_server, unique(), cols="70000"))
    assert (response.status_code, response.text) == (400, AT_MOST)
    async with httpx.AsyncClient(timeout=30) as client:
        plain = await client.get(pty_url(pty_server, unique()))  # no upgrade: the router's 404
    assert plain.status_code == 404


async def test_ready_then_keys_in_output_out_and_resize(pty_server: PtyServer) -> None:
    sid = unique()
    async with raw_pty(pty_server, sid, cols=90, rows=20, shell="bash") as pty:
        replay, ready = await pty.handshake()
        assert ready == {"type": "ready"}  # after the replay: at most one binary frame (a fresh
        assert replay is None or b"K42" not in replay  # terminal may have shown its prompt already)
        await pty.ws.send_bytes(b"echo K$((40+2)); echo S$(stty size | tr ' ' x)E\r")
        await pty.until(b"S20x90E")
        assert b"K42" in pty.received
        await pty.ws.send_text(json.dumps({"type": "resize", "cols": 101, "rows": 33}))
        await pty.ws.send_bytes(b"echo S$(stty size | tr ' ' x)E\r")
        await pty.until(b"S33x101E")


async def test_bad_control_messages_get_the_contracts_errors(pty_server: PtyServer) -> None:
    async with raw_pty(pty_server, unique()) as pty:
        await pty.handshake()
        for text, message in (
            ("not json", "Invalid control message"),
            ("[1, 2]", "Invalid control message"),
            ('{"type": "resize", "cols": 0, "rows": 10}', POSITIVE),
            ('{"type": "resize", "cols": "80", "rows": 10}', POSITIVE),
            ('{"type": "resize", "rows": 10}', POSITIVE),
            ('{"type": "resize", "cols": 80, "rows": 99999}', AT_MOST),
        ):
            await pty.ws.send_text(text)
            assert await pty.next_text() == {"type": "error", "message": message}, text
        await pty.ws.send_text('{"type": "exit"}')  # another type: ignored, as upstream
        await pty.ws.send_text('{"type": "resize", "cols": 77.0, "rows": 11}')
        await pty.ws.send_bytes(b"echo S$(stty size | tr ' ' x)E\r")
        await pty.until(b"S11x77E")
        assert pty.errors == []


async def test_control_messages_too_large_or_too_deep_get_errors_and_the_terminal_stays(pty_server: PtyServer) -> None:
    """A size JSON reads as infinity (``1e400``), ``Infinity`` or ``NaN`` (not JSON at all), and a
    message nested 100 000 deep each get the contract's error message; the socket stays open and
    the terminal usable. They used to raise in the endpoint (OverflowError, RecursionError): the
    socket closed with 1011 and the server logged a traceback."""
    deep = '{"type": "resize", "cols": ' + "[" * 100_000 + "]" * 100_000 + ', "rows": 10}'
    async with raw_pty(pty_server, unique()) as pty:
        await pty.handshake()
        for text, message in (
            ('{"type": "resize", "cols": 1e400, "rows": 10}', POSITIVE),
            ('{"type": "resize", "cols": 80, "rows": -1e400}', POSITIVE),
            ('{"type": "resize", "cols": Infinity, "rows": 10}', "Invalid control message"),
            ('{"type": "resize", "cols": NaN, "rows": 10}', "Invalid control message"),
            (deep, "Invalid control message"),
            ("[" * 100_000, "Invalid control message"),
        ):
            await pty.ws.send_text(text)
            assert await pty.next_text() == {"type": "error", "message": message}, text[:60]
        await pty.ws.send_text('{"type": "resize", "cols": 66, "rows": 13}')
        await pty.ws.send_bytes(b"echo S$(stty size | tr ' ' x)E\r")
        await pty.until(b"S13x66E")
        assert pty.errors == []
    assert not [line for line in pty_server.log if "Error in ASGI Framework" in line or "Traceback" in line]


async def test_every_socket_of_a_session_sees_the_output_and_a_new_one_gets_the_replay(pty_server: PtyServer) -> None:
    sid = unique()
    async with raw_pty(pty_server, sid) as first, raw_pty(pty_server, sid) as second:
        await first.handshake()
        await second.handshake()
        await second.ws.send_bytes(b"echo B$((3*4))C\r")  # typed on one ...
        await first.until(b"B12C")  # ... seen on both
        await second.until(b"B12C")
    async with raw_pty(pty_server, sid) as third:
        replay, ready = await third.handshake()
        assert ready == {"type": "ready"} and replay is not None and b"B12C" in replay
        async with raw_pty(pty_server, unique()) as other:  # another session: another terminal
            await other.handshake()
            await other.ws.send_bytes(b"echo O$((2+2))K\r")
            await other.until(b"O4K")
        await third.ws.send_bytes(b"echo T$((5+5))\r")
        await third.until(b"T10")
        assert b"O4K" not in third.received


async def test_the_socket_closes_when_the_shell_exits_or_the_session_is_deleted(pty_server: PtyServer) -> None:
    sid = unique()
    async with raw_pty(pty_server, sid) as pty:
        await pty.handshake()
        await pty.ws.send_bytes(b"exit 4\r")
        assert await pty.closed() == (1000, "Terminal exited")
    async with raw_pty(pty_server, sid) as pty, httpx.AsyncClient(base_url=pty_server.url, timeout=30) as http:
        await pty.handshake()
        await pty.ws.send_bytes(b"sleep 600 & echo J:$!:$$:J$((1))\r")
        found = re.search(rb"J:(\d+):(\d+):J1", await pty.until(b"J1"))
        assert found is not None
        procs = [Proc.of(int(pid)) for pid in found.groups()]
        assert (await http.post("/api/session/delete", json={"sessionId": sid})).is_success
        assert await pty.closed() == (1000, "Session deleted")
        assert still_alive(procs, within=5) == []


async def test_shutdown_closes_terminal_sockets_with_1001_and_ends_the_terminals(
    pty_server_factory: Callable[..., PtyServer],
) -> None:
    server = pty_server_factory()
    async with raw_pty(server, unique()) as pty:
        await pty.handshake()
        await pty.ws.send_bytes(b"echo P:$$:P$((1))\r")
        found = re.search(rb"P:(\d+):P1", await pty.until(b"P1"))
        assert found is not None
        shell = Proc.of(int(found.group(1)))
        stopping = asyncio.ensure_future(asyncio.to_thread(server.stop))
        assert await pty.closed() == (1001, "Server shutting down")
        assert await stopping == 0
    assert still_alive([shell], within=5) == []


async def test_a_failed_attach_is_an_error_message_then_1011(pty_server: PtyServer) -> None:
    async with raw_pty(pty_server, "__DISABLE_SESSION__") as pty:
        message = await pty.next_text()
        assert message["type"] == "error" and "has no terminal" in message["message"]
        code, _ = await pty.closed()
        assert code == 1011


async def test_the_terminal_client(pty_server: PtyServer) -> None:
    """:class:`Terminal`: replay, keys, resize, output to the end; errors as TerminalError."""
    sid = unique()
    async with Terminal(pty_server.url, sid, cols=70, rows=21) as term:
        assert b"C81" not in term.replay  # (a fresh terminal: at most its prompt)
        await term.send(b"echo C$((9*9)); echo S$(stty size | tr ' ' x)E\r")
        got = bytearray()
        async for chunk in term:
            got += chunk
            if b"S21x70E" in got:
                break
        assert b"C81" in got
    async with Terminal(pty_server.ws_url, sid) as term:  # ws:// works too; the replay has what was shown
        assert b"C81" in term.replay
        await term.resize(0, 5)
        await term.send(b"exit\r")
        async for _ in term:
            pass
        assert term.close_code == 1000 and term.close_reason == "Terminal exited"
        assert list(term.errors) == [POSITIVE]
    with pytest.raises(TerminalError, match=r"refused the terminal \(400\): Invalid dimensions"):
        await Terminal(pty_server.url, sid, cols=0).connect()
    with pytest.raises(TerminalError, match="has no terminal"):
        await Terminal(pty_server.url, "__DISABLE_SESSION__").connect()
    with pytest.raises(TerminalError, match="Cannot reach"):
        await Terminal("http://127.0.0.1:9", sid, timeout=5).connect()


async def test_the_token_is_required_and_sent(pty_server_factory: Callable[..., PtyServer]) -> None:
    server = pty_server_factory(env={"SANDBOX_TOKEN": "s3cret"})
    response = await refused(pty_url(server, unique()))
    assert response.status_code == 401  # the edge refuses the upgrade (with its status) before the endpoint sees it
    with pytest.raises(TerminalError, match=r"\(401\).*UNAUTHORIZED"):
        await Terminal(server.url, unique(), token="wrong").connect()
    async with Terminal(server.url, unique(), token="s3cret") as term:
        await term.send(b"echo A$((1+1))B\r")
        async for chunk in term:
            if b"A2B" in chunk:
                break


def stalled_socket(server: ServerProcess, session_id: str) -> socket.socket:
    """A WebSocket to the terminal that, after the upgrade, never reads (a small receive buffer)."""
    parts = urlsplit(pty_url(server, session_id))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # the answer's head only, byte by byte: nothing after it is read
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_client_that_never_reads_costs_the_server_a_bounded_amount(
    pty_server_factory: Callable[..., PtyServer],
) -> None:
    """A socket that stops reading while the terminal writes 100 MB: the server's RSS grows by a
    bounded amount (the ring and a few frames, not the output), the terminal waits for that
    reader for ``stalled_reader_s``, then drops it and goes on for the socket that reads."""
    server = pty_server_factory(
        config={"services": {"sessions": {"kill_grace_ms": 500}, "terminals": {"stalled_reader_s": 1.0}}}
    )
    sid = unique()
    async with raw_pty(server, sid) as reader:
        await reader.handshake()
        await reader.ws.send_bytes(b"echo W$((1))\r")
        await reader.until(b"W1")
        await asyncio.sleep(1.0)
        stalled = await asyncio.to_thread(stalled_socket, server, sid)
        try:
            base = status_kib(server.pid, "VmRSS")
            peak = base
            exact = reset_peak(server.pid)  # then VmHWM is the true peak; else RSS sampled while reading
            await reader.ws.send_bytes(b"head -c 100000000 /dev/zero | tr '\\0' y; echo; echo E$((6*7))ND\r")
            started = time.monotonic()
            while b"E42ND" not in reader.received[-100:]:
                event = await reader.ws.receive(timeout=120)
                reader.received += event.data
                if len(reader.received) > 2 * MiB:
                    del reader.received[: -1 * MiB]
                peak = max(peak, status_kib(server.pid, "VmRSS"))
            elapsed = time.monotonic() - started
            if exact:
                peak = max(peak, status_kib(server.pid, "VmHWM"))
        finally:
            stalled.close()
    growth_mib = (peak - base) / 1024
    print(f"\nserver RSS {base / 1024:.1f} MiB, +{growth_mib:.1f} MiB peak over 100 MB of output ({elapsed:.1f} s)")
    assert growth_mib < 24, f"server RSS grew {growth_mib:.1f} MiB"
    assert elapsed >= 1.0  # the terminal waited for the stalled reader ...
    assert any("terminal.reader_dropped" in line for line in server.log)  # ... then dropped it


async def test_the_ws_transport_serves_the_terminal(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    """The ws transport's own server mounts ``/ws/pty``."""
    server = sandbox_server_factory(transports=["http", "ws"])
    response = await refused(pty_url(server))
    assert (response.status_code, response.text) == (400, "sessionId query parameter required")
    async with raw_pty(server, unique(), shell="bash") as pty:
        await pty.handshake()  # (a fresh terminal may show its prompt before `ready`)
        await pty.ws.send_bytes(b"echo R$((2*3))\r")
        await pty.until(b"R6")


async def test_a_terminal_never_sees_the_servers_token(pty_server_factory: Callable[..., PtyServer]) -> None:
    server = pty_server_factory(env={"SANDBOX_TOKEN": "tok-pty-9d2e"})
    headers = {"Authorization": "Bearer tok-pty-9d2e"}
    async with raw_pty(server, unique(), shell="bash", headers=headers) as pty:
        await pty.handshake()
        await pty.ws.send_bytes(b"echo T${SANDBOX_TOKEN:-unset}T C$(env | grep -c ^SANDBOX_TOKEN=)C\r")
        await pty.until(b"TunsetT C0C")
