"""What a context starts ends with it, whatever it does to escape (``setsid``, a detached child
whose parent is gone): when the context is deleted, when its executor is replaced, when the server
stops; with a cgroup per executor where the server may write cgroups, and without one (the
environment mark and the server as a child subreaper). Executors listen on no TCP port, and user
code sees no configuration of the server's (its token) and not the Node executor's token."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterable

import httpx
import pytest
from helpers_interp import create, out, results, run

from sandbox_core.contract.models.interpreter import CodeErrorEvent
from sandbox_core.registry import ServiceRegistry
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG
from sandbox_core.testing.procs import Proc, still_alive

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js here")
#: Where the service may use cgroups (as found here), and where it may not.
both_ways = pytest.mark.parametrize("interp_cgroups", [True, False], ids=["cgroups", "no-cgroups"])

#: Python: a sleep in a session of its own whose parent (sh) is gone: out of the kernel's tree
#: and process group. Its pid is the result.
PY_ESCAPE = (
    "import subprocess\n"
    "int(subprocess.check_output(['sh', '-c', 'setsid sleep {n} >/dev/null 2>&1 & echo $!'], text=True))"
)
#: JavaScript: a detached child (a session of its own), unreferenced. Its pid is the result.
JS_ESCAPE = (
    "const c = require('child_process').spawn('sleep', ['{n}'], {{detached: true, stdio: 'ignore'}}); c.unref(); c.pid"
)


def escaped(pid_text: str | None, seconds: int) -> Proc:
    """The escaped sleep the test started (once ``setsid`` has become it), checked to be that
    sleep, in a session of its own: no kill of its executor's process group reaches it."""
    assert pid_text is not None
    proc = Proc.of(int(pid_text))
    deadline = time.monotonic() + 10
    while proc.cmdline() != ["sleep", str(seconds)] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.cmdline() == ["sleep", str(seconds)]
    assert os.getsid(proc.pid) == proc.pid
    return proc


def kill_left(procs: Iterable[Proc]) -> None:
    """Never leave a test's own process behind, even when the test fails."""
    for proc in procs:
        if proc.alive():
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(proc.pid, os.WNOHANG)  # adopted by this process (a subreaper): reap it


@both_ways
async def test_deleting_a_python_context_ends_what_it_detached(interp: ServiceRegistry) -> None:
    ctx = await create(interp)
    sleeper = escaped(results(await run(interp, ctx, PY_ESCAPE.format(n=3102)))[0], 3102)
    try:
        assert sleeper.alive()
        await interp.call("interpreter", "delete_code_context", {"id": ctx})
        assert still_alive([sleeper], within=5.0) == []
    finally:
        kill_left([sleeper])


@needs_node
@both_ways
async def test_deleting_a_js_context_ends_what_it_detached(interp: ServiceRegistry) -> None:
    ctx = await create(interp, "javascript")
    sleeper = escaped(results(await run(interp, ctx, JS_ESCAPE.format(n=3103)))[0], 3103)
    try:
        assert sleeper.alive()
        await interp.call("interpreter", "delete_code_context", {"id": ctx})
        assert still_alive([sleeper], within=5.0) == []
    finally:
        kill_left([sleeper])


@both_ways
@pytest.mark.parametrize("interp_settings", [{"interrupt_grace_s": 0.5}])
async def test_a_replaced_kernel_takes_what_it_detached_along(interp: ServiceRegistry) -> None:
    """A run that ignores the interrupt gets its kernel replaced: what the old kernel started
    ends with it; the context goes on with the fresh kernel."""
    ctx = await create(interp)
    sleeper = escaped(results(await run(interp, ctx, PY_ESCAPE.format(n=3104)))[0], 3104)
    try:
        code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
        events = await run(interp, ctx, code, timeout_ms=300)
        assert isinstance(events[-1], CodeErrorEvent) and "restarted" in events[-1].evalue
        assert still_alive([sleeper], within=5.0) == []
        assert results(await run(interp, ctx, "6 * 7")) == ["42"]
    finally:
        kill_left([sleeper])


