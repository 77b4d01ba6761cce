"""Conformance of the files service: read, write, streams, listing, paths and error codes.

Each test works in its own ``/tmp/conformance-files-<uuid>`` directory (the ``scratch``
fixture), checked through the server's shell where the filesystem itself is the answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import SESSIONLESS, MakeSleeper, SleeperFixture, collect, joined, sid
from sandbox_core.contract.models.files import FileChunkEvent, FileCompleteEvent, FileErrorEvent, FileMetadataEvent
from sandbox_core.errors import FileNotFound, FileSystemError, SandboxError, ValidationFailed


async def sh(sandbox: Sandbox, command: str, session_id: str = SESSIONLESS) -> str:
    """Run a command on the server (no session state) and return its stdout; it must succeed."""
    result = await sandbox.exec(command, session_id=session_id, timeout_ms=30_000)
    assert result.exit_code == 0, result
    return result.stdout.rstrip("\n")


async def sh_exact(sandbox: Sandbox, command: str) -> str:
    """Run a command on the server (no session state) and return its stdout exactly; it must succeed."""
    result = await sandbox.exec(command, session_id=SESSIONLESS, timeout_ms=30_000)
    assert result.exit_code == 0, result
    return result.stdout


async def server_memory(sandbox: Sandbox, *, reset: bool = False) -> tuple[int, int]:
    """The server's ``(VmRSS, VmHWM)`` in bytes, read in the sandbox (a sessionless command's
    parent is the server); ``reset`` first resets its peak to its RSS where the kernel allows."""
    prefix = "echo 5 > /proc/$PPID/clear_refs 2>/dev/null; " if reset else ""
    out = await sh_exact(sandbox, f"{prefix}grep -E '^(VmRSS|VmHWM):' /proc/$PPID/status")
    figures = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in out.splitlines()}
    return figures["VmRSS"], figures["VmHWM"]


async def fails(coro: Any, code: str, status: int) -> SandboxError:
    with pytest.raises(SandboxError) as info:
        await coro
    assert (info.value.code, info.value.status) == (code, status), info.value
    return info.value


class FilesSuite(SleeperFixture):
    @pytest.fixture
    async def scratch(self, sandbox: Sandbox) -> AsyncIterator[str]:
        path = f"/tmp/conformance-files-{uuid.uuid4().hex}"
        await sandbox.files.mkdir(path, recursive=True)
        try:
            yield path
        finally:
            await sandbox.exec(f"chmod -R u+rwx '{path}' 2>/dev/null; rm -rf '{path}'", session_id=SESSIONLESS)

    # ---- read and write --------------------------------------------------------------------

    async def test_text_round_trip(self, sandbox: Sandbox, scratch: str) -> None:
        text = "héllo ✓ 日本\n$HOME `x` 'q' \"d\"\nlast"
        path = f"{scratch}/t.txt"
        written = await sandbox.files.write(path, text)
        assert written.success and written.path == path and written.timestamp.endswith("Z")
        assert await sh(sandbox, f"cat '{path}'") == text
        read = await sandbox.files.read(path)
        assert (read.content, read.encoding, read.is_binary, read.path) == (text, "utf-8", False, path)
        assert read.mime_type.startswith("text/plain") and read.size == len(text.encode())

    async def test_binary_round_trip(self, sandbox: Sandbox, scratch: str) -> None:
        data = bytes(range(256)) * 40 + os.urandom(1001)
        path = f"{scratch}/b.bin"
        await sandbox.files.write(path, data)  # bytes go as base64
        assert int(await sh(sandbox, f"stat -c %s '{path}'")) == len(data)
        read = await sandbox.files.read(path)
        assert (read.encoding, read.is_binary, read.size) == ("base64", True, len(data))
        assert base64.b64decode(read.content) == data

    async def test_explicit_encodings(self, sandbox: Sandbox, scratch: str) -> None:
        path = f"{scratch}/e.txt"
        await sandbox.files.write(path, base64.b64encode("ünï".encode()).decode(), encoding="base64")
        as_b64 = await sandbox.files.read(path, encoding="base64")
        assert (as_b64.encoding, as_b64.is_binary) == ("base64", True)
        assert base64.b64decode(as_b64.content).decode() == "ünï"
        await sandbox.files.write(path, "plain", encoding="utf8")
        as_text = await sandbox.files.read(path, encoding="utf-8")
        assert (as_text.content, as_text.encoding) == ("plain", "utf-8")

    async def test_type_of_files_without_known_extension(self, sandbox: Sandbox, scratch: str) -> None:
        await sandbox.files.write(f"{scratch}/notes", "just text\n")
        await sandbox.files.write(f"{scratch}/blob", b"\x7fELF\x00\x01\x02")
        await sandbox.files.write(f"{scratch}/empty", "")
        assert (await sandbox.files.read(f"{scratch}/notes")).content == "just text\n"
        blob = await sandbox.files.read(f"{scratch}/blob")
        assert blob.is_binary and base64.b64decode(blob.content) == b"\x7fELF\x00\x01\x02"
        empty = await sandbox.files.read(f"{scratch}/empty")
        assert (empty.content, empty.is_binary, empty.size) == ("", False, 0)

    async def test_write_creates_parents(self, sandbox: Sandbox, scratch: str) -> None:
        await sandbox.files.write(f"{scratch}/a/b/c/d.txt", "deep")
        assert await sh(sandbox, f"cat '{scratch}/a/b/c/d.txt'") == "deep"

    async def test_write_is_atomic_and_keeps_mode(self, sandbox: Sandbox, scratch: str) -> None:
        path = f"{scratch}/run.sh"
        await sandbox.files.write(path, "#!/bin/sh\necho v1\n")
        await sh(sandbox, f"chmod 0755 '{path}'")
        inode = await sh(sandbox, f"stat -c %i '{path}'")
        await sandbox.files.write(path, "#!/bin/sh\necho v2\n")
        assert await sh(sandbox, f"stat -c %a '{path}'") == "755"
        assert await sh(sandbox, f"'{path}'") == "v2"
        assert await sh(sandbox, f"stat -c %i '{path}'") != inode  # replaced by rename, not rewritten
        assert await sh(sandbox, f"ls -A '{scratch}'") == "run.sh"  # no temp file left behind

    async def test_write_through_a_symlink_keeps_the_link(self, sandbox: Sandbox, scratch: str) -> None:
        await sandbox.files.write(f"{scratch}/target.txt", "old")
        await sh(sandbox, f"ln -s target.txt '{scratch}/link.txt'")
        await sandbox.files.write(f"{scratch}/link.txt", "new")
        assert await sh(sandbox, f"readlink '{scratch}/link.txt'") == "target.txt"
        assert await sh(sandbox, f"cat '{scratch}/target.txt'") == "new"

    # ---- paths relative to a session -------------------------------------------------------

    async def test_relative_paths_follow_the_session_cwd(self, sandbox: Sandbox, scratch: str) -> None:
        s = sid("files")
        await sandbox.exec(f"mkdir -p '{scratch}/here' && cd '{scratch}/here'", session_id=s)
        await sandbox.files.write("rel.txt", "relative", session_id=s)
        assert (await sandbox.exec("cat rel.txt", session_id=s)).stdout == "relative"
        assert (await sandbox.files.read("rel.txt", session_id=s)).content == "relative"
        assert (await sandbox.files.exists("rel.txt", session_id=s)).exists
        listing = await sandbox.files.list(".", session_id=s)
        assert [f.absolute_path for f in listing.files] == [f"{scratch}/here/rel.txt"]
        await sandbox.files.mkdir("sub", session_id=s)
        await sandbox.files.rename("rel.txt", "sub/moved.txt", session_id=s)
        assert await sh(sandbox, f"cat '{scratch}/here/sub/moved.txt'") == "relative"
        await sandbox.exec("cd sub", session_id=s)
        assert (await sandbox.files.read("moved.txt", session_id=s)).content == "relative"
        await sandbox.files.delete("moved.txt", session_id=s)
        assert not (await sandbox.files.exists(f"{scratch}/here/sub/moved.txt")).exists

    async def test_file_operations_do_not_wait_for_a_running_command(
        self, sandbox: Sandbox, scratch: str, sleepers: MakeSleeper
    ) -> None:
        s = sid("busy")
        await sandbox.exec(f"cd '{scratch}'", session_id=s)
        sleeper = sleepers()
        running = asyncio.ensure_future(sandbox.exec(sleeper.command, session_id=s, timeout_ms=120_000))
        try:
            pid = await sleeper.started(sandbox)
            await sandbox.files.write("during.txt", "written while busy", session_id=s)
            assert (await sandbox.files.read("during.txt", session_id=s)).content == "written while busy"
            assert (await sandbox.files.exists("during.txt", session_id=s)).exists
            assert [f.name for f in (await sandbox.files.list(".", session_id=s)).files] == ["during.txt"]
            assert await sleeper.running(sandbox, pid)  # the foreground command was still running throughout
            assert not running.done()
            assert await sh(sandbox, f"cat '{scratch}/during.txt'") == "written while busy"
        finally:
            await sleeper.cleanup(sandbox)  # ends the foreground command
            with contextlib.suppress(SandboxError):
                await running

    # ---- delete, rename, move, mkdir, exists ----------------------------------------------

    async def test_delete(self, sandbox: Sandbox, scratch: str) -> None:
        path = f"{scratch}/gone.txt"
        await sandbox.files.write(path, "x")
        deleted = await sandbox.files.delete(path)
        assert deleted.success and deleted.path == path
        assert not (await sandbox.files.exists(path)).exists
        missing = await fails(sandbox.files.delete(path), "FILE_NOT_FOUND", 404)
        assert isinstance(missing, FileNotFound) and missing.details["path"] == path
        await sandbox.files.mkdir(f"{scratch}/dir")
        is_dir = await fails(sandbox.files.delete(f"{scratch}/dir"), "IS_DIRECTORY", 400)
        assert isinstance(is_dir, FileSystemError)
        await sh(sandbox, f"ln -s dir '{scratch}/dirlink'")
        await sandbox.files.delete(f"{scratch}/dirlink")  # the link goes, the directory stays
        assert await sh(sandbox, f"ls -A '{scratch}'") == "dir"

    async def test_delete_recursive_option(self, sandbox: Sandbox, scratch: str) -> None:
        """Ours: ``recursive`` false deletes an empty directory (a non-empty one is 409 naming
        it), true a whole tree, its symlinks removed and never followed."""
        await sh(sandbox, f"mkdir -p '{scratch}/empty' '{scratch}/full/sub' '{scratch}/keep'")
        await sh(sandbox, f"echo k > '{scratch}/keep/k'; echo x > '{scratch}/full/sub/x'")
        await sh(sandbox, f"ln -s '{scratch}/keep' '{scratch}/full/link'")
        assert (await sandbox.files.delete(f"{scratch}/empty", recursive=False)).success
        conflict = await fails(sandbox.files.delete(f"{scratch}/full", recursive=False), "FILE_EXISTS", 409)
        assert conflict.details["path"] == f"{scratch}/full"
        assert (await sandbox.files.delete(f"{scratch}/full", recursive=True)).success
        assert await sh(sandbox, f"ls -A '{scratch}'; cat '{scratch}/keep/k'") == "keep\nk"
        await fails(sandbox.files.delete(f"{scratch}/full", recursive=True), "FILE_NOT_FOUND", 404)
        await sandbox.files.write(f"{scratch}/f.txt", "x")
        assert (await sandbox.files.delete(f"{scratch}/f.txt", recursive=True)).success  # a file is a file
        refused = await fails(sandbox.files.delete("/", recursive=True), "VALIDATION_FAILED", 400)
        assert refused.details["field"] == "path"
        bad = await fails(
            sandbox.call("files", "delete", path=f"{scratch}/keep", recursive="yes"), "VALIDATION_FAILED", 400
        )
        assert bad.details["field"] == "recursive"

    async def test_confine_option(self, sandbox: Sandbox, scratch: str) -> None:
        """Ours: ``files.confine`` takes a path inside the workspace; outside (``..``, a symlink) is 403."""
        root = await sh(sandbox, "pwd")  # a sessionless command runs in the workspace
        assert await sandbox.files.confine("a/b") == f"{root}/a/b"
        assert await sandbox.files.confine("/etc/passwd") == f"{root}/etc/passwd"
        link = f"link-{uuid.uuid4().hex}"
        await sh(sandbox, f"ln -s '{scratch}' '{root}/{link}'")
        try:
            for path in ("../x", f"{link}/x", link):
                with pytest.raises(SandboxError) as info:
                    await sandbox.files.confine(path, field="cwd")
                assert (info.value.code, info.value.status) == ("PERMISSION_DENIED", 403)
                assert (info.value.details["path"], info.value.details["field"]) == (path, "cwd")
        finally:
            await sh(sandbox, f"rm -f '{root}/{link}'")

    async def test_write_mode_option(self, sandbox: Sandbox, scratch: str) -> None:
        """Ours: ``mode`` sets the permission bits of a new or overwritten file; a bad one is 400 naming it."""
        path = f"{scratch}/m.sh"
        await sandbox.files.write(path, "#!/bin/sh\necho hi\n", mode="0750")
        assert await sh(sandbox, f"stat -c %a '{path}'; '{path}'") == "750\nhi"
        await sandbox.files.write(path, "x", mode=0o604)  # a number; overwriting changes it
        assert await sh(sandbox, f"stat -c %a '{path}'") == "604"
        await sandbox.files.write(path, "y")  # without: kept
        assert await sh(sandbox, f"stat -c %a '{path}'") == "604"
        for bad in ("0x644", "9", "0888", "rw-r--r--", 0o10000, -1, 1.5, True):
            error = await fails(
                sandbox.call("files", "write", path=path, content="z", mode=bad), "VALIDATION_FAILED", 400
            )
            assert error.details["field"] == "mode", (bad, error)
        assert await sh(sandbox, f"cat '{path}'; stat -c %a '{path}'") == "y604"

    async def test_rename_and_move(self, sandbox: Sandbox, scratch: str) -> None:
        await sandbox.files.write(f"{scratch}/a.txt", "A")
        renamed = await sandbox.files.rename(f"{scratch}/a.txt", f"{scratch}/b.txt")
        assert (renamed.success, renamed.path, renamed.new_path) == (True, f"{scratch}/a.txt", f"{scratch}/b.txt")
        await sandbox.files.mkdir(f"{scratch}/into")
        moved = await sandbox.files.move(f"{scratch}/b.txt", f"{scratch}/into")
        assert (moved.path, moved.new_path) == (f"{scratch}/b.txt", f"{scratch}/into")
        assert await sh(sandbox, f"cat '{scratch}/into/b.txt'") == "A"  # mv semantics: into the directory
        await sandbox.files.write(f"{scratch}/c.txt", "C")
        await sandbox.files.move(f"{scratch}/c.txt", f"{scratch}/into/b.txt")  # replaces a file
        assert await sh(sandbox, f"cat '{scratch}/into/b.txt'") == "C"
        await sandbox.files.move(f"{scratch}/into", f"{scratch}/renamed-dir")  # directories move too
        assert await sh(sandbox, f"ls '{scratch}/renamed-dir'") == "b.txt"
        await fails(sandbox.files.rename(f"{scratch}/nope", f"{scratch}/x"), "FILE_NOT_FOUND", 404)
        await fails(sandbox.files.move(f"{scratch}/nope", f"{scratch}/x"), "FILE_NOT_FOUND", 404)
        await fails(
            sandbox.files.rename(f"{scratch}/renamed-dir/b.txt", f"{scratch}/no/such/dir/b.txt"), "FILE_NOT_FOUND", 404
        )

    async def test_mkdir(self, sandbox: Sandbox, scratch: str) -> None:
        made = await sandbox.files.mkdir(f"{scratch}/one")
        assert (made.success, made.path, made.recursive) == (True, f"{scratch}/one", False)
        nested = await sandbox.files.mkdir(f"{scratch}/x/y/z", recursive=True)
        assert nested.recursive is True
        assert await sh(sandbox, f"test -d '{scratch}/x/y/z' && echo yes") == "yes"
        await sandbox.files.mkdir(f"{scratch}/x/y/z", recursive=True)  # existing is fine when recursive
        await fails(sandbox.files.mkdir(f"{scratch}/one"), "FILE_EXISTS", 409)
        error = await fails(sandbox.files.mkdir(f"{scratch}/missing/child"), "FILESYSTEM_ERROR", 500)
        assert error.details["path"] == f"{scratch}/missing/child"
        await sandbox.files.write(f"{scratch}/file", "f")
        await fails(sandbox.files.mkdir(f"{scratch}/file/sub", recursive=True), "NOT_DIRECTORY", 400)

    async def test_exists(self, sandbox: Sandbox, scratch: str) -> None:
        await sandbox.files.write(f"{scratch}/f", "x")
        await sh(sandbox, f"ln -s nowhere '{scratch}/broken'")
        result = await sandbox.files.exists(f"{scratch}/f")
        assert (result.success, result.path, result.exists) == (True, f"{scratch}/f", True)
        assert (await sandbox.files.exists(scratch)).exists
        assert not (await sandbox.files.exists(f"{scratch}/missing")).exists
        assert not (await sandbox.files.exists(f"{scratch}/broken")).exists  # as `test -e`

    # ---- listing ---------------------------------------------------------------------------

    async def test_list_files(self, sandbox: Sandbox, scratch: str) -> None:
        await sh(
            sandbox,
            f"cd '{scratch}' && mkdir -p sub/deeper .hdir && printf ab > a.txt && echo h > .hidden"
            " && echo i > .hdir/inner.txt && echo b > sub/b.txt && echo c > sub/deeper/c.txt"
            " && ln -s a.txt link && chmod 640 a.txt && chmod 751 sub"
            " && touch -h -d '2020-01-02T03:04:05.25Z' a.txt",
        )
        listing = await sandbox.files.list(scratch)
        assert listing.success and listing.path == scratch and listing.count == len(listing.files)
        assert listing.truncated is False  # under the server's max_list_entries
        by_name = {f.name: f for f in listing.files}
        assert set(by_name) == {"a.txt", "sub", "link"}
        a = by_name["a.txt"]
        assert (a.type, a.size, a.mode, a.absolute_path, a.relative_path) == (
            "file",
            2,
            "rw-r-----",
            f"{scratch}/a.txt",
            "a.txt",
        )
        assert (a.permissions.readable, a.permissions.writable, a.permissions.executable) == (True, True, False)
        modified = dt.datetime.fromisoformat(a.modified_at.replace("Z", "+00:00"))
        assert modified.tzinfo is not None  # upstream sends no time zone
        assert modified == dt.datetime(2020, 1, 2, 3, 4, 5, 250000, tzinfo=dt.UTC)
        assert (by_name["sub"].type, by_name["sub"].mode, by_name["sub"].permissions.executable) == (
            "directory",
            "rwxr-x--x",
            True,
        )
        assert by_name["link"].type == "symlink"

        hidden = await sandbox.files.list(scratch, include_hidden=True)
        assert {f.name for f in hidden.files} == {"a.txt", "sub", "link", ".hidden", ".hdir"}
        tree = await sandbox.files.list(scratch, recursive=True)
        assert {f.relative_path for f in tree.files} == {
            "a.txt",
            "sub",
            "sub/b.txt",
            "sub/deeper",
            "sub/deeper/c.txt",
            "link",
        }
        assert tree.count == 6
        everything = await sandbox.files.list(scratch, recursive=True, include_hidden=True)
        assert {f.relative_path for f in everything.files} >= {".hdir", ".hdir/inner.txt", ".hidden"}
        inner = next(f for f in everything.files if f.relative_path == ".hdir/inner.txt")
        assert (inner.name, inner.absolute_path) == ("inner.txt", f"{scratch}/.hdir/inner.txt")

    async def test_list_files_errors(self, sandbox: Sandbox, scratch: str) -> None:
        await fails(sandbox.files.list(f"{scratch}/missing"), "FILE_NOT_FOUND", 404)
        await sandbox.files.write(f"{scratch}/file", "x")
        await fails(sandbox.files.list(f"{scratch}/file"), "NOT_DIRECTORY", 400)
        empty = await sandbox.files.list(scratch + "/", recursive=True)
        assert [f.relative_path for f in empty.files] == ["file"]

    # ---- read stream -----------------------------------------------------------------------

    async def test_read_stream_binary_reassembles_exactly(self, sandbox: Sandbox, scratch: str) -> None:
        data = os.urandom(150_000)
        path = f"{scratch}/stream.bin"
        await sandbox.files.write(path, data)
        events = await collect(sandbox.files.read_stream(path))
        meta, *middle, done = events
        assert isinstance(meta, FileMetadataEvent) and isinstance(done, FileCompleteEvent)
        assert (meta.is_binary, meta.encoding, meta.size) == (True, "base64", 150_000)
        chunks = [c for c in middle if isinstance(c, FileChunkEvent)]
        assert [len(c.data) for c in chunks] == [87380, 87380, 25240]  # 65 535 raw bytes per chunk
        assert len(chunks) == len(middle)  # nothing but chunks between metadata and complete
        assert b"".join(base64.b64decode(c.data) for c in chunks) == data
        assert done.bytes_read == 150_000

    async def test_read_stream_text_splits_characters_safely(self, sandbox: Sandbox, scratch: str) -> None:
        text = "aé✓" * 30_000  # 6 bytes per repeat: chunk boundaries fall inside characters
        path = f"{scratch}/stream.txt"
        await sandbox.files.write(path, text)
        events = await collect(sandbox.files.read_stream(path))
        assert isinstance(events[0], FileMetadataEvent) and not events[0].is_binary
        assert events[0].encoding == "utf-8"
        assert "".join(e.data for e in events if isinstance(e, FileChunkEvent)) == text
        assert isinstance(events[-1], FileCompleteEvent) and events[-1].bytes_read == len(text.encode())

    async def test_read_stream_of_an_empty_file(self, sandbox: Sandbox, scratch: str) -> None:
        await sandbox.files.write(f"{scratch}/empty.txt", "")
        events = await collect(sandbox.files.read_stream(f"{scratch}/empty.txt"))
        assert [type(e) for e in events] == [FileMetadataEvent, FileCompleteEvent]
        assert isinstance(events[-1], FileCompleteEvent) and events[-1].bytes_read == 0

    async def test_read_stream_errors_are_in_band(self, sandbox: Sandbox, scratch: str) -> None:
        events = await collect(sandbox.files.read_stream(f"{scratch}/missing.bin"))
        assert len(events) == 1 and isinstance(events[0], FileErrorEvent)
        assert "not found" in events[0].error.lower()
        events = await collect(sandbox.files.read_stream(scratch))
        assert len(events) == 1 and isinstance(events[0], FileErrorEvent)

    # ---- ranged and tail reads (ours) ------------------------------------------------------

    async def test_ranged_reads(self, sandbox: Sandbox, scratch: str) -> None:
        """``offset`` and ``length`` read that range (the answer says which bytes it holds);
        a negative offset counts from the end, a length past the end is clipped."""
        text = "".join(f"{i:04d}\n" for i in range(1000))  # 5 000 bytes, 5 per line
        path = f"{scratch}/r.txt"
        await sandbox.files.write(path, text)
        size = len(text)
        cases = [  # (offset, length) -> (start, end)
            ((0, 10), (0, 10)),  # the start
            ((2500, 15), (2500, 2515)),  # the middle
            ((size - 5, 5), (size - 5, size)),  # the end
            ((-10, None), (size - 10, size)),  # from the end
            ((-10, 3), (size - 10, size - 7)),
            ((-(size + 100), 4), (0, 4)),  # before the start: from the first byte
            ((4990, 1000), (4990, size)),  # past the end: clipped
            ((size, None), (size, size)),  # at the end: nothing
            ((None, 7), (0, 7)),
            ((123, 0), (123, 123)),
        ]
        for (offset, length), (start, end) in cases:
            read = await sandbox.files.read(path, offset=offset, length=length)
            assert (read.content, read.encoding) == (text[start:end], "utf-8"), (offset, length)
            assert (read.offset, read.length, read.total_size, read.size) == (start, end - start, size, end - start)
            events = await collect(sandbox.files.read_stream(path, offset=offset, length=length))
            meta, done = events[0], events[-1]
            assert isinstance(meta, FileMetadataEvent) and isinstance(done, FileCompleteEvent)
            assert (meta.offset, meta.length, meta.total_size, meta.size) == (start, end - start, size, size)
            assert joined(events, FileChunkEvent) == text[start:end] and done.bytes_read == end - start
        whole = await sandbox.files.read(path)  # a whole read has the contract's shape
        assert (whole.offset, whole.length, whole.total_size, whole.size) == (None, None, None, size)
        events = await collect(sandbox.files.read_stream(path))
        assert isinstance(events[0], FileMetadataEvent) and events[0].offset is None

    async def test_range_and_tail_options_refused_name_the_field(self, sandbox: Sandbox, scratch: str) -> None:
        path = f"{scratch}/r.txt"
        await sandbox.files.write(path, "abc\n")
        refused: list[tuple[dict[str, Any], str]] = [
            ({"offset": 5}, "offset"),  # past the end
            ({"offset": 2**62}, "offset"),
            ({"offset": 2**63}, "offset"),  # out of range
            ({"offset": -(2**63)}, "offset"),
            ({"tail_lines": 2**63}, "tailLines"),
            ({"length": -1}, "length"),
            ({"tail_lines": -1}, "tailLines"),
            ({"offset": 0, "tail_lines": 2}, "offset"),  # a tail has no offset
            ({"length": 2, "tail_lines": 2}, "length"),
        ]
        for kwargs, field in refused:
            error = await fails(sandbox.files.read(path, **kwargs), "VALIDATION_FAILED", 400)
            assert error.details.get("field") == field, (kwargs, error)
            error = await fails(collect(sandbox.files.read_stream(path, **kwargs)), "VALIDATION_FAILED", 400)
            assert error.details.get("field") == field, (kwargs, error)
        assert (await sandbox.files.read(path)).content == "abc\n"  # nothing else changed

    async def test_tail_lines(self, sandbox: Sandbox, scratch: str) -> None:
        """``tail_lines`` counts lines as ``tail -n`` does: a final newline ends the last line."""
        lines = [f"line {i} é" for i in range(1, 2001)]
        ended, unended, empty = f"{scratch}/ended.txt", f"{scratch}/unended.txt", f"{scratch}/empty.txt"
        await sandbox.files.write(ended, "\n".join(lines) + "\n")
        await sandbox.files.write(unended, "\n".join(lines))
        await sandbox.files.write(empty, "")
        for path, tail, n, expected in [
            (ended, "\n", 3, "line 1998 é\nline 1999 é\nline 2000 é\n"),
            (unended, "", 3, "line 1998 é\nline 1999 é\nline 2000 é"),
            (ended, "\n", 1, "line 2000 é\n"),
            (ended, "\n", 0, ""),
            (ended, "\n", 1500, "\n".join(lines[-1500:]) + "\n"),  # more than one block back
            (ended, "\n", 5000, "\n".join(lines) + "\n"),  # more lines than the file has: all of it
            (unended, "", 5000, "\n".join(lines)),
            (empty, "", 4, ""),
        ]:
            total = len(("\n".join(lines) + tail).encode()) if path != empty else 0
            read = await sandbox.files.read(path, tail_lines=n)
            assert read.content == expected, (path, n)
            assert (read.offset, read.length, read.total_size) == (
                total - len(expected.encode()),
                len(expected.encode()),
                total,
            )
            assert read.content == await sh_exact(sandbox, f"tail -n {n} '{path}'"), (path, n)
            events = await collect(sandbox.files.read_stream(path, tail_lines=n))
            assert joined(events, FileChunkEvent) == expected
            meta = events[0]
            assert isinstance(meta, FileMetadataEvent) and meta.offset == read.offset and meta.length == read.length
        one = f"{scratch}/one.txt"
        await sandbox.files.write(one, "\n")
        assert (await sandbox.files.read(one, tail_lines=1)).content == "\n"
        assert (await sandbox.files.read(one, tail_lines=2)).content == "\n"

    async def test_binary_ranges_are_exact_base64(self, sandbox: Sandbox, scratch: str) -> None:
        data = os.urandom(200_000)
        path = f"{scratch}/r.bin"
        await sandbox.files.write(path, data)
        for offset, length in [(0, 1), (1, 100_001), (-7, None), (199_999, 50), (70_000, 65_536)]:
            read = await sandbox.files.read(path, offset=offset, length=length)
            start = offset if offset >= 0 else len(data) + offset
            end = len(data) if length is None else min(len(data), start + length)
            assert (read.encoding, read.is_binary, read.offset, read.length) == ("base64", True, start, end - start)
            assert base64.b64decode(read.content) == data[start:end]
            events = await collect(sandbox.files.read_stream(path, offset=offset, length=length))
            assert isinstance(events[0], FileMetadataEvent) and events[0].is_binary
            chunks = [e.data for e in events if isinstance(e, FileChunkEvent)]
            assert b"".join(base64.b64decode(c) for c in chunks) == data[start:end]
        lines = b"\x00\xff bin\n" * 10
        await sandbox.files.write(f"{scratch}/lines.bin", lines)
        read = await sandbox.files.read(f"{scratch}/lines.bin", tail_lines=2)
        assert read.encoding == "base64" and base64.b64decode(read.content) == b"\x00\xff bin\n" * 2

    async def test_text_ranges_never_cut_a_character(self, sandbox: Sandbox, scratch: str) -> None:
        """A range read as text moves its edges to character boundaries (at most 3 bytes each):
        its start past a cut character, its end back before one (forward, when that would leave
        nothing). ``offset + length`` is the next page's start."""
        text = "aé日🙂b"  # 1, 2, 3 and 4 bytes
        raw = text.encode()
        path = f"{scratch}/u.txt"
        await sandbox.files.write(path, text)
        for (offset, length), (start, end) in [
            ((0, 2), (0, 1)),  # "a" and half of "é": the end moves back
            ((2, 3), (3, 6)),  # inside "é": the start moves on; "日" whole
            ((3, 1), (3, 6)),  # the first byte of "日": nothing whole, so the whole character
            ((4, 1), (6, 6)),  # a byte inside "日": nothing, from the character after it
            ((7, 100), (10, 11)),  # inside "🙂": the start moves past it
            ((6, 5), (6, 11)),  # "🙂b", to the end
            ((6, 3), (6, 10)),  # 3 of the 4 bytes of "🙂": the whole character
            ((5, 5), (6, 10)),  # both edges move
        ]:
            read = await sandbox.files.read(path, offset=offset, length=length)
            assert (read.content, read.offset, read.length) == (raw[start:end].decode(), start, end - start), (
                offset,
                length,
            )
            events = await collect(sandbox.files.read_stream(path, offset=offset, length=length))
            assert joined(events, FileChunkEvent) == raw[start:end].decode()
            exact = await sandbox.files.read(path, offset=offset, length=length, encoding="base64")
            wanted = raw[offset : offset + length]
            assert (base64.b64decode(exact.content), exact.offset, exact.length) == (wanted, offset, len(wanted))
        pages, at = [], 0  # paging a text file by offset + length reassembles it
        while at < len(raw):
            page = await sandbox.files.read(path, offset=at, length=3)
            assert page.offset is not None and page.length
            pages.append(page.content)
            at = page.offset + page.length
        assert "".join(pages) == text

    async def test_the_read_limit_applies_to_the_range_not_the_file(self, sandbox: Sandbox, scratch: str) -> None:
        """A 1 MiB range of a 10 GB file is read (a whole read is 413); a tail longer than the
        limit is 413, found without scanning the whole file (it has no newline at all)."""
        path = f"{scratch}/huge.bin"
        await sh(sandbox, f"truncate -s 10G '{path}' && printf 'end' >> '{path}'")  # sparse
        size = 10 * 1024**3 + 3
        await fails(sandbox.files.read(path), "FILE_TOO_LARGE", 413)
        mib = 1024 * 1024
        middle = await sandbox.files.read(path, offset=5 * 1024**3, length=mib, encoding="base64")
        assert (middle.offset, middle.length, middle.total_size) == (5 * 1024**3, mib, size)
        assert base64.b64decode(middle.content) == bytes(mib)
        last = await sandbox.files.read(path, offset=-5, encoding="base64")
        assert base64.b64decode(last.content) == b"\0\0end" and last.offset == size - 5
        error = await fails(sandbox.files.read(path, tail_lines=1), "FILE_TOO_LARGE", 413)
        assert isinstance(error, FileSystemError)
        await fails(sandbox.files.read(path, length=33 * mib), "FILE_TOO_LARGE", 413)  # the range itself is over

    async def test_ranged_and_tail_reads_of_a_large_file_keep_server_memory_flat(
        self, sandbox: Sandbox, scratch: str
    ) -> None:
        """A 100 MB file (over the 32 MiB read limit): a 1 MiB range, the tail, and a 40 MB
        range streamed, with the server's resident memory growing less than 20 MB. The limit
        applies to the bytes read, not the file (a whole read is still 413)."""
        path = f"{scratch}/big.log"
        line = "x" * 99 + "\n"
        await sh(sandbox, f"yes '{'x' * 99}' | head -c 100000000 > '{path}'")
        await fails(sandbox.files.read(path), "FILE_TOO_LARGE", 413)
        await sandbox.files.read(path, offset=-10, length=5)  # warm up the paths measured
        await collect(sandbox.files.read_stream(path, tail_lines=1))
        base, peak = await server_memory(sandbox, reset=True)
        exact = peak - base < 1024 * 1024  # the peak was reset: it is the true peak from here
        mib = 1024 * 1024
        middle = await sandbox.files.read(path, offset=50_000_000, length=mib)
        assert (middle.offset, middle.length, middle.total_size) == (50_000_000, mib, 100_000_000)
        assert middle.content == (line * (mib // 100 + 1))[:mib]
        tail = await sandbox.files.read(path, tail_lines=1000)
        assert tail.content == line * 1000 and tail.offset == 100_000_000 - 100_000
        last = await sandbox.files.read(path, offset=-mib)
        assert last.length == mib and last.content.endswith(line)
        got = 0
        async for event in sandbox.files.read_stream(path, offset=10_000_000, length=40_000_000):
            if isinstance(event, FileChunkEvent):
                got += len(event.data)
            assert not isinstance(event, FileErrorEvent), event
        assert got == 40_000_000
        tail_events = await collect(sandbox.files.read_stream(path, tail_lines=5000))
        assert joined(tail_events, FileChunkEvent) == line * 5000
        rss, peak = await server_memory(sandbox)
        grown = (peak if exact else rss) - base
        assert grown < 20 * 1024 * 1024, f"the server grew {grown / 1e6:.1f} MB (peak measured: {exact})"

    # ---- limits and error codes ------------------------------------------------------------

    async def test_file_too_large(self, sandbox: Sandbox, scratch: str) -> None:
        path = f"{scratch}/big.bin"
        await sh(sandbox, f"truncate -s 33M '{path}'")  # sparse: no 33 MiB written
        error = await fails(sandbox.files.read(path), "FILE_TOO_LARGE", 413)
        assert isinstance(error, FileSystemError)
        stream = sandbox.files.read_stream(path)  # the stream has no cap
        try:
            first = await stream.__anext__()
            assert isinstance(first, FileMetadataEvent) and first.size == 33 * 1024 * 1024
            assert isinstance(await stream.__anext__(), FileChunkEvent)
        finally:
            await stream.aclose()

    async def test_missing_file_and_directories(self, sandbox: Sandbox, scratch: str) -> None:
        error = await fails(sandbox.files.read(f"{scratch}/missing.txt"), "FILE_NOT_FOUND", 404)
        assert isinstance(error, FileNotFound)
        assert error.details == {"path": f"{scratch}/missing.txt", "operation": "file.read"}
        await fails(sandbox.files.read(scratch), "IS_DIRECTORY", 400)
        await fails(sandbox.files.write(scratch, "x"), "IS_DIRECTORY", 400)
        await sandbox.files.write(f"{scratch}/file", "x")
        await fails(sandbox.files.read(f"{scratch}/file/inner"), "NOT_DIRECTORY", 400)
        await fails(sandbox.files.write(f"{scratch}/file/inner", "x"), "NOT_DIRECTORY", 400)

    async def test_large_writes_round_trip_exactly(self, sandbox: Sandbox, scratch: str) -> None:
        """Content of hundreds of KiB (the server decodes it batch by batch into the file; under
        1 MiB of body: aiohttp warns of larger bodies sent as bytes)."""
        data = os.urandom(700 * 1024 + 7)
        await sandbox.files.write(f"{scratch}/big.bin", data)
        expected = hashlib.sha256(data).hexdigest()
        assert (await sh(sandbox, f"sha256sum '{scratch}/big.bin'")).split()[0] == expected
        text = ('line "quoted" \\ / é 日本 ✓\n' * 25_000) + "end"
        await sandbox.files.write(f"{scratch}/big.txt", text)
        expected = hashlib.sha256(text.encode()).hexdigest()
        assert (await sh(sandbox, f"sha256sum '{scratch}/big.txt'")).split()[0] == expected

    async def test_refused_content_creates_nothing(self, sandbox: Sandbox, scratch: str) -> None:
        """Bad content found after hundreds of KiB of good content: 400 naming ``content``, and
        neither the file nor its parents exist."""
        good = base64.b64encode(os.urandom(300 * 1024)).decode()
        path = f"{scratch}/new/x"
        for content in (good + "!!!!", good + "QQ==" + good, good + "QUF"):
            with pytest.raises(ValidationFailed) as info:
                await sandbox.files.write(path, content, encoding="base64")
            assert info.value.details.get("field") == "content", info.value
        for value in (12, None, ["x"]):
            with pytest.raises(ValidationFailed) as info:
                await sandbox.call("files", "write", path=path, content=value)
            assert info.value.details.get("field") == "content", info.value
        assert await sh(sandbox, f"ls -A '{scratch}'") == ""

    async def test_invalid_paths_and_content_name_the_field(self, sandbox: Sandbox, scratch: str) -> None:
        cases: list[tuple[Any, str]] = [
            (sandbox.files.read(f"{scratch}/a\x00b"), "path"),
            (sandbox.files.write("/tmp/" + "a/" * 2046, "x"), "path"),  # 4097 bytes
            (sandbox.files.write("", "x"), "path"),
            (sandbox.files.rename(f"{scratch}/a", f"{scratch}/b\x00"), "newPath"),
            (sandbox.files.move(f"{scratch}/\x00", f"{scratch}/b"), "sourcePath"),
            (sandbox.files.write(f"{scratch}/b64", "not base64!", encoding="base64"), "content"),
            (sandbox.files.write(f"{scratch}/b64", "abc", encoding="base64"), "content"),  # bad padding
        ]
        for coro, field in cases:
            with pytest.raises(ValidationFailed) as info:
                await coro
            assert info.value.details.get("field") == field, info.value
        assert await sh(sandbox, f"ls -A '{scratch}'") == ""

    async def test_paths_the_filesystem_refuses_are_4xx_naming_the_field(self, sandbox: Sandbox, scratch: str) -> None:
        """Valid as paths, refused by the filesystem: a name longer than 255 bytes, a loop of
        symbolic links, a file where a directory must be."""
        long = "x" * 300
        await sandbox.files.write(f"{scratch}/a", "a")
        await sh(sandbox, f"cd '{scratch}' && ln -s loop loop")
        cases: list[tuple[Any, str, str]] = [
            (sandbox.files.write(f"{scratch}/{long}", "x"), "NAME_TOO_LONG", "path"),
            (sandbox.files.read(f"{scratch}/{long}/a"), "NAME_TOO_LONG", "path"),
            (sandbox.files.rename(f"{scratch}/a", f"{scratch}/{long}"), "NAME_TOO_LONG", "newPath"),
            (sandbox.files.move(f"{scratch}/{long}", f"{scratch}/b"), "NAME_TOO_LONG", "sourcePath"),
            (sandbox.files.read(f"{scratch}/loop"), "TOO_MANY_LINKS", "path"),
            (sandbox.files.write(f"{scratch}/loop/x", "x"), "TOO_MANY_LINKS", "path"),
            (sandbox.files.read(f"{scratch}/a/b"), "NOT_DIRECTORY", "path"),
        ]
        for coro, code, field in cases:
            error = await fails(coro, code, 400)
            assert error.details.get("field") == field and error.details["path"].startswith(scratch), error
        assert sorted((await sh(sandbox, f"ls -A '{scratch}'")).split()) == ["a", "loop"]

    async def test_files_that_are_not_regular_are_refused(
        self, sandbox: Sandbox, scratch: str, sleepers: MakeSleeper
    ) -> None:
        """A FIFO (here with a writer that never writes, so a read would wait forever) or a
        device is not read: 400 VALIDATION_FAILED naming ``path``; a FIFO is not written either
        (a write would wait for a reader). Devices are still written in place (/dev/null)."""
        fifo = f"{scratch}/fifo"
        await sh(sandbox, f"mkfifo '{fifo}'")
        sleeper = sleepers()
        await sandbox.processes.start(f"exec 3<>'{fifo}'; {sleeper.command}", session_id=sid("fifo"))
        await sleeper.started(sandbox)
        for path, kind in ((fifo, "FIFO"), ("/dev/zero", "character device")):
            error = await fails(asyncio.wait_for(sandbox.files.read(path), 30), "VALIDATION_FAILED", 400)
            assert (error.details["field"], error.details["fileType"], error.details["path"]) == ("path", kind, path)
            events = await asyncio.wait_for(collect(sandbox.files.read_stream(path)), 30)
            assert len(events) == 1 and isinstance(events[0], FileErrorEvent), events
            assert events[0].code == "VALIDATION_FAILED" and kind in events[0].error
        error = await fails(asyncio.wait_for(sandbox.files.write(fifo, "x"), 30), "VALIDATION_FAILED", 400)
        assert (error.details["field"], error.details["fileType"]) == ("path", "FIFO")
        assert (await sandbox.files.write("/dev/null", "x")).success
        assert await sh(sandbox, f"test -p '{fifo}' && echo fifo") == "fifo"

    async def test_permission_denied(self, sandbox: Sandbox, scratch: str) -> None:
        if await sh(sandbox, "id -u") != "0":
            await sandbox.files.write(f"{scratch}/locked/secret.txt", "s")
            await sh(sandbox, f"chmod 000 '{scratch}/locked'")
            error = await fails(sandbox.files.read(f"{scratch}/locked/secret.txt"), "PERMISSION_DENIED", 403)
            assert error.details["operation"] == "file.read"
            return
        # root passes permission checks; sysfs still refuses to create files
        probe = await sandbox.exec("touch /sys/kernel/conformance-probe", session_id=SESSIONLESS)
        if "Permission denied" not in probe.stderr:
            pytest.skip("no path where the server's user gets EACCES")
        path = f"/sys/kernel/conformance-{uuid.uuid4().hex}"
        error = await fails(sandbox.files.write(path, "x"), "PERMISSION_DENIED", 403)
        assert error.details == {"path": path, "operation": "file.write"}

    async def test_no_space(self, sandbox: Sandbox) -> None:
        if await sh(sandbox, "test -c /dev/full && echo yes || echo no") != "yes":
            pytest.skip("no /dev/full")
        error = await fails(sandbox.files.write("/dev/full", "x"), "NO_SPACE", 500)
        assert error.details["path"] == "/dev/full"
        assert await sh(sandbox, "test -c /dev/full && echo yes") == "yes"  # written in place, never replaced
