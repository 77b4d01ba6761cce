"""CI (.ci/container): drive the server in the container with our Python client, from outside.

    SANDBOX_TOKEN=... python3 .ci/container_drive.py URL [--metrics]
    python3 .ci/container_drive.py --sandboxd GRPC_PORT REST_PORT

On every transport (http, ws, rpc): a command (``id -u`` is 1000), a file round trip, a
background process with its logs, a Python context. Then: the token is in no environment user
code can list (``/proc/1/environ``, ``ps e``); an orphan that exits is reaped (no zombie); a
backup and its restore work; ``GET /api/ready`` is 200 without the token; with ``--metrics``,
``GET /metrics`` parses with prometheus-client's parser. Last, it leaves work running for the
stop check (background processes, an orphan, a terminal, Python and JavaScript contexts).
With ``--sandboxd``: the image's sandboxd personality on 127.0.0.1 (its published ports),
driven with the official agent-sandbox SDK (``k8s-agent-sandbox``) as a test drives it without a
cluster (tests/sandboxd/helpers_sandboxd.py): ``commands.run`` (exit code, stderr, ``id -u`` is
1000), the files API (write, read, list, exists, delete, recursive delete) and
``GET /v1/health`` (200, no credential).
Prints a line per check; exits non-zero at the first failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from sandbox_core import Sandbox
from sandbox_core.contract.models.interpreter import CodeResultEvent, CodeStdoutEvent

TRANSPORTS = ("http", "ws", "rpc")


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"container-drive: FAILED: {what}")


async def drive(url: str, token: str, transport: str) -> None:
    async with Sandbox(url, transport=transport, token=token) as sb:
        sid = f"py-{transport}"
        r = await sb.exec("id -u", session_id=sid)
        check(r.exit_code == 0 and r.stdout.strip() == "1000", f"{transport}: id -u: {r}")
        path = f"/workspace/py-{transport}.txt"
        await sb.files.write(path, f"round trip over {transport} ✓\n", session_id=sid)
        got = (await sb.files.read(path, session_id=sid)).content
        check(got == f"round trip over {transport} ✓\n", f"{transport}: file read back {got!r}")
        pid = f"py-bg-{transport}"
        await sb.processes.start("echo out; echo err >&2", process_id=pid, session_id=sid)
        async for _ in sb.processes.stream_logs(pid):
            pass
        logs = await sb.processes.logs(pid)
        check((logs.stdout, logs.stderr) == ("out\n", "err\n"), f"{transport}: process logs {logs}")
        ctx = await sb.interpreter.create_context("python")
        printed, results = [], []
        async for event in sb.interpreter.run_code("import os\nprint(os.getuid())\n6 * 7", context_id=ctx.context_id):
            if isinstance(event, CodeStdoutEvent):
                printed.append(event.text)
            elif isinstance(event, CodeResultEvent):
                results.append(event.text)
        check("".join(printed) == "1000\n" and "42" in results, f"{transport}: python context {printed} {results}")
        await sb.interpreter.delete_context(ctx.context_id)
        print(f"container-drive: {transport}: command, file round trip, background process, python context: ok")


async def token_out_of_reach(url: str, token: str) -> None:
    """The token is in no environment user code can list: its own, the server's
    (``/proc/1/environ``, blanked by the server at start) or any process's (``ps e``). (Its
    memory is another matter: see the README's "Run it in a container".)"""
    async with Sandbox(url, transport="http", token=token) as sb:
        r = await sb.exec("cat /proc/1/environ", session_id="secrets")
        check(r.exit_code == 0 and "SANDBOX_TOKEN=\0" in r.stdout, f"/proc/1/environ: {r}")
        check(token not in r.stdout, "the token is in /proc/1/environ")
        r = await sb.exec("env; cat /proc/self/environ; ps -eww e -o args", session_id="secrets")
        check(r.exit_code == 0 and token not in r.stdout, "the token is in user code's environment or ps e")
        print("container-drive: the token is not in /proc/1/environ, ps e, or user code's environment: ok")


async def orphans_are_reaped(url: str, token: str) -> None:
    """PID 1 is the server: an orphan that exits (its parent gone first) is reaped, no zombie."""
    async with Sandbox(url, transport="http", token=token) as sb:
        script = (
            "(setsid sleep 0.3 &); sleep 0.5; "
            "for i in $(seq 50); do z=$(ps -eo stat=,pid=,comm= | awk '$1 ~ /^Z/'); "
            '[ -z "$z" ] && break; sleep 0.2; done; '
            'echo "zombies:[$z]"'
        )
        r = await sb.exec(script, session_id="orphans")
        check(r.stdout.strip() == "zombies:[]", f"an orphan was not reaped: {r.stdout!r}")
        print("container-drive: an orphan that exits is reaped by PID 1 (the server): ok")


async def backup_round_trip(url: str, token: str) -> None:
    """A backup (mksquashfs into /var/backups) and its restore (unsquashfs), as uid 1000."""
    async with Sandbox(url, transport="http", token=token) as sb:
        await sb.files.write("/workspace/bk/a.txt", "kept\n", session_id="bk")
        await sb.backup.create_archive("/workspace/bk", "/var/backups/ci.sqfs", session_id="bk")
        await sb.files.write("/workspace/bk/a.txt", "changed\n", session_id="bk")
        await sb.backup.restore_archive("/workspace/bk", "/var/backups/ci.sqfs", session_id="bk")
        got = (await sb.files.read("/workspace/bk/a.txt", session_id="bk")).content
        check(got == "kept\n", f"restored {got!r}")
        print("container-drive: backup into /var/backups and restore: ok")


