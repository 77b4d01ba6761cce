"""Fixtures of the interpreter tests: the service in the test process (``interp``, settings
given by the ``interp_settings`` marker-free fixture override) and a real server of the module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from helpers_interp import others_spared

from sandbox_core.registry import ServiceRegistry, ServiceSpec
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG
from sandbox_services.interpreter import InterpreterService, InterpreterSettings


@pytest.fixture
def interp_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def interp_cgroups() -> bool:
    """Whether the in-process service may use cgroups where it finds them (parametrize it with
    False to see what happens where the server cannot write cgroups)."""
    return True


@pytest.fixture
async def interp(
    interp_settings: dict[str, Any], interp_cgroups: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ServiceRegistry]:
    """A registry running the interpreter service alone, closed (every kernel ended) after the test."""
    if not interp_cgroups:
        monkeypatch.setattr("sandbox_services.interpreter.service.open_tree", lambda name="": None, raising=False)
    spec = ServiceSpec("interpreter", InterpreterService, InterpreterSettings)
    registry = ServiceRegistry(
        {"interpreter": spec},
        settings={"interpreter": InterpreterSettings(**interp_settings)},
        workspace=str(tmp_path),
    )
    with others_spared():
        await registry.start()
        try:
            yield registry
        finally:
            await registry.aclose()


@pytest.fixture(scope="module")
def interp_server() -> Iterator[ServerProcess]:
    server = ServerProcess(config=TEST_CONFIG).start()
    try:
        yield server
    finally:
        server.stop()
