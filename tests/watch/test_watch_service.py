"""The watch service in this process: event mapping, recursion races, coalescing, bounded
subscribers, inotify overflow, sharing, the watcher bound, retention and expiry.

A change made by synchronous code in the test runs while the event loop is blocked, so every
inotify event it causes is queued before the service reads any: that makes the coalescing,
the race of a new directory's contents and the overflows deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from conftest import Factory
from helpers_watch import SAFETY_S, eventually, expect, open_watch, read_int, seen, service, touch, until

from sandbox_core.contract.models.watch import (
    CheckChangesResult,
    FileWatchEvent,
    WatchErrorEvent,
    WatchStoppedEvent,
)
from sandbox_core.errors import SandboxError

ALL = ["create", "modify", "delete", "move_from", "move_to", "attrib"]


async def test_every_kind_maps_faithfully(watch_service: Factory, workspace: str) -> None:
    async with watch_service() as registry:
        first, stream = await open_watch(registry, workspace, events=ALL)
        assert first.path == workspace
        w = workspace
        touch(f"{w}/a", "x")
        await expect(stream, ("create", f"{w}/a", False), ("modify", f"{w}/a", False))
        os.rename(f"{w}/a", f"{w}/b")
        await expect(stream, ("move_from", f"{w}/a", False), ("move_to", f"{w}/b", False))
        os.chmod(f"{w}/b", 0o600)
        await expect(stream, ("attrib", f"{w}/b", False))
        os.unlink(f"{w}/b")
        await expect(stream, ("delete", f"{w}/b", False))
        os.mkdir(f"{w}/d")
        os.chmod(w, 0o755)  # the watched directory itself
        await expect(stream, ("create", f"{w}/d", True), ("attrib", w, True))
        os.rmdir(f"{w}/d")
        await expect(stream, ("delete", f"{w}/d", True))
        await stream.aclose()


async def test_coalescing_counts_each_change_once(watch_service: Factory, workspace: str) -> None:
    async with watch_service() as registry:
        _, stream = await open_watch(registry, workspace)
        for i in range(50):
            touch(f"{workspace}/f", str(i))  # 50 opens, writes and closes in one window
        touch(f"{workspace}/g")
        events = await expect(stream, ("modify", f"{workspace}/g", False))
        keys = [(e.event_type, e.path) for e in events if isinstance(e, FileWatchEvent)]
        assert keys.count(("modify", f"{workspace}/f")) == 1
        assert keys.count(("create", f"{workspace}/f")) == 1
        assert len(keys) == len(set(keys)) == 4
        # the version counts every change, not only what survived coalescing
        check = await registry.call("watch", "check_changes", {"path": workspace})
        assert isinstance(check, CheckChangesResult) and int(check.version.rsplit(":", 1)[1]) > 4
        await stream.aclose()


async def test_new_directory_contents_made_before_its_watch(watch_service: Factory, workspace: str) -> None:
    async with watch_service() as registry:
        _, stream = await open_watch(registry, workspace)
        os.makedirs(f"{workspace}/new/a/b")  # all of it before the service sees "new"
        touch(f"{workspace}/new/a/b/f")
        await expect(
            stream,
            ("create", f"{workspace}/new", True),
            ("create", f"{workspace}/new/a", True),
            ("create", f"{workspace}/new/a/b", True),
            ("create", f"{workspace}/new/a/b/f", False),
        )
        touch(f"{workspace}/new/a/b/later")  # the new directories are watched now
        await expect(stream, ("create", f"{workspace}/new/a/b/later", False))
        await stream.aclose()


async def test_directories_moved_in_out_and_within(watch_service: Factory, workspace: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "tree" / "sub").mkdir(parents=True)
    async with watch_service() as registry:
        _, stream = await open_watch(registry, workspace, events=ALL)
        w = workspace
        os.mkdir(f"{w}/d")
        await expect(stream, ("create", f"{w}/d", True))
        os.rename(f"{w}/d", f"{w}/e")
        await expect(stream, ("move_from", f"{w}/d", True), ("move_to", f"{w}/e", True))
        touch(f"{w}/e/f")  # reported under its new name
        await expect(stream, ("create", f"{w}/e/f", False))
        os.rename(outside / "tree", f"{w}/tree")  # moved in: watched, its contents not reported
        await expect(stream, ("move_to", f"{w}/tree", True))
        touch(f"{w}/tree/sub/g")
        await expect(stream, ("create", f"{w}/tree/sub/g", False))
        os.rename(f"{w}/e", outside / "e")  # moved out: no longer watched
        await expect(stream, ("move_from", f"{w}/e", True))
        touch(str(outside / "e" / "gone"))
        touch(f"{w}/sentinel")
        events = await expect(stream, ("create", f"{w}/sentinel", False))
        assert not any("gone" in path for _, path, _ in seen(events))
        await stream.aclose()


async def test_symlinks_in_the_tree_are_not_followed(watch_service: Factory, workspace: str, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    os.symlink(outside, f"{workspace}/link")
    async with watch_service() as registry:
        _, stream = await open_watch(registry, workspace)
        os.symlink(outside, f"{workspace}/link2")  # a new link: reported, not followed
        touch(str(outside / "x"))
        touch(f"{workspace}/sentinel")
        events = await expect(stream, ("create", f"{workspace}/sentinel", False))
        assert ("create", f"{workspace}/link2", False) in seen(events)
        assert not any(
            p.startswith(f"{workspace}/link") and p.count("/") > workspace.count("/") + 1 for _, p, _ in seen(events)
        )
        assert service(registry).by_id[next(iter(service(registry).by_id))].info().directories == 1
        await stream.aclose()


async def test_slow_subscriber_overflows_alone(watch_service: Factory, workspace: str) -> None:
    limit = 50
    async with watch_service(max_pending_events=limit, coalesce_ms=10) as registry:
        slow_first, slow = await open_watch(registry, workspace, events=["create"])
        fast_first, fast = await open_watch(registry, workspace, events=["create"])
        assert slow_first.watch_id == fast_first.watch_id
        watcher = service(registry).by_id[slow_first.watch_id]
        for batch in range(6):  # 180 changes, 30 at a time: the fast one keeps up, the slow one reads none
            names = [f"{workspace}/b{batch}-{i}" for i in range(30)]
            for name in names:
                touch(name)
            await expect(fast, *[("create", name, False) for name in names])
            assert all(len(sub.pending) <= limit for sub in watcher.subscribers)  # memory stays bounded
        events = await until(slow, lambda evs: isinstance(evs[-1], WatchErrorEvent))
        assert len(events) == limit + 1
        error = events[-1]
        assert "fell behind" in error.error and "dropped" in error.error
        assert [e async for e in slow] == []  # the slow one's stream has ended
        touch(f"{workspace}/after")  # the fast one goes on
        await expect(fast, ("create", f"{workspace}/after", False))
        assert len(watcher.subscribers) == 1
        await fast.aclose()


async def test_inotify_queue_overflow_is_reported(watch_service: Factory, workspace: str) -> None:
    queued = read_int("/proc/sys/fs/inotify/max_queued_events")
    if queued > 100_000:
        pytest.skip(f"fs.inotify.max_queued_events is {queued}: too many files to overflow it")
    # subscribers that may hold every event: what they see is the kernel's overflow
    async with watch_service(max_pending_events=2 * queued) as registry:
        first, stream = await open_watch(registry, workspace, events=["create"])
        check = await registry.call("watch", "check_changes", {"path": workspace, "events": ["create"]})
        assert isinstance(check, CheckChangesResult)
        for i in range(queued + 10):  # the loop is blocked: the kernel queue fills up and overflows
            os.close(os.open(f"{workspace}/{i}", os.O_CREAT | os.O_RDONLY))
        events = await until(stream, lambda evs: isinstance(evs[-1], (WatchErrorEvent, WatchStoppedEvent)))
        assert isinstance(events[-1], WatchErrorEvent) and "overflow" in events[-1].error, events[-1]
        assert first.watch_id not in service(registry).by_id
        # the change state is gone with it: a check asks for a resync
        after = await registry.call(
            "watch", "check_changes", {"path": workspace, "events": ["create"], "since": check.version}
        )
        assert isinstance(after, CheckChangesResult) and (after.status, after.reason) == ("resync", "expired")


async def test_identical_requests_share_and_last_one_out_stops(watch_service: Factory, workspace: str) -> None:
    async with watch_service() as registry:
        a, sa = await open_watch(registry, workspace, exclude=["x", "y"])
        b, sb = await open_watch(registry, workspace + "/.", exclude=["y", "x", "y"])  # the same, normalised
        c, sc = await open_watch(registry, workspace, exclude=["x"])
        assert a.watch_id == b.watch_id != c.watch_id
        svc = service(registry)
        assert svc.by_id[a.watch_id].info().subscribers == 2
        await sa.aclose()
        assert a.watch_id in svc.by_id
        await sb.aclose()
        assert a.watch_id not in svc.by_id
        await sc.aclose()
        assert svc.by_id == {}


async def test_a_cancelled_reader_leaves(watch_service: Factory, workspace: str) -> None:
    async with watch_service() as registry:
        first, stream = await open_watch(registry, workspace)

        async def read() -> None:
            async with contextlib.aclosing(stream):
                async for _ in stream:
                    pass

        task = asyncio.create_task(read())
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert first.watch_id not in service(registry).by_id


async def test_watcher_bound_evicts_idle_retained_then_refuses(watch_service: Factory, workspace: str) -> None:
    for name in "abc":
        os.mkdir(f"{workspace}/{name}")
    async with watch_service(max_watchers=2) as registry:
        kept = await registry.call("watch", "check_changes", {"path": "a"})  # retained, idle
        assert isinstance(kept, CheckChangesResult)
        _, sb = await open_watch(registry, "b")
        _, sc = await open_watch(registry, "c")  # evicts the idle retained one
        after = await registry.call("watch", "check_changes", {"path": "b", "since": kept.version})
        assert isinstance(after, CheckChangesResult) and (after.status, after.reason) == ("resync", "expired")
        with pytest.raises(SandboxError) as info:
            await open_watch(registry, "a")
        assert (info.value.code, info.value.status) == ("RESOURCE_BUSY", 409)
        await sb.aclose()
        await sc.aclose()


async def test_directory_bound(watch_service: Factory, workspace: str) -> None:
    """Past ``max_directories`` a watch is refused with 400 naming the path, the limit and the
    setting (a request too large for the setting, not a server failure); one that grows past
    it later ends with an ``error`` event."""
    os.makedirs(f"{workspace}/big/1/2/3/4")
    os.makedirs(f"{workspace}/small/1")
    async with watch_service(max_directories=3) as registry:
        with pytest.raises(SandboxError) as info:
            await open_watch(registry, "big")
        assert (info.value.code, info.value.status) == ("VALIDATION_FAILED", 400)
        assert "services.watch.max_directories" in info.value.message
        assert info.value.details == {
            "field": "path",
            "path": f"{workspace}/big",
            "limit": 3,
            "setting": "services.watch.max_directories",
        }
        assert service(registry).by_id == {} and service(registry).budget.used == 0
        _, stream = await open_watch(registry, "small")
        os.makedirs(f"{workspace}/small/a/b")
        events = await until(stream, lambda evs: isinstance(evs[-1], WatchErrorEvent))
        assert "max_directories" in events[-1].error


async def test_total_directory_bound_across_watches(watch_service: Factory, workspace: str) -> None:
    """``max_total_directories`` bounds the directories of all watches together: different
    watches of one tree each count (identical ones share a watcher and count once); past the
    bound a new watch is 409 RESOURCE_BUSY naming the limit and the setting, and holds nothing;
    what a watch held is free again when it ends; a watch that grows past the bound ends with
    an ``error`` event."""
    for i in range(4):
        os.makedirs(f"{workspace}/tree/{i}")  # 5 directories
    async with watch_service(max_total_directories=12) as registry:
        svc = service(registry)
        _, creates = await open_watch(registry, "tree", events=["create"])
        _, same = await open_watch(registry, "tree", events=["create"])  # shares the watcher
        _, deletes = await open_watch(registry, "tree", events=["delete"])
        assert svc.budget.used == 10 == sum(len(w.dirs) for w in svc.by_id.values())
        with pytest.raises(SandboxError) as info:
            await open_watch(registry, "tree", events=["modify"])
        assert (info.value.code, info.value.status) == ("RESOURCE_BUSY", 409)
        assert "services.watch.max_total_directories" in info.value.message
        assert info.value.details == {
            "path": f"{workspace}/tree",
            "limit": 12,
            "setting": "services.watch.max_total_directories",
            "heldByOtherWatches": 10,
        }
        assert svc.budget.used == 10 and len(svc.by_id) == 2  # the refused watch holds nothing
        await deletes.aclose()
        assert svc.budget.used == 5
        _, modifies = await open_watch(registry, "tree", events=["modify"], recursive=False)
        assert svc.budget.used == 6
        for name in "abcdefg":  # the create watch would grow to 12 directories: 13 in all
            os.mkdir(f"{workspace}/tree/{name}")
        events = await until(creates, lambda evs: isinstance(evs[-1], WatchErrorEvent))
        assert "services.watch.max_total_directories" in events[-1].error
        await until(same, lambda evs: isinstance(evs[-1], WatchErrorEvent))
        assert svc.budget.used == sum(len(w.dirs) for w in svc.by_id.values()) == 1
        await modifies.aclose()
        assert svc.budget.used == 0


async def test_setup_timeout(watch_service: Factory, workspace: str) -> None:
    for i in range(3000):
        os.makedirs(f"{workspace}/t/{i}")
    async with watch_service(setup_timeout_ms=1) as registry:
        with pytest.raises(SandboxError) as info:
            await open_watch(registry, "t")
        assert info.value.code == "WATCH_START_ERROR" and "Timed out" in info.value.message
        assert service(registry).by_id == {}


async def test_retained_state_expires_when_idle(watch_service: Factory, workspace: str) -> None:
    async with watch_service(retain_idle_ms=200) as registry:
        svc = service(registry)
        first = await registry.call("watch", "check_changes", {"path": workspace})
        assert isinstance(first, CheckChangesResult)
        watch_id = first.version.rsplit(":", 1)[0]
        # a subscriber keeps it alive however long, and so does its leaving until the idle time passes
        _, stream = await open_watch(registry, workspace)
        await asyncio.sleep(0.6)
        assert watch_id in svc.by_id and svc.by_id[watch_id].info().retained
        await stream.aclose()
        assert watch_id in svc.by_id
        await eventually(lambda: watch_id not in svc.by_id)
        after = await registry.call("watch", "check_changes", {"path": workspace, "since": first.version})
        assert isinstance(after, CheckChangesResult) and (after.status, after.reason) == ("resync", "expired")
        assert not after.version.startswith(watch_id + ":")


async def test_watch_of_a_deleted_directory_stops(watch_service: Factory, workspace: str) -> None:
    os.mkdir(f"{workspace}/gone")
    async with watch_service() as registry:
        _, stream = await open_watch(registry, "gone")
        os.rmdir(f"{workspace}/gone")
        events = await until(stream, lambda evs: isinstance(evs[-1], (WatchStoppedEvent, WatchErrorEvent)))
        assert isinstance(events[-1], WatchStoppedEvent)
        assert service(registry).by_id == {}


async def test_shutdown_stops_every_watch(watch_service: Factory, workspace: str) -> None:
    async with watch_service() as registry:
        _, stream = await open_watch(registry, workspace)
    events = await asyncio.wait_for(until(stream, lambda evs: bool(evs)), SAFETY_S)
    assert events == [WatchStoppedEvent(reason="The server is shutting down")]
    await stream.aclose()


async def test_confinement_in_process(watch_service: Factory, workspace: str, tmp_path: Path) -> None:
    os.symlink(tmp_path, f"{workspace}/up")
    os.symlink("..", f"{workspace}/dotdot")
    async with watch_service() as registry:
        for path in ("/", "..", f"{workspace}/../x", "up", "dotdot", "dotdot/x", "up/missing"):
            with pytest.raises(SandboxError) as info:
                await open_watch(registry, path)
            assert (info.value.code, info.value.status) == ("PERMISSION_DENIED", 403), path
        assert service(registry).by_id == {}
