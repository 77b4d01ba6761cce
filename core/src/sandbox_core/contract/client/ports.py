"""``Sandbox.ports``: wait for a port in the sandbox to be ready."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Literal

from sandbox_core.contract.client import _params, _typed
from sandbox_core.contract.models.ports import AnyPortWatchEvent

if TYPE_CHECKING:
    from sandbox_core.contract.client import Sandbox


class PortsAPI:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def watch(
        self,
        port: int,
        *,
        mode: Literal["http", "tcp"] = "http",
        path: str | None = None,
        status_min: int | None = None,
        status_max: int | None = None,
        process_id: str | None = None,
        interval_ms: float | None = None,
    ) -> AsyncGenerator[AnyPortWatchEvent, None]:
        """Poll ``port``: yields ``watching``, then one of ``ready`` / ``process_exited`` / ``error``.

        The watch has no deadline of its own: stop iterating (or wrap it in a timeout) to end it.
        """
        return _typed(
            self._sb.stream(
                "ports",
                "watch_port",
                **_params(
                    port=port,
                    mode=mode,
                    path=path,
                    statusMin=status_min,
                    statusMax=status_max,
                    processId=process_id,
                    interval=interval_ms,
                ),
            ),
            AnyPortWatchEvent,
        )
