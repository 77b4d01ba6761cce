"""Test support for the sandbox runtime and its plugins.

:class:`ServerProcess` runs a real ``sandbox serve`` in a subprocess on a free loopback port
(with the transports and settings you choose) and stops it with SIGTERM. The pytest plugin
(:mod:`sandbox_core.testing.plugin`) builds fixtures on it, and
:mod:`sandbox_core.contract.conformance` is the suite every transport must pass.
:func:`assert_error` checks an error answer on the wire; :mod:`sandbox_core.testing.procs`
checks processes a test started, by pid.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, Self

from ..plugins import Hooks, make_plugin_manager


def installed_transports(*, need_client: bool = True) -> list[str]:
    """Names of the installed transports that have a server side (and a client side)."""
    specs = Hooks(make_plugin_manager()).transports()
    return sorted(n for n, s in specs.items() if s.server is not None and (s.client is not None or not need_client))


def free_listener_ports(data: dict[str, Any]) -> None:
    """Set every installed transport's listener ports (:attr:`TransportSpec.listener_ports`) in
    the config ``data`` to 0, a free port, where ``data`` does not set them."""
    for name, spec in Hooks(make_plugin_manager()).transports().items():
        if spec.listener_ports:
            tables = data["transports"] = dict(data.get("transports") or {})  # the caller's stay as given
            tables[name] = {**{setting: 0 for setting in spec.listener_ports}, **(tables.get(name) or {})}


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


class ErrorResponse(Protocol):
    """What :func:`assert_error` reads of an answer (an ``httpx.Response`` is one)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def assert_error(response: ErrorResponse, status: int, code: str) -> dict[str, Any]:
    """Check that ``response`` is the contract's error answer with ``status`` and ``code``, and
    return its body: a JSON object with ``code``, ``httpStatus``, a non-empty ``message``, a
    ``context`` object and a UTC ``timestamp``, and no stack trace anywhere."""
    assert response.status_code == status, response.text
    assert response.headers.get("content-type", "").startswith("application/json"), dict(response.headers)
    body = response.json()
    assert isinstance(body, dict), response.text
    assert (body.get("code"), body.get("httpStatus")) == (code, status), body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert isinstance(body.get("context"), dict), body
    assert isinstance(body.get("timestamp"), str) and body["timestamp"].endswith("Z"), body
    assert "stack" not in body and "traceback" not in response.text.lower(), response.text
    return body


_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


_PR_GET_CHILD_SUBREAPER = 37


def subreaper(value: int | None = None) -> int:
    """This process's child-subreaper flag, set to ``value`` first when given: a test that runs
    a service making the process a subreaper puts the flag back afterwards."""
    if value is not None:
        _prctl(_PR_SET_CHILD_SUBREAPER, value)
    flag = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    return flag.value


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, so an interrupted
    test run never leaves a server behind (Linux ``PR_SET_PDEATHSIG``)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _die_with_parent_and_adopt_orphans() -> None:
    """As :func:`_die_with_parent`, and the server becomes a child subreaper (kept across exec):
    a process it started that loses its parent is re-parented to the server, not to init."""
    _die_with_parent()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


class _NotReady(Exception):
    """The server did not report its URL."""


class ServerProcess:
    """``sandbox serve`` in a subprocess, bound to 127.0.0.1 on a free port.

    The server reports its bound URL on a pipe (``sandbox serve --ready-fd``); its stderr (the
    log) is kept, the last 500 lines, in ``log``. With ``subreaper=True`` the server is a child
    subreaper, so every process it starts stays among its descendants
    (:func:`sandbox_core.testing.procs.descendants`) even when orphaned, until it is reaped:
    a test can then look for what the server left running there, not machine-wide.
    """

    def __init__(
        self,
        *,
        transports: list[str] | None = None,
        workspace: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        subreaper: bool = False,
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
        free_listener_ports(data)
        self.config_path = Path(self._tmp.name) / "sandbox.toml"
        self.config_path.write_text(to_toml(data))
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout = startup_timeout
        self.subreaper = subreaper
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log: collections.deque[str] = collections.deque(maxlen=500)
        self.started_line = ""  # the server's `server.started` log line (kept whatever follows it)
        self._reader: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def listeners(self) -> dict[str, str]:
        """The listeners the transports bound beside the server's port, ``{name: url}``, as the
        server logged them in ``server.started`` (empty when there are none)."""
        if not self.started_line:
            return {}
        try:
            found = json.loads(self.started_line).get("listeners") or {}
        except ValueError:
            raise AssertionError(f"server.started is not a JSON log line: {self.started_line!r}") from None
        return {str(name): str(url) for name, url in found.items()}

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:]

    @property
    def pid(self) -> int:
        """The server's pid (it has started)."""
        assert self.proc is not None, "the server has not been started"
        return self.proc.pid

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if not self.started_line and '"server.started"' in line:
                self.started_line = line
            self.log.append(line)

    def _wait_ready(self, ready: int) -> str:
        """The line the server writes to the ready pipe, or why there is none."""
        deadline = time.monotonic() + self.startup_timeout
        received = b""
        with selectors.DefaultSelector() as selector:
            selector.register(ready, selectors.EVENT_READ)
            while not received.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise _NotReady(f"no URL within {self.startup_timeout} s")
                chunk = os.read(ready, 4096)
                if not chunk:
                    raise _NotReady("it exited (or closed the ready pipe) before it was listening")
                received += chunk
        return received.decode("utf-8", errors="replace").strip()

    def command(self, ready_fd: int) -> list[str]:
        """The server's command line: ``sandbox serve`` with this config, reporting its URL on
        ``ready_fd``. A subclass may run another entry point that takes the same arguments."""
        return [
            sys.executable,
            "-m",
            "sandbox_core.cli",
            "serve",
            "--config",
            str(self.config_path),
            "--ready-fd",
            str(ready_fd),
        ]

    def start(self) -> Self:
        env = {**self.env, "SANDBOX_CONFIG": str(self.config_path)}
        ready, ready_w = os.pipe()
        try:
            try:
                self.proc = subprocess.Popen(
                    self.command(ready_w),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=env,
                    cwd=self._tmp.name,
                    start_new_session=True,
                    pass_fds=(ready_w,),
                    preexec_fn=_die_with_parent_and_adopt_orphans if self.subreaper else _die_with_parent,
                )
            finally:
                os.close(ready_w)  # the server holds the only write end: when it ends, the pipe reads EOF
            self._reader = threading.Thread(target=self._read_stderr, daemon=True)
            self._reader.start()
            self.url = self._wait_ready(ready)
            # the server logs `server.started` before it reports the URL: let the log reader see it
            deadline = time.monotonic() + 5
            while not self.started_line and time.monotonic() < deadline and self._reader.is_alive():
                time.sleep(0.005)
        except _NotReady as exc:
            code = self.stop()
            raise RuntimeError(
                f"sandbox server did not start: {exc} (exit code {code}):\n" + "\n".join(self.log)
            ) from None
        finally:
            os.close(ready)
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
