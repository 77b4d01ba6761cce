"""sandbox.v1.WatchService on a server whose workspace is reached through a symbolic link (as
``/workspace`` may be): a directory inside it is watched, not refused as outside it."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from helpers_sandboxd import grpc_target, server_stream

from sandbox_core.testing import ServerProcess
from sandbox_transport_sandboxd.pb import sandbox_ext_v1_pb2 as pb

TIMEOUT_S = 30


def test_a_workspace_behind_a_symlink_is_watched(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "d").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    server = ServerProcess(transports=["sandboxd"], workspace=link)
    with server as started, grpc.insecure_channel(grpc_target(started)) as channel:
        watch = server_stream(channel, "/sandbox.v1.WatchService/Watch", pb.WatchRequest, pb.WatchResponse)
        call = watch(pb.WatchRequest(path="d"), timeout=TIMEOUT_S)
        try:
            first = next(call)
            assert first.WhichOneof("event") == "watching", first
            assert os.path.realpath(first.watching.path) == str(real / "d")
            (real / "d" / "new.txt").write_text("x")
            change = next(call)
            assert change.change.event_type == "create" and change.change.path.endswith("/d/new.txt")
        finally:
            call.cancel()