def test_stopping_the_server_ends_what_contexts_detached() -> None:
    server = ServerProcess(config=TEST_CONFIG).start()
    sleepers: list[Proc] = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            languages = ["python"] + (["javascript"] if shutil.which("node") else [])
            for n, language in enumerate(languages, 3105):
                ctx = client.post("/api/contexts", json={"language": language}).json()["contextId"]
                code = (PY_ESCAPE if language == "python" else JS_ESCAPE).format(n=n)
                text = client.post("/api/execute/code", json={"context_id": ctx, "code": code}).text
                events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
                pid = next(e["text"] for e in events if e["type"] == "result")
                sleepers.append(escaped(pid, n))
        assert server.stop() == 0
        assert still_alive(sleepers, within=5.0) == []
    finally:
        server.stop()
        kill_left(sleepers)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _tcp_listeners(pid: int) -> set[str]:
    """The inodes of the TCP sockets in LISTEN state of ``pid``'s network namespace."""
    found = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/{table}") as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    found.add(fields[9])
    return found


def _unix_sockets(pid: int) -> set[str]:
    with open(f"/proc/{pid}/net/unix") as fh:
        return {line.split()[6] for line in list(fh)[1:] if len(line.split()) >= 7}


@pytest.mark.parametrize("language", ["python", pytest.param("javascript", marks=needs_node)])
async def test_executors_listen_on_no_tcp_port(interp: ServiceRegistry, language: str) -> None:
    """Read from the executor's own descriptors: none is a listening TCP socket (the kernel's
    sockets are Unix sockets). The same reading sees a TCP listener the code opens itself."""
    ctx = await create(interp, language)
    code = "import os\nos.getpid()" if language == "python" else "process.pid"
    pid = int(results(await run(interp, ctx, code))[0] or 0)
    assert Proc.of(pid).cmdline()
    sockets = _socket_inodes(pid)
    assert sockets & _tcp_listeners(pid) == set()
    if language == "python":
        assert sockets & _unix_sockets(pid)  # its ZeroMQ channels: over Unix sockets
        # the check sees a listener when there is one
        await run(interp, ctx, "import socket\n_s = socket.socket()\n_s.bind(('127.0.0.1', 0))\n_s.listen()")
        assert _socket_inodes(pid) & _tcp_listeners(pid)
        await run(interp, ctx, "_s.close()")
        assert _socket_inodes(pid) & _tcp_listeners(pid) == set()
        # what a forked subprocess prints still reaches the run (through a Unix socket)
        code = "import multiprocessing as mp\np = mp.get_context('fork').Process(target=print, args=('from-child',))\n"
        events = await run(interp, ctx, code + "p.start()\np.join()\np.exitcode")
        assert (out(events), results(events)) == ("from-child\n", ["0"])


TOKEN = "tok-6b1d0c2f9e"

PY_ENV = "import os\n(sorted(os.environ), open('/proc/self/environ', 'rb').read().decode('latin-1'))"
JS_ENV = "[Object.keys(process.env).sort(), require('fs').readFileSync('/proc/self/environ', 'latin1')]"


@pytest.mark.parametrize("language", ["python", pytest.param("javascript", marks=needs_node)])
def test_contexts_see_no_configuration_of_the_server(language: str) -> None:
    """A server run with SANDBOX_TOKEN: a context has it neither in its environment nor in the one
    its process started with (/proc/self/environ), and a JavaScript context has not the Node
    executor's own token either; it has the mark its processes are recognised by."""
    server = ServerProcess(config=TEST_CONFIG, env={"SANDBOX_TOKEN": TOKEN}).start()
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.url, timeout=60, headers=headers) as client:
            ctx = client.post("/api/contexts", json={"language": language}).json()["contextId"]
            code = PY_ENV if language == "python" else JS_ENV
            text = client.post("/api/execute/code", json={"context_id": ctx, "code": code}).text
    finally:
        server.stop()
    assert '"type":"result"' in text.replace(" ", ""), text  # the answer is the environment
    assert TOKEN not in text and "SANDBOX_TOKEN" not in text and "SANDBOX_CONFIG" not in text
    assert "SANDBOX_EXECUTOR_TOKEN" not in text
    assert "SANDBOX_EXECUTOR=" in text


async def test_context_env_vars_cannot_take_the_mark_away(interp: ServiceRegistry) -> None:
    """A context's env_vars may not replace the mark its processes are recognised by."""
    ctx = await create(interp, env_vars={"SANDBOX_EXECUTOR": "mine"})
    events = await run(interp, ctx, "import os\nprint(os.environ['SANDBOX_EXECUTOR'])")
    assert out(events).strip() not in ("", "mine")
