"""Conformance of the watch service: file-watch streams and change checks (contract a9, b6).

Each test watches its own directory ``<workspace>/watch-<uuid>`` (the ``watched`` fixture;
the workspace is where a sessionless command starts), and changes files through the server's
shell. A test waits for the events it expects (never for a duration), under a safety bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import SESSIONLESS
from sandbox_core.contract.conformance.ports import within
from sandbox_core.contract.models.watch import (
    AnyWatchEvent,
    FileWatchEvent,
    WatchErrorEvent,
    WatchingEvent,
    WatchStoppedEvent,
)
from sandbox_core.errors import SandboxError
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG

Seen = set[tuple[str, str, bool]]


async def sh(sandbox: Sandbox, command: str) -> str:
    """Run a command on the server (no session state, from the workspace); its stdout."""
    result = await sandbox.exec(command, session_id=SESSIONLESS, timeout_ms=30_000)
    assert result.exit_code == 0, result
    return result.stdout.rstrip("\n")


def seen(events: list[AnyWatchEvent]) -> Seen:
    return {(e.event_type, e.path, e.is_directory) for e in events if isinstance(e, FileWatchEvent)}


async def until(
    stream: AsyncGenerator[AnyWatchEvent, None], done: Callable[[list[AnyWatchEvent]], bool]
) -> list[AnyWatchEvent]:
    """The stream's events up to the one after which ``done(events)`` holds."""

    async def read() -> list[AnyWatchEvent]:
        events: list[AnyWatchEvent] = []
        async for event in stream:
            events.append(event)
            if done(events):
                return events
        raise AssertionError(f"the watch ended before the expected events: {events}")

    return await within(read())


async def expect(stream: AsyncGenerator[AnyWatchEvent, None], *wanted: tuple[str, str, bool]) -> list[AnyWatchEvent]:
    """Read until every ``(eventType, path, isDirectory)`` of ``wanted`` has been seen."""
    return await until(stream, lambda events: set(wanted) <= seen(events))


@contextlib.asynccontextmanager
async def watching(
    sandbox: Sandbox, path: str, **options: Any
) -> AsyncIterator[tuple[WatchingEvent, AsyncGenerator[AnyWatchEvent, None]]]:
    """A watch whose ``watching`` event has come (so its watches are established)."""
    stream = sandbox.watch.watch(path, **options)
    try:
        first = await within(stream.__anext__())
        assert isinstance(first, WatchingEvent), first
        yield first, stream
    finally:
        await stream.aclose()


async def fails(aw: Any, code: str, status: int) -> SandboxError:
    with pytest.raises(SandboxError) as info:
        await within(aw)
    assert (info.value.code, info.value.status) == (code, status), info.value
    return info.value


async def first_event(sandbox: Sandbox, path: str, **options: Any) -> AnyWatchEvent:
    """Open a watch and return its first event (its failure raises)."""
    stream = sandbox.watch.watch(path, **options)
    try:
        return await within(stream.__anext__())
    finally:
        await stream.aclose()


