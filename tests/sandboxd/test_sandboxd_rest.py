"""The REST listener beyond files: ``/v1/metadata``, the token at its edge, and memory: a 256 MiB
PUT and GET stream through a server that grows by a bounded amount, and a GET whose client
stops reading does not grow it."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from helpers_sandboxd import rest_url

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import reset_peak, status_kib

MiB = 1024 * 1024


def test_metadata_lists_the_prefix_without_secrets_or_the_servers_own() -> None:
    env = {
        "SANDBOX_REGION": "eu-west",
        "SANDBOX_TEAM": "blue",
        "SANDBOX_API_TOKEN": "t0k",
        "SANDBOX_DB_PASSWORD": "pw",
        "SANDBOX_SIGNING_KEY": "k",
        "OTHER_THING": "x",
    }
    with ServerProcess(transports=["sandboxd"], env=env) as server:
        response = httpx.get(f"{rest_url(server)}/v1/metadata", timeout=10)
    assert response.status_code == 200
    got = response.json()["env"]
    assert got == {"SANDBOX_REGION": "eu-west", "SANDBOX_TEAM": "blue"}  # no SANDBOX_CONFIG (the server's own)


def test_the_token_guards_every_route_but_health() -> None:
    with ServerProcess(transports=["sandboxd"], config={"server": {"token": "t"}}) as server:
        base = rest_url(server)
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/v1/files/").status_code == 401
            assert client.put("/v1/files/x", content=b"x").status_code == 401
            assert client.get("/v1/metadata").status_code == 401
            assert client.get("/v1/files/", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.put("/v1/files/x", content=b"x", headers={"Authorization": "Bearer t"}).status_code == 204
            forwarded = {"X-Forwarded-Authorization": "Bearer t"}
            assert client.get("/v1/files/x", headers=forwarded).content == b"x"
            assert client.get("/v1/health").status_code == 200
            assert client.head("/v1/health").status_code == 200  # a probe may use HEAD
        assert os.path.exists(os.path.join(server.workspace, "x"))


@pytest.fixture(scope="module")
def big_server() -> Iterator[ServerProcess]:
    with ServerProcess(transports=["sandboxd"]) as server:
        yield server


def _chunks(total: int, size: int, digest: hashlib._Hash) -> Iterator[bytes]:
    block = os.urandom(size)
    for i in range(total // size):
        chunk = i.to_bytes(8, "big") + block[8:]  # each chunk differs
        digest.update(chunk)
        yield chunk


def _peak_growth(server: ServerProcess, idle_kib: int) -> int:
    return (status_kib(server.pid, "VmHWM") - idle_kib) * 1024


def test_a_256_mib_put_and_get_stream_through_bounded_memory(big_server: ServerProcess) -> None:
    total = 256 * MiB
    with httpx.Client(base_url=rest_url(big_server), timeout=120) as client:
        assert client.put("/v1/files/warm", content=b"w" * MiB).status_code == 204  # warm both paths
        assert client.get("/v1/files/warm").content == b"w" * MiB
        if not reset_peak(big_server.pid):
            pytest.skip("/proc/PID/clear_refs is not writable here: no way to measure the peak")
        idle = status_kib(big_server.pid, "VmRSS")
        sent = hashlib.sha256()
        response = client.put("/v1/files/big%2Fbig.bin", content=_chunks(total, 256 * 1024, sent))
        assert response.status_code == 204, response.text
        put_growth = _peak_growth(big_server, idle)
        assert os.path.getsize(os.path.join(big_server.workspace, "big", "big.bin")) == total
        received = hashlib.sha256()
        count = 0
        with client.stream("GET", "/v1/files/big%2Fbig.bin") as streamed:
            assert streamed.status_code == 200 and streamed.headers["content-length"] == str(total)
            for piece in streamed.iter_bytes():
                received.update(piece)
                count += len(piece)
        assert count == total and received.digest() == sent.digest()
        growth = _peak_growth(big_server, idle)
    print(f"server peak over idle: PUT {put_growth / MiB:.1f} MiB, PUT+GET {growth / MiB:.1f} MiB")
    assert growth <= 64 * MiB, f"server peak {growth / MiB:.0f} MiB over idle for a 256 MiB round trip"


def test_a_get_whose_client_stops_reading_does_not_grow_the_server(big_server: ServerProcess) -> None:
    path = os.path.join(big_server.workspace, "stall.bin")
    with open(path, "wb") as fh:
        fh.truncate(256 * MiB)  # sparse: quick to make, 256 MiB to send
    url = urlsplit(rest_url(big_server))
    if not reset_peak(big_server.pid):
        pytest.skip("/proc/PID/clear_refs is not writable here: no way to measure the peak")
    idle = status_kib(big_server.pid, "VmRSS")
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /v1/files/stall.bin HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        # the client reads nothing more for a while: the server must wait, not buffer the file
        deadline = time.monotonic() + 3.0
        growth = 0
        while time.monotonic() < deadline:
            growth = max(growth, _peak_growth(big_server, idle))
            time.sleep(0.1)
    print(f"server peak over idle with a stalled reader: {growth / MiB:.1f} MiB")
    assert growth <= 32 * MiB, f"server grew {growth / MiB:.0f} MiB for a client that stopped reading"
    assert httpx.get(f"{rest_url(big_server)}/v1/health", timeout=10).status_code == 200


def test_a_put_body_counts_against_the_budget_and_its_timeout() -> None:
    config = {"server": {"max_body_bytes_total": 1024, "body_wait_timeout": 0, "body_timeout": 1}}
    with ServerProcess(transports=["sandboxd"], config=config) as server:
        base = rest_url(server)
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.put("/v1/files/small", content=b"s" * 100).status_code == 204
            refused = client.put("/v1/files/large", content=b"L" * (256 * 1024))  # a chunk over the whole budget
            assert refused.status_code in (409, 503), refused.text  # RESOURCE_BUSY, as errors.mapped places it
            assert "limit is 1024" in refused.json()["message"]
        url = urlsplit(base)
        with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
            head = f"PUT /v1/files/stalled HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: 100\r\n\r\n"
            sock.sendall(head.encode() + b"only part")  # then nothing: the body timeout (1 s) ends it
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert sorted(os.listdir(server.workspace)) == ["small"]  # nothing else, no temp file left
