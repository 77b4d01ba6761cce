"""The client facade's choice of transport: an unknown one is ``ValidationFailed`` naming where
the name came from (the argument, ``SANDBOX_TRANSPORT`` or the config's ``client.transport``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox_core import Sandbox
from sandbox_core.config import load_config
from sandbox_core.errors import SandboxError, ValidationFailed
from sandbox_core.testing import ServerProcess

URL = "http://127.0.0.1:9"  # never reached: the transport is refused before any connection


@pytest.fixture(autouse=True)
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("SANDBOX_CONFIG", "SANDBOX_TRANSPORT", "SANDBOX_URL"):
        monkeypatch.delenv(var, raising=False)


async def test_unknown_transport_argument_is_validation_failed() -> None:
    with pytest.raises(ValidationFailed) as info:
        async with Sandbox(URL, transport="pigeon"):
            pass
    error = info.value
    assert isinstance(error, SandboxError) and error.code == "VALIDATION_FAILED" and error.status == 400
    assert "unknown client transport 'pigeon'" in error.message and "'http'" in error.message
    assert "SANDBOX_TRANSPORT" not in error.message
    assert error.details == {"field": "transport", "value": "pigeon"}


async def test_unknown_transport_from_the_environment_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_TRANSPORT", "pigeon")
    with pytest.raises(ValidationFailed) as info:
        async with Sandbox(URL):
            pass
    assert "unknown client transport 'pigeon' (from SANDBOX_TRANSPORT)" in info.value.message
    assert info.value.details["source"] == "SANDBOX_TRANSPORT"


async def test_unknown_transport_from_the_config_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "client.toml"
    path.write_text('[client]\ntransport = "pigeon"\n')
    with pytest.raises(ValidationFailed) as info:
        async with Sandbox(URL, config=load_config(path)):
            pass
    assert f"(from client.transport in {path})" in info.value.message
    assert info.value.details["source"] == "client.transport"


async def test_bad_transport_settings_are_validation_failed(tmp_path: Path) -> None:
    path = tmp_path / "client.toml"
    path.write_text("[transports.http]\nmax_event_bytes = 'big'\n")
    with pytest.raises(ValidationFailed, match=r"transports\.http\.max_event_bytes"):
        async with Sandbox(URL, config=load_config(path)):
            pass


@pytest.mark.parametrize("url", ["127.0.0.1:3000", "localhost", "ftp://127.0.0.1:3000", "http://"])
async def test_a_url_without_an_http_scheme_says_so(url: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        async with Sandbox(url):
            pass
    assert "must start with http:// or https://" in info.value.message
    assert info.value.details == {"field": "url", "value": url}


def test_with_one_transport_installed_the_client_uses_it(sandbox_server_factory: Callable[..., ServerProcess]) -> None:
    server = sandbox_server_factory(transports=["rpc"])
    script = (
        "import asyncio\n"
        "from sandbox_core import Sandbox\n"
        "async def main():\n"
        f"    async with Sandbox({server.url!r}) as sb:\n"
        "        print(sb.transport, (await sb.exec('echo via-$((1+1))')).stdout)\n"
        "asyncio.run(main())\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env = {**clean, "SANDBOX_DISABLED_PLUGINS": "http,ws"}  # as if only sandbox-transport-rpc were installed
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "rpc via-2"
