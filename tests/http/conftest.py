"""Fixtures shared by the http wire tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sandbox_core.testing import ServerProcess


@pytest.fixture
async def http(sandbox_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A raw http client on the shared test server (no facade: these tests check the wire)."""
    async with httpx.AsyncClient(base_url=sandbox_server.url, timeout=60) as client:
        yield client
