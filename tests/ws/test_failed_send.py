"""A send that fails closes the socket with 1011 and ends every request on it (PR #253's review
item 2: upstream swallowed the failure and kept pumping a dead socket while its client waited).

Hypercorn never fails a send (a dead socket reads as a disconnect), so the ws app is driven in
process (failed_send_harness.py, in a subprocess) with a real registry and an ASGI ``send`` that
starts failing while a stream and a foreground exec run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).with_name("failed_send_harness.py")


def test_a_failed_send_closes_with_1011_and_ends_every_request(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(HARNESS), str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result.get("start") == "start", result
    assert result["closes"] == [{"type": "websocket.close", "code": 1011, "reason": "Send failed"}]
    assert result["stream_status"] == "killed"  # the stream's command was ended
    assert result["sleeper_ended"] is True  # and the foreground exec's command too
    assert result["sent_after_close"] == 0  # nothing is pumped into the dead socket
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
