"""sandbox.v1.WatchService on the sandboxd gRPC listener, through our own message classes: the
changes of files the test makes in the workspace, include/exclude, the path rule, bad input."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers_sandboxd import server_stream

from sandbox_core.testing import ServerProcess
from sandbox_transport_sandboxd.pb import sandbox_ext_v1_pb2 as pb

WATCH = "/sandbox.v1.WatchService/Watch"
TIMEOUT_S = 30  # every stream's deadline: a change that never comes fails the test


def open_watch(channel: grpc.Channel, **fields: Any) -> Any:
    """A Watch call, its first message (Watching) already read."""
    call = server_stream(channel, WATCH, pb.WatchRequest, pb.WatchResponse)(
        pb.WatchRequest(**fields), timeout=TIMEOUT_S
    )
    first = next(call)
    assert first.WhichOneof("event") == "watching", first
    return call


def changes_until(call: Any, done: Callable[[pb.Change], bool]) -> list[pb.Change]:
    """The changes the stream reports up to the first for which ``done`` is true."""
    seen: list[pb.Change] = []
    for message in call:
        assert message.WhichOneof("event") == "change", (message, seen)
        seen.append(message.change)
        if done(message.change):
            return seen
    raise AssertionError(f"the stream ended first, after {seen}")


@pytest.fixture
def folder(sandboxd_server: ServerProcess, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory of the workspace for this test (its path relative to the workspace
    is its name), removed after."""
    path = Path(os.path.realpath(sandboxd_server.workspace)) / f"w-{request.node.name}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_watch_reports_a_file_created_modified_and_deleted(channel: grpc.Channel, folder: Path) -> None:
    call = open_watch(channel, path=folder.name)
    try:
        target = folder / "a.txt"
        target.write_text("one")
        seen = changes_until(call, lambda c: c.path == str(target) and c.event_type == "modify")
        with target.open("a") as f:
            f.write("two")
        seen += changes_until(call, lambda c: c.path == str(target) and c.event_type == "modify")
        target.unlink()
        seen += changes_until(call, lambda c: c.path == str(target) and c.event_type == "delete")
    finally:
        call.cancel()
    kinds = [c.event_type for c in seen if c.path == str(target)]
    assert kinds[0] == "create" and kinds.count("modify") >= 2 and kinds[-1] == "delete", kinds
    assert all(not c.is_directory and c.timestamp.endswith("Z") for c in seen), seen


def test_watching_names_the_directory_and_subdirectories_are_watched(channel: grpc.Channel, folder: Path) -> None:
    call = server_stream(channel, WATCH, pb.WatchRequest, pb.WatchResponse)(
        pb.WatchRequest(path=f"/{folder.name}"),
        timeout=TIMEOUT_S,  # absolute: re-rooted in the workspace
    )
    try:
        first = next(call)
        assert first.WhichOneof("event") == "watching" and first.watching.path == str(folder)
        assert first.watching.watch_id
        (folder / "sub").mkdir()
        seen = changes_until(call, lambda c: c.path == str(folder / "sub"))
        assert seen[-1].event_type == "create" and seen[-1].is_directory
        (folder / "sub" / "deep.txt").write_text("x")  # recursive by default
        changes_until(call, lambda c: c.path == str(folder / "sub" / "deep.txt"))
    finally:
        call.cancel()


def test_include_reports_only_matching_names(channel: grpc.Channel, folder: Path) -> None:
    call = open_watch(channel, path=folder.name, include=["*.txt"])
    try:
        (folder / "skipped.log").write_text("x")
        (folder / "kept.txt").write_text("x")
        (folder / "last.txt").write_text("x")
        seen = changes_until(call, lambda c: c.path == str(folder / "last.txt"))
    finally:
        call.cancel()
    names = {Path(c.path).name for c in seen}
    assert "kept.txt" in names and "skipped.log" not in names, seen


def test_exclude_leaves_out_matching_names_and_events_selects_kinds(channel: grpc.Channel, folder: Path) -> None:
    (folder / "old.txt").write_text("x")
    call = open_watch(channel, path=folder.name, exclude=["*.log"], events=["delete"])
    try:
        (folder / "new.txt").write_text("x")  # a create and a modify: not asked for
        (folder / "gone.log").write_text("x")
        (folder / "gone.log").unlink()  # excluded
        (folder / "old.txt").unlink()
        seen = changes_until(call, lambda c: c.path == str(folder / "old.txt"))
    finally:
        call.cancel()
    assert [(Path(c.path).name, c.event_type) for c in seen] == [("old.txt", "delete")]


def test_a_non_recursive_watch_leaves_out_subdirectories(channel: grpc.Channel, folder: Path) -> None:
    (folder / "sub").mkdir()
    call = open_watch(channel, path=folder.name, recursive=False)
    try:
        (folder / "sub" / "inner.txt").write_text("x")
        (folder / "top.txt").write_text("x")
        seen = changes_until(call, lambda c: c.path == str(folder / "top.txt"))
    finally:
        call.cancel()
    assert all("inner.txt" not in c.path for c in seen), seen


def test_a_watched_directory_that_goes_away_stops_the_stream(channel: grpc.Channel, folder: Path) -> None:
    call = open_watch(channel, path=folder.name)
    shutil.rmtree(folder)
    rest = list(call)  # the stream ends (the deadline fails the test otherwise)
    assert rest and rest[-1].WhichOneof("event") == "stopped" and rest[-1].stopped.reason, rest


def _watch_error(channel: grpc.Channel, **fields: Any) -> grpc.RpcError:
    call = server_stream(channel, WATCH, pb.WatchRequest, pb.WatchResponse)(
        pb.WatchRequest(**fields), timeout=TIMEOUT_S
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    return caught.value


def test_a_path_outside_the_workspace_is_permission_denied(
    channel: grpc.Channel, folder: Path, sandboxd_server: ServerProcess
) -> None:
    error: Any = _watch_error(channel, path="../..")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "path" in error.details(), error.details()
    (folder / "out").symlink_to("/tmp")
    error = _watch_error(channel, path=f"{folder.name}/out")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()


def test_a_path_that_is_not_a_directory_or_absent_is_refused(channel: grpc.Channel, folder: Path) -> None:
    (folder / "file").write_text("x")
    error: Any = _watch_error(channel, path=f"{folder.name}/file")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "Not a directory" in error.details()
    error = _watch_error(channel, path=f"{folder.name}/absent")
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"events": ["create", "rename"]}, "events"),
        ({"include": ["a[b"]}, "include"),
        ({"exclude": ["{a,b}"]}, "exclude"),
        ({"include": ["*.txt"], "exclude": ["*.log"]}, "include"),
    ],
)
def test_unknown_event_kinds_and_bad_patterns_are_invalid_argument(
    channel: grpc.Channel, folder: Path, fields: dict[str, Any], named: str
) -> None:
    error: Any = _watch_error(channel, path=folder.name, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and named in error.details(), error.details()
    open_watch(channel, path=folder.name).cancel()  # the same request without the bad field is served
