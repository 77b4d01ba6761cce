"""``POST /rpc`` (Cap'n Web HTTP batches) within the same protections as the http transport's
bodies: an early 413 from ``Content-Length`` with the contract's error body, the server's one
budget of incoming bytes, a body that stops coming given up, and a client that goes away
cancelling its batch's calls (its command ends, its session is free at once)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG
from sandbox_core.testing.procs import Proc

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess(config=TEST_CONFIG).start()
    try:
        yield proc
    finally:
        proc.stop()


def batch_head(port: int, length: int) -> bytes:
    return b"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % (
        port,
        length,
    )


def answer_of(sock: socket.socket, timeout: float) -> bytes:
    """The server's whole answer on ``sock`` (until it closes, or its body is complete), or
    what came of it within ``timeout`` seconds."""
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
        head, sep, body = received.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if sep and line.lower().startswith(b"content-length:") and len(body) >= int(line.split(b":")[1]):
                return received
    return received


def error_body(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:300]
    decoded = json.loads(body)
    assert isinstance(decoded, dict)
    return decoded


def test_a_batch_over_the_limit_is_refused_from_its_content_length(server: ServerProcess) -> None:
    """A batch announcing 1 GB is answered 413 at once, with the contract's error body naming
    the setting, and the connection closes (its body is not read). It used to get no answer
    while the server waited for (and would have buffered) the whole body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(batch_head(server.port, 1_000_000_000) + b'["push",')
        answer = answer_of(sock, 5)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"connection: close" in answer.lower()
    body = error_body(answer)
    assert body["code"] == "VALIDATION_FAILED" and body["httpStatus"] == 413, body
    assert body["context"] == {"limit": 128 * MiB, "size": 1_000_000_000, "setting": "transports.rpc.max_batch_bytes"}


def test_a_batch_whose_body_stops_coming_is_given_up(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    """No bytes of the body for ``body_timeout`` (1 s here): 408 with the contract's error body."""
    proc = sandbox_server_factory(config={"server": {"body_timeout": 1.0}})
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        sock.sendall(batch_head(proc.port, 1000) + b'["push",')
        answer = answer_of(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    body = error_body(answer)
    assert body["code"] == "VALIDATION_FAILED" and body["context"] == {"timeout": 1.0, "setting": "server.body_timeout"}


def test_batches_count_against_the_body_budget(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    """A batch draws on the server's budget of incoming bytes like an http body: while an
    unfinished http upload holds most of it, a batch that does not fit waits for room, then gets
    503 RESOURCE_BUSY; once the upload goes, batches are answered again. (The budget is set by
    its former, http name here: it still sets the server's one budget.)"""
    budget = 4 * MiB
    proc = sandbox_server_factory(
        config={"transports": {"http": {"max_body_bytes": budget, "max_body_bytes_total": budget, "body_wait_s": 0.5}}}
    )
    holder = socket.create_connection(("127.0.0.1", proc.port))
    try:
        holder.sendall(
            b"POST /api/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % (3 * MiB)
        )
        time.sleep(0.3)
        batch = b'["push",["pipeline",0,["utils","ping"],[]]]\n["pull",1]'
        padded = batch + b"\n" * (2 * MiB)
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            busy = client.post("/rpc", content=padded)
            assert busy.status_code == 503, busy.text[:300]
            assert (
                busy.json()["code"] == "RESOURCE_BUSY"
                and busy.json()["context"]["setting"] == "transports.http.max_body_bytes_total"
            )
            holder.close()
            deadline = time.monotonic() + 10
            while (answered := client.post("/rpc", content=padded)).status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert answered.status_code == 200, answered.text[:300]
    finally:
        holder.close()


def test_a_client_that_leaves_mid_batch_cancels_its_calls(server: ServerProcess, tmp_path: Path) -> None:
    """The client sends a batch whose ``commands.execute`` runs for a minute, then goes away:
    the command is stopped (as when an http client disconnects) and its session takes the next
    command at once. The command used to run on, the session locked, the next exec waiting."""
    pid_file = tmp_path / "sleeper.pid"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/api/session/create", json={"id": "batch-left"}).status_code == 200
        command = f"sh -c 'echo $$ > {pid_file}; exec sleep 60'"
        batch = (
            json.dumps(["push", ["pipeline", 0, ["commands", "execute"], [command, "batch-left"]]])
            + "\n"
            + '["pull",1]'
        ).encode()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            sock.sendall(batch_head(server.port, len(batch)) + batch)
            deadline = time.monotonic() + 10
            while not (pid_file.exists() and pid_file.read_text().strip()):
                assert time.monotonic() < deadline, "the command did not start"
                time.sleep(0.05)
            sleeper = Proc.of(int(pid_file.read_text()))
        finally:
            sock.close()  # the client goes away before its answer
        deadline = time.monotonic() + 10
        while sleeper.alive():
            assert time.monotonic() < deadline, "the command of a batch whose client left still runs"
            time.sleep(0.05)
        after = client.post("/api/execute", json={"command": "echo next", "sessionId": "batch-left"}, timeout=10)
        assert after.status_code == 200 and after.json()["stdout"].strip() == "next", after.text
