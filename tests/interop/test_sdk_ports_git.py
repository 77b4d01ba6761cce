"""The official @cloudflare/sandbox client's ``git.checkout`` and ``ports.watchPort`` against our server."""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_core.testing import ServerProcess

Run = Callable[..., dict[str, Any]]


def scenario(node_runner: Run, server: ServerProcess, name: str, *args: str) -> Any:
    out = node_runner("sdk_http.mjs", server.url, name, *args)
    assert out["returncode"] == 0, out
    return out["result"]


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    body = b""

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


class _NotFound(_Handler):
    status = 404
    body = b"Repository not found.\n"


Served = tuple[http.server.ThreadingHTTPServer, threading.Thread]


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Served:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@contextlib.contextmanager
def _serving(handler: Any) -> Iterator[int]:
    """The port of a loopback http server answering with ``handler``, stopped afterwards."""
    server, thread = _serve(handler)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def http_port() -> Iterator[int]:
    with _serving(_Handler) as port:
        yield port


@pytest.fixture
def not_found_port() -> Iterator[int]:
    with _serving(_NotFound) as port:
        yield port


@pytest.fixture
def stall_port() -> Iterator[int]:
    """A listener that accepts connections and never answers (held until the test ends)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield int(listener.getsockname()[1])
    listener.close()  # pending connections are reset with it


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    subprocess.run(
        "git init -q src && cd src && git symbolic-ref HEAD refs/heads/main && echo 1 > a && git add a"
        " && git commit -q -m one && git checkout -q -b dev && echo 2 > b && git add b"
        " && git commit -q -m two && git checkout -q main",
        shell=True,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    return tmp_path


def test_git_checkout(
    node_runner: Run, sandbox_server: ServerProcess, repo: Path, not_found_port: int, stall_port: int
) -> None:
    result = scenario(node_runner, sandbox_server, "git_checkout", str(repo), str(not_found_port), str(stall_port))
    clone = result["clone"]
    assert clone["ok"], clone
    assert {k: clone["result"][k] for k in ("success", "repoUrl", "branch", "targetDir")} == {
        "success": True,
        "repoUrl": f"file://{repo}/src",
        "branch": "dev",
        "targetDir": f"{repo}/out",
    }
    assert (repo / "out" / "b").read_text() == "2\n"
    shallow = subprocess.run(
        ["git", "-C", str(repo / "out"), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shallow.stdout.strip() == "true"

    def error(step: str) -> dict[str, Any]:
        assert not result[step]["ok"], result[step]
        return result[step]["error"]  # type: ignore[no-any-return]

    assert (error("missing")["name"], error("missing")["code"], error("missing")["httpStatus"]) == (
        "GitRepositoryNotFoundError",
        "GIT_REPOSITORY_NOT_FOUND",
        404,
    )
    assert (error("notFound")["name"], error("notFound")["httpStatus"]) == ("GitRepositoryNotFoundError", 404)
    slow = error("slow")
    assert (slow["name"], slow["code"], slow["httpStatus"]) == ("GitNetworkError", "GIT_NETWORK_ERROR", 502)
    assert "hunter2secret" not in str(slow) and "******@127.0.0.1" in slow["message"]
    assert (error("badUrl")["name"], error("badUrl")["httpStatus"]) == ("InvalidGitUrlError", 400)


def test_port_watch(node_runner: Run, sandbox_server: ServerProcess, http_port: int) -> None:
    closed = closed_port()
    result = scenario(node_runner, sandbox_server, "port_watch", str(http_port), str(closed))
    assert result["http"] == [
        {"type": "watching", "port": http_port},
        {"type": "ready", "port": http_port, "statusCode": 200},
    ]
    assert result["tcp"] == [{"type": "watching", "port": http_port}, {"type": "ready", "port": http_port}]
    assert result["unknown"] == [
        {"type": "watching", "port": closed},
        {"type": "error", "port": closed, "error": "Process not found"},
    ]
    assert result["exited"] == [
        {"type": "watching", "port": closed},
        {"type": "process_exited", "port": closed, "exitCode": 3},
    ]
    invalid = result["invalid"]
    assert not invalid["ok"]
    assert (invalid["error"]["name"], invalid["error"]["code"], invalid["error"]["httpStatus"]) == (
        "InvalidPortError",
        "INVALID_PORT_NUMBER",
        400,
    )
