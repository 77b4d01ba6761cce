"""Children another library starts (a Jupyter kernel's Popen, an asyncio subprocess) are not
orphans: once claimed, the orphan reaper neither reaps them nor ends them, so their library
keeps their exit status."""

from __future__ import annotations

import asyncio
import subprocess
import time

from sandbox_services.orphans import adopted, reap
from sandbox_services.spawn import claim, disclaim


def test_a_claimed_child_is_left_to_its_library() -> None:
    proc = subprocess.Popen(["sh", "-c", "exit 7"])  # as jupyter_client starts a kernel
    try:
        claim(proc.pid)
        assert proc.pid not in adopted()
        time.sleep(0.3)  # it has exited: a zombie until its library waits for it
        reap()  # the orphan reaper's pass leaves it alone...
        assert proc.wait(5) == 7  # ...so its library gets its status (reaped, it would read 0)
    finally:
        disclaim(proc.pid)
        if proc.returncode is None:
            proc.kill()
            proc.wait(5)


async def test_an_unclaimed_foreign_child_counts_as_adopted() -> None:
    proc = await asyncio.create_subprocess_exec("sleep", "5")
    try:
        assert proc.pid in adopted()
    finally:
        proc.kill()
        await proc.wait()
