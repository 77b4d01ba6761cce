"""The ports and git services on their own: error mapping, redaction, probes, races, cancellation.

The services run in this process on a real :class:`ServiceRegistry` (only the services a test
names), so a git clone is a child of this process: a test finds it among this process's
descendants, never among the machine's processes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest

from sandbox_core.contract.conformance.ports import Listener, free_port, within
from sandbox_core.contract.models.ports import PortErrorEvent, PortProcessExitedEvent, PortReadyEvent, PortWatchingEvent
from sandbox_core.errors import SandboxError
from sandbox_core.plugins import Hooks, make_plugin_manager
from sandbox_core.registry import ServiceRegistry
from sandbox_core.testing.procs import Proc, cmdline, descendants, still_alive
from sandbox_services.git import GitService, GitSettings, classify_clone_error, redact, repo_name
from sandbox_services.ports import PortsService, PortsSettings, request_target
from sandbox_services.processes import ProcessesService


@asynccontextmanager
async def services(
    *names: str, workspace: str | os.PathLike[str] = "/tmp", **settings: msgspec.Struct
) -> AsyncIterator[ServiceRegistry]:
    """A started registry of the installed services ``names`` (with ``settings`` by service name)."""
    specs = Hooks(make_plugin_manager()).services()
    registry = ServiceRegistry({name: specs[name] for name in names}, settings=settings, workspace=str(workspace))
    await registry.start()
    try:
        yield registry
    finally:
        await registry.aclose()


def processes_with(argument: str) -> list[Proc]:
    """This process's descendants (git and its helpers) whose command line has ``argument``."""
    found = []
    for pid in descendants(os.getpid()):
        argv = cmdline(pid)
        if argv and any(argument in arg for arg in argv):
            found.append(Proc.of(pid))
    return found


# ---- git: pure functions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "stderr", "code"),
    [
        (124, "", "GIT_NETWORK_ERROR"),
        (128, "remote: Repository not found.\nfatal: repository 'https://h/x/' not found", "GIT_REPOSITORY_NOT_FOUND"),
        (128, "fatal: Authentication failed for 'https://h/x/'", "GIT_AUTH_FAILED"),
        (128, "fatal: repository '/nope' does not exist", "GIT_REPOSITORY_NOT_FOUND"),
        (128, "fatal: Remote branch x not found in upstream origin", "GIT_BRANCH_NOT_FOUND"),
        (128, "fatal: unable to access 'https://h/x/': Could not resolve host: h", "GIT_NETWORK_ERROR"),
        (128, "fatal: destination path 'x' already exists and is not an empty directory.", "GIT_OPERATION_FAILED"),
        (1, "git@h: Permission denied (publickey).", "GIT_AUTH_FAILED"),
        (1, "fatal: Authentication failed", "GIT_AUTH_FAILED"),
        (1, "error: no credentials", "GIT_AUTH_FAILED"),
        (1, "error: pathspec 'x' did not match any file(s) known to git", "GIT_BRANCH_NOT_FOUND"),
        (1, "some other failure", "GIT_CLONE_FAILED"),
        (-9, "", "GIT_CLONE_FAILED"),
        (None, "", "GIT_CLONE_FAILED"),
    ],
)
def test_clone_error_mapping(exit_code: int | None, stderr: str, code: str) -> None:
    assert classify_clone_error(exit_code, stderr) == code


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pass@github.com/x.git", "https://******@github.com/x.git"),
        ("fatal: unable to access 'https://tok@h/x/': 403", "fatal: unable to access 'https://******@h/x/': 403"),
        ("http://a:b@c@h/x and ssh://git:pw@h2/y", "http://******@h/x and ssh://******@h2/y"),
        (
            "https://h/x.git?token=abc&ok=1&X-Amz-Signature=zz",
            "https://h/x.git?token=REDACTED&ok=1&X-Amz-Signature=REDACTED",
        ),
        ("no url here", "no url here"),
        ("git@github.com:u/r.git", "git@github.com:u/r.git"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_hides_the_url_credentials_anywhere() -> None:
    url = "https://me:s%40cret-pw@h/x.git"
    assert (
        redact("password s@cret-pw and s%40cret-pw and me:s%40cret-pw", url) == "password ****** and ****** and ******"
    )


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://github.com/u/repo.git", "repo"),
        ("https://github.com/u/repo", "repo"),
        ("git@github.com:u/repo.git", "repo"),
        ("/tmp/x/src", "src"),
        ("file:///tmp/x/src.git/", "src"),
        ("https://host/", "host"),
        ("https://h/r?x=1#y", "r"),
        ("..", "repository"),
    ],
)
def test_repo_name(url: str, name: str) -> None:
    assert repo_name(url) == name


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/", "/"),
        ("", "/"),
        ("health", "/health"),
        ("/a b", "/a%20b"),
        ("/x#frag", "/x"),
        ("/q?a=1&b=%2F", "/q?a=1&b=%2F"),
        ("/\r\nX: y", "/%0D%0AX:%20y"),
        ("/é", "/%C3%A9"),
    ],
)
def test_request_target(path: str, target: str) -> None:
    assert request_target(path) == target


