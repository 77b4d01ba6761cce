"""Test support for the sandbox runtime and its plugins.

:class:`ServerProcess` runs a real ``sandbox serve`` in a subprocess on a free loopback port
(with the transports and settings you choose) and stops it with SIGTERM. The pytest plugin
(:mod:`sandbox_core.testing.plugin`) builds fixtures on it, and
:mod:`sandbox_core.testing.conformance` is the suite every transport must pass.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..plugins import Hooks, make_plugin_manager


def installed_transports(*, need_client: bool = True) -> list[str]:
    """Names of the installed transports that have a server side (and a client side)."""
    specs = Hooks(make_plugin_manager()).transports()
    return sorted(n for n, s in specs.items() if s.server is not None and (s.client is not None or not need_client))


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for config tables (strings, numbers, booleans, lists, tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    lines: list[str] = []

    def table(prefix: str, mapping: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in mapping.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in mapping.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for key, val in scalars.items():
            lines.append(f"{key} = {value(val)}")
        for key, val in tables.items():
            table(f"{prefix}.{key}" if prefix else key, val)

    table("", data)
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, so an interrupted
    test run never leaves a server behind (Linux ``PR_SET_PDEATHSIG``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


class ServerProcess:
    """``sandbox serve`` in a subprocess, bound to 127.0.0.1 on a free port."""

    def __init__(
        self,
        *,
        transports: list[str] | None = None,
        workspace: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="sandbox-test-")
        self.workspace = str(workspace) if workspace is not None else os.path.join(self._tmp.name, "workspace")
        os.makedirs(self.workspace, exist_ok=True)
        server: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "workspace": self.workspace}
        if transports is not None:
            server["transports"] = list(transports)
        data: dict[str, Any] = {"server": server}
        for key, val in (config or {}).items():
            if key == "server":
                server.update(val)
            else:
                data[key] = val
        self.config_path = Path(self._tmp.name) / "sandbox.toml"
        self.config_path.write_text(to_toml(data))
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log: collections.deque[str] = collections.deque(maxlen=500)
        self._started = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:]

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.log.append(line)
            if not self._started.is_set() and '"server.started"' in line:
                try:
                    self.url = json.loads(line)["url"]
                except (ValueError, KeyError):
                    continue
                self._started.set()

    def start(self) -> ServerProcess:
        env = {**self.env, "SANDBOX_CONFIG": str(self.config_path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox_core.cli", "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=self._tmp.name,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._started.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sandbox server did not start:\n" + "\n".join(self.log))
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the server, wait for it (SIGKILL after ``timeout``); return its exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        if proc.stderr is not None:
            proc.stderr.close()
        self._tmp.cleanup()
        return proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
