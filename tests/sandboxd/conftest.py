"""Fixtures of the sandboxd transport's tests (helpers in ``helpers_sandboxd``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from helpers_sandboxd import grpc_target, sdk_sandbox

from sandbox_core.testing import ServerProcess


@pytest.fixture(scope="module")
def sandboxd_server() -> Iterator[ServerProcess]:
    """A server with the sandboxd transport alone, for the module."""
    with ServerProcess(transports=["sandboxd"]) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(sandboxd_server: ServerProcess) -> Iterator[Any]:
    """The official SDK's ``Sandbox`` on the module's server."""
    sandbox = sdk_sandbox(sandboxd_server)
    try:
        yield sandbox
    finally:
        sandbox.connector.close()


@pytest.fixture
def channel(sandboxd_server: ServerProcess) -> Iterator[grpc.Channel]:
    """A plain gRPC channel to the module's server's gRPC listener."""
    with grpc.insecure_channel(grpc_target(sandboxd_server)) as chan:
        yield chan


@pytest.fixture(scope="module")
def pb() -> Any:
    """The official SDK's own generated ``process.v1`` messages."""
    from k8s_agent_sandbox.commands._process_stubs import process_pb2

    return process_pb2
