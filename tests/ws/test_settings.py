"""``[transports.ws]``: a bad value stops start-up with a message naming the key."""

from __future__ import annotations

import pytest

from sandbox_core.testing import ServerProcess


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"max_frame_bytes": 0}, "transports.ws.max_frame_bytes: Expected `int` >= 1, got 0"),
        ({"max_in_flight": "many"}, "transports.ws.max_in_flight: Expected `int`, got `str`"),
        ({"ping_interval_s": -1}, "transports.ws.ping_interval_s"),
        ({"max_queued": 5}, "unknown key 'transports.ws.max_queued'"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_key(table: dict[str, object], message: str) -> None:
    server = ServerProcess(config={"transports": {"ws": table}}, startup_timeout=20)
    try:
        with pytest.raises(RuntimeError):
            server.start()
        assert any(message in line for line in server.log), list(server.log)[-5:]
    finally:
        server.stop()
