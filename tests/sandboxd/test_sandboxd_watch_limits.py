"""sandbox.v1.WatchService against the watch service's limits, on a server that allows one watch
of at most three directories: a watch the client cancels is released on the server (the limit
frees up), and a watch that grows past its limit ends RESOURCE_EXHAUSTED."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers_sandboxd import grpc_target, server_stream

from sandbox_core.testing import ServerProcess
from sandbox_transport_sandboxd.pb import sandbox_ext_v1_pb2 as pb

WATCH = "/sandbox.v1.WatchService/Watch"
TIMEOUT_S = 30
LIMITS = {"max_watchers": 1, "max_directories": 3}


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    with ServerProcess(transports=["sandboxd"], config={"services": {"watch": LIMITS}}) as server:
        yield server


@pytest.fixture
def chan(limited: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_target(limited)) as channel:
        yield channel


def start(channel: grpc.Channel, path: str) -> Any:
    return server_stream(channel, WATCH, pb.WatchRequest, pb.WatchResponse)(
        pb.WatchRequest(path=path), timeout=TIMEOUT_S
    )


def directory(server: ServerProcess, name: str) -> Path:
    path = Path(os.path.realpath(server.workspace)) / name
    path.mkdir(exist_ok=True)
    return path


def watching_within(channel: grpc.Channel, path: str, seconds: float) -> Any:
    """A Watch of ``path`` answered Watching, retried while the server's one watch is taken
    (RESOURCE_EXHAUSTED) for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        call = start(channel, path)
        try:
            first = next(call)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
            time.sleep(0.1)
            continue
        assert first.WhichOneof("event") == "watching", first
        return call


def test_a_cancelled_watch_is_released_on_the_server(chan: grpc.Channel, limited: ServerProcess) -> None:
    directory(limited, "a"), directory(limited, "b")
    held = watching_within(chan, "a", TIMEOUT_S)
    refused = start(chan, "b")
    with pytest.raises(grpc.RpcError) as caught:
        next(refused)  # the server's one watch is held
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_watchers" in error.details()
    held.cancel()
    second = watching_within(chan, "b", 20)  # the cancelled watch's stream closed on the server
    second.cancel()


def test_a_watch_past_its_directory_limit_ends_resource_exhausted(chan: grpc.Channel, limited: ServerProcess) -> None:
    root = directory(limited, "big")
    call = watching_within(chan, "big", TIMEOUT_S)
    for name in ("d1", "d2", "d3", "d4"):
        (root / name).mkdir()
    with pytest.raises(grpc.RpcError) as caught:
        for _ in call:
            pass
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "services.watch.max_directories" in error.details(), error.details()
