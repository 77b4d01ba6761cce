"""The server's own configuration (its token above all) stays out of the environments it gives
to user code: session shells, sessionless commands, exec streams, background processes. (Terminals:
tests/terminals/test_pty_environment.py; interpreter contexts: tests/interpreter.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from sandbox_core import Sandbox
from sandbox_core.config import SERVER_ENVIRONMENT, user_environment
from sandbox_core.contract.models import StdoutEvent
from sandbox_core.contract.models.processes import LogStdoutEvent
from sandbox_core.testing import ServerProcess

TOKEN = "tok-never-shown-7f3a"
#: every variable the server reads of its own, set for the server under test
SERVER_VARS = {"SANDBOX_TOKEN": TOKEN, "SANDBOX_TRACE_HOOKS": "0", "SANDBOX_URL": "http://x.invalid"}
#: a variable the server has nothing to do with, which user code inherits as usual
PASSED_ON = {"SBX_USER_VAR": "kept"}
PROBE = (
    "env | grep -c '^SANDBOX_\\(TOKEN\\|CONFIG\\|TRACE_HOOKS\\|URL\\)=' ; "
    "echo TOKEN=${SANDBOX_TOKEN:-unset} KEPT=$SBX_USER_VAR"
)
EXPECTED = "0\nTOKEN=unset KEPT=kept"


def test_user_environment_drops_exactly_the_servers_variables() -> None:
    env = {**{name: "x" for name in SERVER_ENVIRONMENT}, "PATH": "/bin", "SANDBOX_SESSION": "s", "HOME": "/h"}
    assert user_environment(env) == {"PATH": "/bin", "SANDBOX_SESSION": "s", "HOME": "/h"}
    assert {"SANDBOX_TOKEN", "SANDBOX_CONFIG"} <= SERVER_ENVIRONMENT


async def test_user_code_never_sees_the_token(sandbox_server_factory: type[ServerProcess]) -> None:
    server = sandbox_server_factory(env={**SERVER_VARS, **PASSED_ON})  # SANDBOX_CONFIG is set too
    async with Sandbox(server.url, transport="http", token=TOKEN) as sb:
        assert (await sb.exec(PROBE, session_id="envs")).stdout == EXPECTED  # a session's shell
        assert (await sb.exec(PROBE)).stdout.rstrip("\n") == EXPECTED  # sessionless
        streamed = "".join(
            [e.data async for e in sb.exec_stream(PROBE, session_id="envs") if isinstance(e, StdoutEvent)]
        )
        assert streamed.rstrip("\n") == EXPECTED
        await sb.processes.start(PROBE, process_id="env-probe", session_id="envs")
        logs = ""
        async for event in sb.processes.stream_logs("env-probe"):
            if isinstance(event, LogStdoutEvent):
                logs += event.data
        assert logs.rstrip("\n") == EXPECTED
    # the token still guards the server
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.post("/api/execute", json={"command": "true"})).status_code == 401


async def test_the_token_is_not_in_the_servers_proc_environ(sandbox_server_factory: type[ServerProcess]) -> None:
    """``/proc/<server>/environ`` (what ``ps e`` and ``cat /proc/1/environ`` in a container
    print) shows SANDBOX_TOKEN blanked; the server still requires and accepts the token."""
    server = sandbox_server_factory(env={**SERVER_VARS, **PASSED_ON})
    environ = (await asyncio.to_thread(Path(f"/proc/{server.pid}/environ").read_bytes)).split(b"\0")
    assert b"SANDBOX_TOKEN=" in environ  # the name stays, its value is gone
    assert TOKEN.encode() not in b"\0".join(environ)
    assert b"SBX_USER_VAR=kept" in environ  # the rest of it is left alone
    async with Sandbox(server.url, transport="http", token=TOKEN) as sb:
        probe = await sb.exec(f"cat /proc/{server.pid}/environ | tr '\\0' '\\n' | grep -c {TOKEN} || true")
        assert probe.stdout.strip() == "0"  # user code listing the server's environment: no token
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.post("/api/execute", json={"command": "true"})).status_code == 401
