"""The ``sandbox`` command: ``serve --ready-fd`` (the bound URL on a descriptor once the server
listens), flags validated as the config file is, ``--version``, help for every flag."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from sandbox_core.cli import build_parser


def test_ready_fd_gets_the_bound_url_then_eof(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "SANDBOX_CONFIG"}  # defaults, port 0
    ready, ready_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox_core.cli", "serve", "--port", "0", "--ready-fd", str(ready_w)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(ready_w,),
    )
    os.close(ready_w)
    try:
        with os.fdopen(ready, "rb") as pipe:
            assert select.select([pipe], [], [], 30)[0], "nothing on the ready descriptor in 30 s"
            received = pipe.read()  # to EOF: the server closes the descriptor after the line
        assert received.endswith(b"\n") and received.count(b"\n") == 1, received
        url = received.decode().strip()
        assert url.startswith("http://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
        assert httpx.get(f"{url}/api/ping", timeout=30).json()["status"] == "healthy"  # listening
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    started = [json.loads(line) for line in stderr.decode().splitlines() if '"server.started"' in line]
    assert [entry["url"] for entry in started] == [url]  # the same URL the log reports


def test_ready_fd_that_is_not_open_stops_startup(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox_core.cli", "serve", "--port", "0", "--ready-fd", "1000"],  # not open there
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--ready-fd 1000: Bad file descriptor" in proc.stderr


def sandbox_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``sandbox ARGS`` in ``tmp_path`` (no sandbox.toml there), with no SANDBOX_* setting but ``env``."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("SANDBOX_")}
    return subprocess.run(
        [sys.executable, "-m", "sandbox_core.cli", *args],
        cwd=tmp_path,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--port", "70000"], "server.port (from --port): Expected `int` <= 65535, got 70000"),
        (["--port", "-1"], "server.port (from --port): Expected `int` >= 0, got -1"),
        (["--log-level", "verbose"], "server.log_level (from --log-level): Invalid enum value 'verbose'"),
        (["--transport", "pigeon"], "server.transports (from --transport): unknown transport 'pigeon'"),
    ],
)
def test_bad_flag_is_a_message_naming_it_not_a_traceback(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = sandbox_cli(tmp_path, "serve", *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_workspace_that_is_not_a_directory_stops_startup(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "ws"
    if kind == "file":
        path.write_text("not a directory")
    proc = sandbox_cli(tmp_path, "serve", "--port", "0", "--workspace", str(path))
    what = "does not exist" if kind == "missing" else "is not a directory"
    assert proc.returncode == 2, proc.stderr
    assert f"server.workspace (from --workspace): {str(path)!r} {what}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_empty_transport_list_stops_startup(tmp_path: Path) -> None:
    (tmp_path / "sandbox.toml").write_text("[server]\ntransports = []\n")
    proc = sandbox_cli(tmp_path, "serve", "--port", "0")
    assert proc.returncode == 2, proc.stderr
    assert "server.transports: an empty list serves nothing; name at least one of [" in proc.stderr


def test_a_port_in_use_is_a_startup_error_suggesting_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = sandbox_cli(tmp_path, "serve", "--port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("sandbox: error: server.port (from --port): cannot listen on 127.0.0.1:")
    assert "Address already in use (choose another with --port, or 0 for a free one)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_log_level_in_the_file_is_validated(tmp_path: Path) -> None:
    (tmp_path / "sandbox.toml").write_text("[server]\nlog_level = 'verbose'\n")
    proc = sandbox_cli(tmp_path, "serve", "--port", "0")
    assert proc.returncode == 2 and "server.log_level: Invalid enum value 'verbose'" in proc.stderr, proc.stderr


def test_flag_overrides_the_file(tmp_path: Path) -> None:
    (tmp_path / "sandbox.toml").write_text("[server]\nport = 70000\n")  # invalid, but the flag replaces it
    ready, ready_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox_core.cli", "serve", "--port", "0", "--ready-fd", str(ready_w)],
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if not key.startswith("SANDBOX_")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(ready_w,),
    )
    os.close(ready_w)
    try:
        with os.fdopen(ready, "rb") as pipe:
            assert select.select([pipe], [], [], 30)[0], "nothing on the ready descriptor in 30 s"
            url = pipe.read().decode().strip()
        assert int(url.rsplit(":", 1)[1]) not in (0, 70000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_version_names_core_and_each_installed_plugin(tmp_path: Path) -> None:
    proc = sandbox_cli(tmp_path, "--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"sandbox-core {version('sandbox-core')}"
    plugins = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert plugins["http"] == ["sandbox-transport-http", version("sandbox-transport-http")]
    for service in ("sessions", "commands", "files", "interpreter"):  # each service is a plugin of its own
        assert plugins[service] == ["sandbox-services", version("sandbox-services")]
    assert "greeter" not in plugins  # a test-only plugin, not loaded unless asked for


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every option of ``parser`` and of its subcommands, with the command it belongs to."""
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _options(sub)
        elif action.option_strings:
            found.append((parser.prog, action))
    return found


def test_every_flag_has_help() -> None:
    options = _options(build_parser())
    flags = {flag for _, action in options for flag in action.option_strings}
    assert {"--version", "--config", "--host", "--port", "--workspace", "--transport", "--log-level"} <= flags
    for prog, action in options:
        assert action.help and action.help != argparse.SUPPRESS, f"{prog} {action.option_strings} has no help"