def probes(url: str, token: str, metrics: bool) -> None:
    with urllib.request.urlopen(f"{url}/api/ready", timeout=10) as resp:  # no token: a probe
        check(resp.status == 200, f"/api/ready answered {resp.status}")
    print("container-drive: GET /api/ready (no token): 200")
    if not metrics:
        return
    from prometheus_client.parser import text_string_to_metric_families

    req = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    names = [family.name for family in text_string_to_metric_families(text)]
    check(any(name.startswith("sandbox_") for name in names), f"/metrics has no sandbox_ metric: {names}")
    print(f"container-drive: GET /metrics: {len(names)} metric families parse")


async def leave_work_running(url: str, token: str) -> None:
    """For the stop check: what SIGTERM must end."""
    async with Sandbox(url, transport="http", token=token) as sb:
        await sb.processes.start("sleep 600", process_id="left-running", session_id="stop")
        await sb.processes.start("(setsid sleep 600 &) ; sleep 600", process_id="left-orphan", session_id="stop")
        await sb.processes.start(argv=["bash", "-i"], pty=(24, 80), process_id="left-terminal")  # util-linux setsid
        await sb.interpreter.create_context("python")
        await sb.interpreter.create_context("javascript")
        r = await sb.exec("ps -eo uid=,comm= | sort | uniq -c", session_id="stop")
        print(f"container-drive: left running for the stop check:\n{r.stdout.rstrip()}")


class NoCluster:
    """What the SDK's ``Sandbox`` asks its Kubernetes helper for: a Sandbox object whose pod IP
    is loopback, where the container's ports are published."""

    injected_api_client = None

    def get_sandbox(self, name: str, namespace: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "status": {"podIPs": [{"ip": "127.0.0.1"}]}}


def rest_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def drive_sandboxd(grpc_port: int, rest_port: int) -> None:
    from k8s_agent_sandbox.models import SandboxdInClusterConnectionConfig
    from k8s_agent_sandbox.sandbox import Sandbox

    rest = f"http://127.0.0.1:{rest_port}"
    status, body = rest_get(f"{rest}/v1/health")
    check(status == 200 and body.get("status") == "ok", f"/v1/health: {status} {body}")
    print("container-drive: sandboxd: GET /v1/health (no credential): 200")

    config = SandboxdInClusterConnectionConfig(mode="in-cluster-pod-ip", grpc_port=grpc_port, rest_port=rest_port)
    sb = Sandbox(claim_name="ci", sandbox_id="ci", connection_config=config, k8s_helper=NoCluster())
    try:
        r = sb.commands.run("id -u; pwd", timeout=30)
        check((r.exit_code, r.stdout, r.stderr) == (0, "1000\n/workspace\n", ""), f"sandboxd: id -u: {r}")
        r = sb.commands.run("echo out; echo oops >&2; exit 3", timeout=30)
        check((r.exit_code, r.stdout, r.stderr) == (3, "out\n", "oops\n"), f"sandboxd: exit 3: {r}")
        print("container-drive: sandboxd: SDK commands.run (id -u 1000, cwd /workspace, exit code, stderr): ok")

        content = "written by the SDK ✓\n".encode()
        sb.files.write("ci/sdk.txt", content)
        check(sb.files.read("ci/sdk.txt") == content, "sandboxd: files.read")
        r = sb.commands.run("cat /workspace/ci/sdk.txt; stat -c %u /workspace/ci/sdk.txt", timeout=30)
        check(r.stdout.encode() == content + b"1000\n", f"sandboxd: the command sees the file: {r}")
        entries = {(e.name, e.type, e.size) for e in sb.files.list("ci")}
        check(entries == {("sdk.txt", "file", len(content))}, f"sandboxd: files.list: {entries}")
        check(sb.files.exists("ci/sdk.txt") and not sb.files.exists("ci/none"), "sandboxd: files.exists")
        sb.files.delete("ci/sdk.txt")
        check(not sb.files.exists("ci/sdk.txt"), "sandboxd: files.delete")
        sb.files.write("ci/tree/a/b.txt", b"x")
        sb.files.delete("ci", recursive=True)
        check(not sb.files.exists("ci"), "sandboxd: files.delete recursive")
        print("container-drive: sandboxd: SDK files write, read, list, exists, delete (and recursive): ok")
    finally:
        sb.connector.close()


async def main() -> None:
    if sys.argv[1] == "--sandboxd":
        drive_sandboxd(int(sys.argv[2]), int(sys.argv[3]))
        return
    url, token = sys.argv[1], os.environ["SANDBOX_TOKEN"]
    for transport in TRANSPORTS:
        await drive(url, token, transport)
    await token_out_of_reach(url, token)
    await orphans_are_reaped(url, token)
    await backup_round_trip(url, token)
    probes(url, token, "--metrics" in sys.argv[2:])
    await leave_work_running(url, token)


if __name__ == "__main__":
    asyncio.run(main())
