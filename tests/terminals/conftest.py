"""Fixtures of the terminal tests (helpers: helpers_pty.py).

A terminal is an interactive bash, which reads ``~/.bashrc``: every test runs with an empty
home of its own (servers too, see ``PtyServer``), so the machine's rc files play no part."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from helpers_pty import PtyServer

from sandbox_core.testing.plugin import ServerFactory


@pytest.fixture(autouse=True)
def empty_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def pty_server(sandbox_module_server_factory: ServerFactory) -> PtyServer:
    """One server for a module's tests (each test uses sessions of its own)."""
    return sandbox_module_server_factory(PtyServer)


@pytest.fixture
def pty_server_factory(sandbox_server_factory: ServerFactory) -> Callable[..., PtyServer]:
    """Servers with settings of a test's own, stopped after it."""
    return functools.partial(sandbox_server_factory, PtyServer)
