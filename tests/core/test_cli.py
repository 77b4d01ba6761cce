"""``sandbox serve --ready-fd``: the bound URL on a descriptor once the server listens."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import httpx


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
