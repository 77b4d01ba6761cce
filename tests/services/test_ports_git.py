"""The ports and git services on their own: error mapping, redaction, probes, races, cancellation."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
import structlog

from sandbox_core.errors import SandboxError
from sandbox_core.models.ports import PortErrorEvent, PortProcessExitedEvent, PortReadyEvent, PortWatchingEvent
from sandbox_core.registry import ServiceContext
from sandbox_core.testing.conformance.ports import Listener, free_port, within
from sandbox_services.git import GitService, GitSettings, classify_clone_error, redact, repo_name
from sandbox_services.ports import PortsService, PortsSettings, request_target


class FakeRecord:
    def __init__(self) -> None:
        self.exit_code: int | None = None
        self._done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        return self._done.done()

    def finish(self, code: int | None) -> None:
        self.exit_code = code
        self._done.set_result(code)

    async def wait(self) -> int | None:
        return await asyncio.shield(self._done)


class FakeProcesses:
    def __init__(self, records: dict[str, FakeRecord]) -> None:
        self.records = records

    def find(self, process_id: str) -> FakeRecord | None:
        return self.records.get(process_id)


class FakeRegistry:
    def __init__(self, **services: Any) -> None:
        self.services = services

    def has(self, name: str) -> bool:
        return name in self.services

    def get(self, name: str, kind: type[Any]) -> Any:
        return self.services[name]


def ctx(settings: Any, registry: FakeRegistry | None = None, workspace: str = "/tmp") -> ServiceContext:
    return ServiceContext(
        "test",
        settings,
        workspace,
        registry or FakeRegistry(),  # type: ignore[arg-type]
        structlog.get_logger("test"),
    )


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
    git = GitService(ctx(GitSettings(), workspace=str(workspace)))
    result = await git.checkout(str(src))
    assert result.target_dir == str(workspace / "src") and result.branch == "main"
    relative = await git.checkout(str(src), target_dir="rel/dir/")
    assert relative.target_dir == str(workspace / "rel" / "dir")


async def test_git_never_prompts_for_a_password(tmp_path: Path) -> None:
    git = GitService(ctx(GitSettings(), workspace=str(tmp_path)))
    async with Listener(401) as host:
        with pytest.raises(SandboxError) as info:
            await within(git.checkout(f"http://127.0.0.1:{host.port}/private.git"))
    assert info.value.code == "GIT_AUTH_FAILED"
    assert "terminal prompts disabled" in info.value.message


async def test_git_cancelled_clone_leaves_no_git_behind(tmp_path: Path) -> None:
    git = GitService(ctx(GitSettings(kill_grace_ms=0), workspace=str(tmp_path)))
    async with Listener("stall") as host:
        url = f"http://127.0.0.1:{host.port}/cancelled.git"
        task = asyncio.ensure_future(git.checkout(url, target_dir=str(tmp_path / "out")))
        await host.wait_hits(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        left = subprocess.run(["pgrep", "-f", f"127.0.0.1:{host.port}/"], capture_output=True, text=True)
        assert left.stdout == ""


async def test_git_timeout_ends_the_process_group(tmp_path: Path) -> None:
    git = GitService(ctx(GitSettings(kill_grace_ms=0), workspace=str(tmp_path)))
    async with Listener("stall") as host:
        with pytest.raises(SandboxError) as info:
            await within(
                git.checkout(f"http://127.0.0.1:{host.port}/slow.git", timeout_ms=200, target_dir=str(tmp_path / "out"))
            )
        left = subprocess.run(["pgrep", "-f", f"127.0.0.1:{host.port}/"], capture_output=True, text=True)
    assert info.value.code == "GIT_NETWORK_ERROR" and info.value.details["timeoutMs"] == 200
    assert left.stdout == "" and not (tmp_path / "out").exists()


# ---- ports ----------------------------------------------------------------------------------------


async def test_probe_gives_up_on_a_server_that_never_answers() -> None:
    ports = PortsService(ctx(PortsSettings(probe_timeout_ms=100)))
    async with Listener("stall") as listener:
        assert await within(ports.probe(listener.port, "http", "/", 200, 399)) == (False, None)
        listener.answer = 200
        assert await within(ports.probe(listener.port, "http", "/", 200, 399)) == (True, 200)


async def test_probe_skips_informational_responses() -> None:
    ports = PortsService(ctx(PortsSettings()))

    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(early_hints, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        assert await within(ports.probe(port, "http", "/", 200, 399)) == (True, 201)
    finally:
        server.close()
        await server.wait_closed()


async def test_process_exit_interrupts_a_slow_probe() -> None:
    record = FakeRecord()
    registry = FakeRegistry(processes=FakeProcesses({"p": record}))
    ports = PortsService(ctx(PortsSettings(probe_timeout_ms=600_000), registry))
    async with Listener("stall") as listener:
        stream = ports.watch_port(listener.port, "http", process_id="p")
        assert await within(stream.__anext__()) == PortWatchingEvent(port=listener.port)
        pending = asyncio.ensure_future(stream.__anext__())
        await listener.wait_hits(1)  # the probe is waiting for an answer that never comes
        record.finish(7)
        assert await within(pending) == PortProcessExitedEvent(port=listener.port, exit_code=7)
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()


async def test_process_exit_interrupts_the_wait_between_probes() -> None:
    record = FakeRecord()
    registry = FakeRegistry(processes=FakeProcesses({"p": record}))
    ports = PortsService(ctx(PortsSettings(), registry))
    async with Listener(500) as listener:
        stream = ports.watch_port(listener.port, "http", process_id="p", interval=10_000_000)
        assert isinstance(await within(stream.__anext__()), PortWatchingEvent)
        pending = asyncio.ensure_future(stream.__anext__())
        await listener.wait_hits(1)
        record.finish(None)
        assert await within(pending) == PortProcessExitedEvent(port=listener.port)


async def test_watch_without_processes_service_reports_process_not_found() -> None:
    ports = PortsService(ctx(PortsSettings()))
    port = free_port()
    events = [e async for e in ports.watch_port(port, "tcp", process_id="any")]
    assert events == [PortWatchingEvent(port=port), PortErrorEvent(port=port, error="Process not found")]


async def test_closing_the_stream_stops_polling() -> None:
    ports = PortsService(ctx(PortsSettings(probe_timeout_ms=600_000)))
    async with Listener("stall") as listener:
        stream = ports.watch_port(listener.port, "http")
        await stream.__anext__()
        pending = asyncio.ensure_future(stream.__anext__())
        await listener.wait_hits(1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await stream.aclose()
    assert listener.hits == 1


async def test_ready_event_shapes() -> None:
    ports = PortsService(ctx(PortsSettings()))
    async with Listener(200) as listener:
        events = [e async for e in ports.watch_port(listener.port, "http", interval=0)]
    assert events == [PortWatchingEvent(port=listener.port), PortReadyEvent(port=listener.port, status_code=200)]
