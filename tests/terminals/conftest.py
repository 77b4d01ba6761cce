"""Fixtures of the terminal tests (helpers: helpers_pty.py).

A terminal is an interactive bash, which reads ``~/.bashrc``: every test runs with an empty
home of its own (servers too, see ``PtyServer``), so the machine's rc files play no part."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers_pty import PtyServer


@pytest.fixture(autouse=True)
def empty_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def pty_server() -> Iterator[PtyServer]:
    """One server for a module's tests (each test uses sessions of its own)."""
    server = PtyServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pty_server_factory() -> Iterator[Callable[..., PtyServer]]:
    """Servers with settings of a test's own, stopped after it."""
    started: list[PtyServer] = []

    def start(**kwargs: Any) -> PtyServer:
        server = PtyServer(**kwargs).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