# ---- git: the service ---------------------------------------------------------------------------


def make_repo(root: Path) -> Path:
    src = root / "src"
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    subprocess.run(
        f"git init -q {src} && cd {src} && git symbolic-ref HEAD refs/heads/main && touch f && git add f"
        " && git commit -q -m one",
        shell=True,
        check=True,
        env=env,
    )
    return src


async def test_git_without_sessions_service_uses_the_workspace(tmp_path: Path) -> None:
    src = make_repo(tmp_path)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    async with services("git", workspace=workspace) as registry:
        git = registry.get("git", GitService)
        result = await git.checkout(str(src))
        assert result.target_dir == str(workspace / "src") and result.branch == "main"
        relative = await git.checkout(str(src), target_dir="rel/dir/")
        assert relative.target_dir == str(workspace / "rel" / "dir")


async def test_git_never_prompts_for_a_password(tmp_path: Path) -> None:
    async with services("git", workspace=tmp_path) as registry, Listener(401) as host:
        with pytest.raises(SandboxError) as info:
            await within(registry.get("git", GitService).checkout(f"http://127.0.0.1:{host.port}/private.git"))
    assert info.value.code == "GIT_AUTH_FAILED"
    assert "terminal prompts disabled" in info.value.message


async def test_git_cancelled_clone_leaves_no_git_behind(tmp_path: Path) -> None:
    async with services("git", workspace=tmp_path, git=GitSettings(kill_grace_ms=0)) as registry:
        git = registry.get("git", GitService)
        async with Listener("stall") as host:
            url = f"http://127.0.0.1:{host.port}/cancelled-{uuid.uuid4().hex}.git"
            task = asyncio.ensure_future(git.checkout(url, target_dir=str(tmp_path / "out")))
            await host.wait_hits(1)  # git is connected, waiting for an answer
            clone = processes_with(url)
            assert clone, "no git process of this clone among this process's descendants"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(still_alive, clone) == []


async def test_git_timeout_ends_the_process_group(tmp_path: Path) -> None:
    async with services("git", workspace=tmp_path, git=GitSettings(kill_grace_ms=0)) as registry:
        git = registry.get("git", GitService)
        async with Listener("stall") as host:
            url = f"http://127.0.0.1:{host.port}/slow-{uuid.uuid4().hex}.git"
            # long enough that git has connected (and is seen) before the timeout ends it
            task = asyncio.ensure_future(git.checkout(url, timeout_ms=1000, target_dir=str(tmp_path / "out")))
            await host.wait_hits(1)
            clone = processes_with(url)
            assert clone, "no git process of this clone among this process's descendants"
            with pytest.raises(SandboxError) as info:
                await within(task)
            assert await asyncio.to_thread(still_alive, clone) == []
    assert info.value.code == "GIT_NETWORK_ERROR" and info.value.details["timeoutMs"] == 1000
    assert not (tmp_path / "out").exists()


# ---- ports ----------------------------------------------------------------------------------------