class WatchSuite:
    @pytest.fixture
    async def watched(self, sandbox: Sandbox) -> AsyncIterator[str]:
        name = f"watch-{uuid.uuid4().hex[:12]}"
        path = await sh(sandbox, f"mkdir {name} && cd {name} && pwd -P")
        try:
            yield path
        finally:
            await sh(sandbox, f"rm -rf '{path}'")

    async def test_watch_reports_create_modify_delete(self, sandbox: Sandbox, watched: str) -> None:
        async with watching(sandbox, watched) as (first, events):
            assert first.path == watched and first.watch_id.startswith("watch-")
            await sh(sandbox, f"echo one > {watched}/a.txt")
            await expect(events, ("create", f"{watched}/a.txt", False), ("modify", f"{watched}/a.txt", False))
            await sh(sandbox, f"echo two >> {watched}/a.txt")
            await expect(events, ("modify", f"{watched}/a.txt", False))
            await sh(sandbox, f"rm {watched}/a.txt && mkdir {watched}/sub")
            got = await expect(events, ("delete", f"{watched}/a.txt", False), ("create", f"{watched}/sub", True))
        for event in got:
            assert isinstance(event, FileWatchEvent) and event.timestamp.endswith("Z"), event

    async def test_watch_reports_moves_and_attrib(self, sandbox: Sandbox, watched: str) -> None:
        await sh(sandbox, f"touch {watched}/a")
        kinds = ["create", "modify", "delete", "move_from", "move_to", "attrib"]
        async with watching(sandbox, watched, events=kinds) as (_, events):
            await sh(sandbox, f"mv {watched}/a {watched}/b")
            await expect(events, ("move_from", f"{watched}/a", False), ("move_to", f"{watched}/b", False))
            await sh(sandbox, f"chmod 600 {watched}/b")
            await expect(events, ("attrib", f"{watched}/b", False))

    async def test_watch_event_kinds_filter(self, sandbox: Sandbox, watched: str) -> None:
        async with watching(sandbox, watched, events=["delete"]) as (_, events):
            await sh(sandbox, f"echo x > {watched}/a && chmod 600 {watched}/a && rm {watched}/a")
            got = await expect(events, ("delete", f"{watched}/a", False))
        assert seen(got) == {("delete", f"{watched}/a", False)}

    async def test_watch_attrib_is_off_by_default(self, sandbox: Sandbox, watched: str) -> None:
        await sh(sandbox, f"touch {watched}/a")
        async with watching(sandbox, watched) as (_, events):
            await sh(sandbox, f"chmod 600 {watched}/a && rm {watched}/a")
            got = await expect(events, ("delete", f"{watched}/a", False))
        assert not any(kind == "attrib" for kind, _, _ in seen(got))

    async def test_watch_recursive_follows_new_subdirectories(self, sandbox: Sandbox, watched: str) -> None:
        await sh(sandbox, f"mkdir -p {watched}/old/deep")
        async with watching(sandbox, watched) as (_, events):
            await sh(sandbox, f"touch {watched}/old/deep/f")
            await expect(events, ("create", f"{watched}/old/deep/f", False))
            # a tree made at once: what appears before its directory's watch is still reported
            await sh(sandbox, f"mkdir -p {watched}/new/a/b && echo x > {watched}/new/a/b/g")
            await expect(
                events,
                ("create", f"{watched}/new", True),
                ("create", f"{watched}/new/a/b", True),
                ("create", f"{watched}/new/a/b/g", False),
            )
            await sh(sandbox, f"echo y > {watched}/new/a/b/h")  # and the new directories are watched
            await expect(events, ("create", f"{watched}/new/a/b/h", False))

    async def test_watch_non_recursive_ignores_subdirectories(self, sandbox: Sandbox, watched: str) -> None:
        await sh(sandbox, f"mkdir {watched}/sub")
        async with watching(sandbox, watched, recursive=False) as (_, events):
            await sh(sandbox, f"touch {watched}/sub/inner && touch {watched}/top")
            got = await expect(events, ("create", f"{watched}/top", False))
        assert not any("/sub/" in path for _, path, _ in seen(got))

    async def test_watch_default_excludes_and_custom_exclude(self, sandbox: Sandbox, watched: str) -> None:
        await sh(sandbox, f"mkdir -p {watched}/.git {watched}/node_modules/pkg {watched}/build")
        async with watching(sandbox, watched) as (_, events):
            await sh(sandbox, f"touch {watched}/.git/HEAD {watched}/node_modules/pkg/i.js && touch {watched}/done")
            got = await expect(events, ("create", f"{watched}/done", False))
        assert seen(got) <= {("create", f"{watched}/done", False), ("modify", f"{watched}/done", False)}, got
        async with watching(sandbox, watched, exclude=["build", "*.log"]) as (_, events):
            await sh(sandbox, f"touch {watched}/build/x {watched}/a.log {watched}/.git/y && touch {watched}/end")
            got = await expect(events, ("create", f"{watched}/end", False))
        paths = {path for _, path, _ in seen(got)}
        assert f"{watched}/.git/y" in paths  # a custom exclude replaces the default one
        assert not {f"{watched}/build/x", f"{watched}/a.log"} & paths

    async def test_watch_include(self, sandbox: Sandbox, watched: str) -> None:
        await sh(sandbox, f"mkdir -p {watched}/src/deep")
        async with watching(sandbox, watched, include=["*.ts"]) as (_, events):
            await sh(sandbox, f"touch {watched}/src/deep/a.js {watched}/b.txt && touch {watched}/src/deep/c.ts")
            got = await expect(events, ("create", f"{watched}/src/deep/c.ts", False))
        assert {path for _, path, _ in seen(got)} == {f"{watched}/src/deep/c.ts"}

    async def test_watch_bad_filters_are_refused(self, sandbox: Sandbox, watched: str) -> None:
        for bad in ("*.[ch]", "{a,b}", "a]", "}"):
            err = await fails(first_event(sandbox, watched, include=[bad]), "VALIDATION_FAILED", 400)
            assert err.details.get("field") == "include", err
        err = await fails(first_event(sandbox, watched, include=["a"], exclude=["b"]), "VALIDATION_FAILED", 400)
        assert err.details.get("field") == "include"
        await fails(first_event(sandbox, watched, events=["bogus"]), "VALIDATION_FAILED", 400)
        await fails(sandbox.watch.check_changes(watched, exclude=["[x]"]), "VALIDATION_FAILED", 400)

    async def test_watch_path_rules(self, sandbox: Sandbox, watched: str) -> None:
        workspace = watched.rsplit("/", 1)[0]
        name = watched.rsplit("/", 1)[1]
        # relative to the workspace; ``..`` that stays inside is fine
        first = await first_event(sandbox, f"{name}/../{name}")
        assert isinstance(first, WatchingEvent) and first.path == watched
        await fails(first_event(sandbox, f"{watched}/missing"), "FILE_NOT_FOUND", 404)
        await sh(sandbox, f"touch {watched}/file")
        await fails(first_event(sandbox, f"{watched}/file"), "NOT_DIRECTORY", 400)
        await fails(first_event(sandbox, ""), "VALIDATION_FAILED", 400)
        # outside the workspace, however it is named: 403 on every transport
        outside = "/" if workspace != "/" else None
        if outside is not None:
            for path in (outside, f"{workspace}/..", "../", f"{name}/../../.."):
                await fails(first_event(sandbox, path), "PERMISSION_DENIED", 403)
            await fails(sandbox.watch.check_changes("/"), "PERMISSION_DENIED", 403)
            # a symbolic link inside the workspace that leads out of it
            await sh(sandbox, f"ln -s / {watched}/escape && ln -s /nonexistent-{name} {watched}/dangling")
            await fails(first_event(sandbox, f"{watched}/escape"), "PERMISSION_DENIED", 403)
            await fails(first_event(sandbox, f"{watched}/escape/tmp"), "PERMISSION_DENIED", 403)
            await fails(first_event(sandbox, f"{watched}/dangling"), "PERMISSION_DENIED", 403)

    async def test_watch_does_not_follow_links_out_of_the_tree(self, sandbox: Sandbox, watched: str) -> None:
        outside = await sh(sandbox, f"mktemp -d /tmp/watch-outside-{uuid.uuid4().hex[:8]}-XXXX")
        try:
            await sh(sandbox, f"ln -s {outside} {watched}/link")
            async with watching(sandbox, watched) as (_, events):
                await sh(sandbox, f"touch {outside}/secret && touch {watched}/mine")
                got = await expect(events, ("create", f"{watched}/mine", False))
            assert not any("secret" in path for _, path, _ in seen(got))
        finally:
            await sh(sandbox, f"rm -rf '{outside}'")

    async def test_watch_identical_requests_share_one_watcher(self, sandbox: Sandbox, watched: str) -> None:
        async with watching(sandbox, watched) as (a, events_a), watching(sandbox, watched) as (b, events_b):
            assert a.watch_id == b.watch_id
            async with watching(sandbox, watched, recursive=False) as (c, _):
                assert c.watch_id != a.watch_id
            await sh(sandbox, f"touch {watched}/both")
            for events in (events_a, events_b):
                await expect(events, ("create", f"{watched}/both", False))

    async def test_watch_ends_when_its_client_leaves(self, sandbox: Sandbox, watched: str) -> None:
        async with watching(sandbox, watched) as (first, _):
            active = await sandbox.watch.list()
            assert [w.subscribers for w in active.watches if w.id == first.watch_id] == [1]

        async def gone() -> None:
            while True:
                if not any(w.id == first.watch_id for w in (await sandbox.watch.list()).watches):
                    return
                await asyncio.sleep(0.05)

        await within(gone())
        async with watching(sandbox, watched) as (again, _):
            assert again.watch_id != first.watch_id  # a new watcher: the old one ended

    async def test_watch_stops_when_its_directory_is_deleted(self, sandbox: Sandbox, watched: str) -> None:
        await sh(sandbox, f"mkdir {watched}/doomed")
        async with watching(sandbox, f"{watched}/doomed") as (_, events):
            await sh(sandbox, f"rm -rf {watched}/doomed")
            got = await until(events, lambda evs: isinstance(evs[-1], (WatchStoppedEvent, WatchErrorEvent)))
            assert isinstance(got[-1], WatchStoppedEvent), got
            assert [e async for e in events] == []  # and the stream ends

    async def test_watch_check_changes_versions(self, sandbox: Sandbox, watched: str) -> None:
        check = sandbox.watch.check_changes
        base = await within(check(watched))
        assert (base.success, base.status, base.reason) == (True, "unchanged", None)
        watch_id, cursor = base.version.rsplit(":", 1)
        assert watch_id.startswith("watch-") and cursor.isdigit()
        again = await within(check(watched, since=base.version))
        assert (again.status, again.version) == ("unchanged", base.version)
        await sh(sandbox, f"echo x > {watched}/changed")
        changed = await within(check(watched, since=base.version))
        assert changed.status == "changed" and changed.version != base.version
        assert changed.version.startswith(watch_id + ":")
        assert (await within(check(watched, since=changed.version))).status == "unchanged"
        # the old version still compares with the current state
        assert (await within(check(watched, since=base.version))).status == "changed"
        # other options are another watch: a token of this one asks for a resync there
        other = await within(check(watched, since=changed.version, recursive=False))
        assert other.status == "resync" and other.reason == "expired"
        # a token of another server run
        restarted = await within(check(watched, since="watch-1-notthisrun:3"))
        assert (restarted.status, restarted.reason) == ("resync", "restarted")
        for bad in ("", "nonsense", "watch-1:", ":3", "watch-1:-1", "watch-1:1.5", "watch-1:9" * 100):
            err = await fails(check(watched, since=bad), "VALIDATION_FAILED", 400)
            assert err.details.get("field") == "since", err
        future = f"{watch_id}:{int(changed.version.rsplit(':', 1)[1]) + 1000}"
        await fails(check(watched, since=future), "VALIDATION_FAILED", 400)

    async def test_watch_check_changes_shares_the_stream_watcher(self, sandbox: Sandbox, watched: str) -> None:
        async with watching(sandbox, watched) as (first, events):
            result = await within(sandbox.watch.check_changes(watched))
            assert result.version.startswith(first.watch_id + ":")
            await sh(sandbox, f"touch {watched}/x")
            await expect(events, ("create", f"{watched}/x", False))
            later = await within(sandbox.watch.check_changes(watched, since=result.version))
            assert later.status == "changed"

    # ---- bounds (a server of its own: its bounds are small) -------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def watch_bounds_server(cls) -> Iterator[ServerProcess]:
        """A server that lets one watch have 4 directories, and all watches together 6."""
        services = {**TEST_CONFIG.get("services", {}), "watch": {"max_directories": 4, "max_total_directories": 6}}
        server = ServerProcess(config={**TEST_CONFIG, "services": services}).start()
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture
    async def bounded(
        self, watch_bounds_server: ServerProcess, sandbox_transport: str
    ) -> AsyncIterator[tuple[Sandbox, str]]:
        """(a client of that server, a fresh directory in its workspace)."""
        async with Sandbox(watch_bounds_server.url, transport=sandbox_transport) as sb:
            name = f"watch-{uuid.uuid4().hex[:12]}"
            path = await sh(sb, f"mkdir {name} && cd {name} && pwd -P")
            try:
                yield sb, path
            finally:
                await sh(sb, f"rm -rf '{path}'")

    async def test_watch_directory_bounds_are_clear_4xx(self, bounded: tuple[Sandbox, str]) -> None:
        """Past ``max_directories`` a watch is 400 VALIDATION_FAILED naming the path; past
        ``max_total_directories`` (the directories of all watches together: inotify watches are
        a kernel resource shared with the sandboxed code) 409 RESOURCE_BUSY; each names the limit
        and its setting."""
        sb, base = bounded
        await sh(sb, f"mkdir -p {base}/big/1/2/3/4 {base}/tree/a {base}/tree/b")
        error = await fails(first_event(sb, f"{base}/big"), "VALIDATION_FAILED", 400)
        assert error.details["field"] == "path" and error.details["limit"] == 4
        assert error.details["setting"] == "services.watch.max_directories" and "max_directories" in error.message
        async with watching(sb, f"{base}/tree", events=["create"]), watching(sb, f"{base}/tree", events=["delete"]):
            for attempt in (
                first_event(sb, f"{base}/tree", events=["modify"]),
                sb.watch.check_changes(f"{base}/tree", events=["attrib"]),
            ):
                error = await fails(attempt, "RESOURCE_BUSY", 409)
                assert (
                    error.details["limit"] == 6 and error.details["setting"] == "services.watch.max_total_directories"
                )
                assert "max_total_directories" in error.message

        async def released() -> None:  # the server ends a watch once its last reader has left
            while True:
                if not (await sb.watch.list()).watches:
                    return
                await asyncio.sleep(0.05)

        await within(released())
        async with watching(sb, f"{base}/tree", events=["modify"]):  # the others ended: room again
            pass
