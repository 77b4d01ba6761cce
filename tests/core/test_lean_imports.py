"""The serving process imports only what serving needs.

A subprocess runs the server the way ``sandbox serve`` does (``sandbox_core.cli``'s imports,
its loop runner, ``load_config``, ``configure_logging``, ``server.serve`` with every installed
transport), answers one real request on its socket, stops, and prints ``sorted(sys.modules)``.
No client library, no client facade, no web framework and none of structlog's console extras
may be among them. Memory figures are the benchmark's business (bench/run.py), never a test's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVE_AND_LIST_MODULES = r"""
import asyncio, json, sys
from urllib.parse import urlsplit

from sandbox_core.cli import run  # the CLI's imports and its loop runner (uvloop when installed)
from sandbox_core.config import load_config
from sandbox_core.log import configure_logging
from sandbox_core.server import serve

config = load_config()
config.server.port = 0
config.server.workspace = sys.argv[1]
configure_logging("warning")
started = asyncio.Event()
url = ""
answer = b""

def on_started(bound: str) -> None:
    global url
    url = bound
    started.set()

async def one_request_then_stop() -> None:
    # raw asyncio streams: this script must not import an HTTP client itself
    global answer
    await started.wait()
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(b"GET /api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()

run(serve(config, shutdown_trigger=one_request_then_stop, on_started=on_started))
print(json.dumps({"answer": answer.decode("latin-1"), "modules": sorted(sys.modules)}))
"""

#: Top-level packages the serving process must not import.
NOT_IN_SERVER = [
    "aiohttp",  # the http transport's client side
    "httpx",
    "starlette",  # the http server is raw ASGI
    "rich",  # structlog's optional console extras (see sandbox_core.log)
    "pygments",
    "colorama",
    "better_exceptions",
    "anyio",  # only the files service's thread limiter uses it, on the first file operation
    "prometheus_client",  # only the first scrape of /metrics loads it (metrics are counted in plain numbers)
]
#: Modules of ours that belong to the client side only.
CLIENT_MODULES = ["sandbox_core.contract.client", "sandbox_transport_http.client", "sandbox_transport_ws.client"]


def serve_and_list_modules(tmp: Path, **env: str) -> list[str]:
    """The modules a server (default config, ``env`` added to the environment) has imported
    once it has served one request."""
    clean = {k: v for k, v in os.environ.items() if k not in ("SANDBOX_CONFIG", "SANDBOX_DISABLED_PLUGINS")}
    result = subprocess.run(
        [sys.executable, "-c", SERVE_AND_LIST_MODULES, str(tmp)],
        capture_output=True,
        text=True,
        cwd=tmp,  # no sandbox.toml here: the default config
        env={**clean, **env},
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["answer"].startswith("HTTP/1.1 200"), out["answer"]
    assert '"status":"healthy"' in out["answer"]
    modules: list[str] = out["modules"]
    return modules


@pytest.fixture(scope="module")
def server_modules(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return serve_and_list_modules(tmp_path_factory.mktemp("lean"))


def test_the_server_really_served(server_modules: list[str]) -> None:
    for name in ("hypercorn.asyncio", "sandbox_core.server", "sandbox_transport_http.server", "sandbox_services"):
        assert name in server_modules


@pytest.mark.parametrize("package", NOT_IN_SERVER)
def test_the_server_does_not_import(server_modules: list[str], package: str) -> None:
    loaded = [m for m in server_modules if m == package or m.startswith(package + ".")]
    assert not loaded, f"the serving process imported {loaded}"


@pytest.mark.parametrize("module", CLIENT_MODULES)
def test_the_server_does_not_import_client_code(server_modules: list[str], module: str) -> None:
    assert module not in server_modules


def test_a_service_left_out_is_never_imported(server_modules: list[str], tmp_path: Path) -> None:
    """Each service is a plugin of its own: one left out by SANDBOX_DISABLED_PLUGINS costs the
    server nothing, not even its import."""

    def interpreter(modules: list[str]) -> list[str]:
        package = "sandbox_services.interpreter"
        return [m for m in modules if m == package or m.startswith(package + ".")]

    assert interpreter(server_modules)  # served with every service, the server imports it
    without = serve_and_list_modules(tmp_path, SANDBOX_DISABLED_PLUGINS="interpreter")
    assert "sandbox_services.sessions" in without and interpreter(without) == []


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_importing_the_package_loads_no_submodule_until_a_name_is_used() -> None:
    out = run_python(
        "import sys, sandbox_core\n"
        "print(sorted(m for m in sys.modules if m.startswith('sandbox_core.')))\n"
        "print('structlog' in sys.modules, 'msgspec' in sys.modules)\n"
        "from sandbox_core import Sandbox, SessionHandle, ServiceSpec, hookimpl\n"
        "from sandbox_core.contract.client import Sandbox as S2\n"
        "print(Sandbox is S2, 'sandbox_core.contract.client' in sys.modules)\n"
    )
    assert out.splitlines() == ["[]", "False False", "True True"]


def test_every_public_name_resolves_and_unknown_names_fail() -> None:
    import sandbox_core

    for name in sandbox_core.__all__:
        assert getattr(sandbox_core, name) is not None
        assert name in dir(sandbox_core)
    with pytest.raises(AttributeError, match="no_such_name"):
        sandbox_core.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_console_extras_are_hidden_only_while_structlog_is_imported() -> None:
    """After ``sandbox_core.log``, structlog is loaded without rich, and rich still imports."""
    if subprocess.run([sys.executable, "-c", "import rich"], capture_output=True).returncode != 0:
        pytest.skip("rich is not installed: nothing to hide")
    out = run_python(
        "import sys\n"
        "import sandbox_core.log\n"
        "import structlog.dev\n"
        "print('rich' in sys.modules, structlog.dev.rich is None)\n"
        "import rich.console\n"
        "print(rich.console.Console is not None)\n"
    )
    assert out.splitlines() == ["False True", "True"]


def asgi_call(method: str, path: str) -> list[dict[str, object]]:
    """One request straight into the http transport's ASGI app (no server, no registry needed)."""
    import asyncio

    from sandbox_core.transport import ServerContext
    from sandbox_transport_http.server import make_server

    app = make_server(ServerContext(registry=None, settings=None, config=None)).app  # type: ignore[arg-type]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return sent


def test_options_and_the_root_page_answer_as_before_without_a_framework() -> None:
    """The two answers that used a web framework's response class send the same bytes now."""
    assert asgi_call("OPTIONS", "/api/execute") == [
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
                (
                    b"access-control-allow-headers",
                    b"Content-Type, Authorization, X-Session-Id, X-Sandbox-Id, X-Trace-Id, traceparent",
                ),
                (b"access-control-max-age", b"86400"),
            ],
        },
        {"type": "http.response.body", "body": b""},
    ]
    assert asgi_call("GET", "/") == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"access-control-allow-origin", b"*"),
                (b"content-length", b"30"),
                (b"content-type", b"text/plain; charset=utf-8"),
            ],
        },
        {"type": "http.response.body", "body": b"sandbox runtime: see /api/ping"},
    ]