async def test_probe_gives_up_on_a_server_that_never_answers() -> None:
    async with services("ports", ports=PortsSettings(probe_timeout_ms=100)) as registry, Listener("stall") as listener:
        ports = registry.get("ports", PortsService)
        assert await within(ports.probe(listener.port, "http", "/", 200, 399)) == (False, None)
        listener.answer = 200
        assert await within(ports.probe(listener.port, "http", "/", 200, 399)) == (True, 200)


async def test_probe_skips_informational_responses() -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(early_hints, "127.0.0.1", 0)
    try:
        async with services("ports") as registry:
            port = server.sockets[0].getsockname()[1]
            assert await within(registry.get("ports", PortsService).probe(port, "http", "/", 200, 399)) == (True, 201)
    finally:
        server.close()
        await server.wait_closed()


def exits_on(flag: Path, code: int) -> str:
    """A background command that exits with ``code`` once ``flag`` exists."""
    return f"while [ ! -e '{flag}' ]; do sleep 0.01; done; exit {code}"


async def test_process_exit_interrupts_a_slow_probe(tmp_path: Path) -> None:
    flag = tmp_path / "exit-now"
    settings = PortsSettings(probe_timeout_ms=600_000)
    async with (
        services("sessions", "processes", "ports", workspace=tmp_path, ports=settings) as registry,
        Listener("stall") as listener,
    ):
        await registry.get("processes", ProcessesService).start(exits_on(flag, 7), process_id="p")
        stream = registry.get("ports", PortsService).watch_port(listener.port, "http", process_id="p")
        try:
            assert await within(stream.__anext__()) == PortWatchingEvent(port=listener.port)
            pending = asyncio.ensure_future(stream.__anext__())
            await listener.wait_hits(1)  # the probe is waiting for an answer that never comes
            await asyncio.to_thread(flag.touch)
            assert await within(pending) == PortProcessExitedEvent(port=listener.port, exit_code=7)
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()
        finally:
            await stream.aclose()


async def test_process_exit_interrupts_the_wait_between_probes(tmp_path: Path) -> None:
    flag = tmp_path / "exit-now"
    async with (
        services("sessions", "processes", "ports", workspace=tmp_path) as registry,
        Listener(500) as listener,
    ):
        await registry.get("processes", ProcessesService).start(exits_on(flag, 5), process_id="p")
        # the interval is clamped to 10 s: after the first probe the watch waits that long
        stream = registry.get("ports", PortsService).watch_port(
            listener.port, "http", process_id="p", interval=10_000_000
        )
        try:
            assert isinstance(await within(stream.__anext__()), PortWatchingEvent)
            pending = asyncio.ensure_future(stream.__anext__())
            await listener.wait_hits(1)
            await asyncio.to_thread(flag.touch)
            # Only an interrupted wait answers within 5 s; a watch that slept out its 10 s would
            # still end with this event (at the top of its loop), which is why a bound is needed.
            assert await asyncio.wait_for(pending, 5) == PortProcessExitedEvent(port=listener.port, exit_code=5)
            assert listener.hits == 1
        finally:
            await stream.aclose()


async def test_watch_without_processes_service_reports_process_not_found() -> None:
    port = free_port()
    async with services("ports") as registry:
        events = [e async for e in registry.get("ports", PortsService).watch_port(port, "tcp", process_id="any")]
    assert events == [PortWatchingEvent(port=port), PortErrorEvent(port=port, error="Process not found")]


async def test_closing_the_stream_stops_polling() -> None:
    settings = PortsSettings(probe_timeout_ms=600_000)
    async with services("ports", ports=settings) as registry, Listener("stall") as listener:
        stream = registry.get("ports", PortsService).watch_port(listener.port, "http")
        await stream.__anext__()
        pending = asyncio.ensure_future(stream.__anext__())
        await listener.wait_hits(1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await stream.aclose()
    assert listener.hits == 1


async def test_ready_event_shapes() -> None:
    async with services("ports") as registry, Listener(200) as listener:
        events = [e async for e in registry.get("ports", PortsService).watch_port(listener.port, "http", interval=0)]
    assert events == [PortWatchingEvent(port=listener.port), PortReadyEvent(port=listener.port, status_code=200)]
