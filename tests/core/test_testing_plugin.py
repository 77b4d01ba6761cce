"""The shipped pytest plugin's server fixtures (sandbox_core.testing.plugin), run in a pytest of
their own on test files of this test: a module-scoped server shared by one module's tests and
no other's, and factories that start a ServerProcess subclass; every server stopped after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sandbox_core.testing.procs import Proc, still_alive

RECORD = """
import json, os

from sandbox_core.testing import ServerProcess
from sandbox_core.testing.procs import Proc


class Marked(ServerProcess):
    pass


def record(name, server):
    proc = Proc.of(server.pid)
    with open(os.environ["SERVERS_RECORD"], "a") as out:
        out.write(json.dumps([name, proc.pid, proc.start, type(server).__name__, server.url]) + "\\n")
"""

MODULE_A = """
from record import Marked, record


def test_one(sandbox_module_server):
    record("a1", sandbox_module_server)


def test_two(sandbox_module_server):
    record("a2", sandbox_module_server)


def test_a_subclass(sandbox_server_factory):
    record("a3", sandbox_server_factory(Marked, transports=["http"]))


def test_a_subclass_for_the_module(sandbox_module_server_factory):
    record("a4", sandbox_module_server_factory(Marked, transports=["http"]))
"""

MODULE_B = """
from record import record


def test_one(sandbox_module_server):
    record("b1", sandbox_module_server)
"""


def test_module_servers_and_server_subclasses(tmp_path: Path) -> None:
    (tmp_path / "record.py").write_text(RECORD)
    (tmp_path / "test_a.py").write_text(MODULE_A)
    (tmp_path / "test_b.py").write_text(MODULE_B)
    servers = tmp_path / "servers.jsonl"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "sandbox_core.testing.plugin"]
    proc = subprocess.run(
        [*cmd, "test_a.py", "test_b.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SERVERS_RECORD": str(servers), "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = servers.read_text().splitlines()
    seen = {name: (Proc(pid, start), kind, url) for name, pid, start, kind, url in map(json.loads, lines)}
    assert set(seen) == {"a1", "a2", "a3", "a4", "b1"}
    assert seen["a1"] == seen["a2"]  # one server for a module's tests
    assert seen["b1"][0] != seen["a1"][0]  # and another for the next module's
    kinds = [seen[name][1] for name in ("a1", "a3", "a4", "b1")]
    assert kinds == ["ServerProcess", "Marked", "Marked", "ServerProcess"]
    assert still_alive(entry[0] for entry in seen.values()) == []  # every one stopped when done
