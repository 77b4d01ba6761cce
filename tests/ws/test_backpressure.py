"""A client that stops reading stops the producer instead of growing the server's memory: frames
wait in a bounded send queue, the producer waits for room, and a command's pipe fills (so it
slows as over http). Measured as the server's VmRSS while a ``yes`` and a read stream of a 4 GiB
file are not read; the figures are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from helpers_ws import RawWs, events_of, rss_mb, wait_for

from sandbox_core import Sandbox
from sandbox_core.testing import ServerProcess

#: The server's RSS may grow this much while nobody reads (the send queue is 1 MiB, the socket
#: buffers are the kernel's): without backpressure `yes` alone fills gigabytes in seconds.
BOUND_MB = 24


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


async def test_a_client_that_stops_reading_leaves_server_memory_bounded(
    sandbox_server_factory: Callable[..., ServerProcess],
) -> None:
    server = sandbox_server_factory()
    async with Sandbox(server.url, transport="ws") as sb:  # the shells and code paths exist before the baseline
        await sb.exec("true")
        await sb.files.write("/tmp/ws-warm.txt", "warm")
        [e async for e in sb.files.read_stream("/tmp/ws-warm.txt")]
        await sb.exec("truncate -s 4G /tmp/ws-big-sparse.bin", session_id="__DISABLE_SESSION__")
    await asyncio.sleep(0.5)
    baseline = rss_mb(server.pid)
    ws = await RawWs.connect(server.url, rcvbuf=4096)  # a small window, then nobody reads
    try:
        await ws.request("yes", "POST", "/api/execute/stream", {"command": "sh -c 'echo $$; exec yes'"})
        await ws.request("file", "POST", "/api/read/stream", {"path": "/tmp/ws-big-sparse.bin"})
        first = events_of([await ws.frame()])[0]
        while first["type"] != "stdout":
            first = events_of([await ws.frame()])[0]
        yes_pid = int(first["data"].split()[0])
        await asyncio.sleep(2.0)  # the pipes and queues fill
        samples = []
        cpu0 = cpu_seconds(yes_pid)
        for _ in range(30):  # 3 s more, sampled
            await asyncio.sleep(0.1)
            samples.append(rss_mb(server.pid))
        cpu = cpu_seconds(yes_pid) - cpu0
        growth = max(samples) - baseline
        print(
            f"\nserver RSS with a stalled ws reader: baseline {baseline:.1f} MB, peak {max(samples):.1f} MB, "
            f"growth {growth:.1f} MB; `yes` used {cpu:.2f} s of CPU in those 3 s"
        )
        assert growth < BOUND_MB, (baseline, samples)
        assert samples[-1] - samples[0] < 4, samples  # flat: not growing at all any more
        assert cpu < 0.5  # `yes` is blocked on its full pipe, not running on
    finally:
        ws.abort()
    async with Sandbox(server.url, transport="ws") as sb:  # the stalled streams end with their socket
        assert await wait_for(lambda: _gone(yes_pid))
        assert (await sb.exec("echo ok")).stdout == "ok"
        await sb.exec("rm -f /tmp/ws-big-sparse.bin", session_id="__DISABLE_SESSION__")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_python_stream_reader_that_pauses_slows_the_command(ws_server: ServerProcess) -> None:
    """The client holds a stream's unread events up to ``stream_buffer_bytes``, then stops reading
    the socket: the server's queue fills and the command blocks on its pipe (nothing grows)."""
    from sandbox_transport_ws.settings import WsSettings

    async with Sandbox(ws_server.url, transport="ws", settings=WsSettings(stream_buffer_bytes=64 * 1024)) as sb:
        stream = sb.exec_stream("sh -c 'echo $$; exec yes'")
        pid = 0
        async for event in stream:
            data = getattr(event, "data", "")
            if data:
                pid = int(data.split()[0])
                break
        transport = sb._transport
        await asyncio.sleep(2.0)  # nobody reads the stream: buffers fill, then everything waits
        cpu0 = cpu_seconds(pid)
        await asyncio.sleep(2.0)
        assert cpu_seconds(pid) - cpu0 < 0.5  # `yes` is blocked
        buffered = next(iter(transport._conn.pending.values())).stream  # type: ignore[attr-defined]
        assert buffered is not None and buffered.size < 64 * 1024 + 256 * 1024, buffered.size
        seen = 0
        async for event in stream:  # reading again: it runs again
            seen += len(getattr(event, "data", ""))
            if seen > 4 * 1024 * 1024:
                break
        await stream.aclose()
        assert await wait_for(lambda: _gone(pid))
