"""Every hook of the sandbox runtime. Plugins implement them with ``@hookimpl``.

Hooks are synchronous; where a hook needs async work it returns an awaitable or an async
context manager for the host to drive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registry import ServiceSpec
    from .transport import TransportSpec

PROJECT = "sandbox"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """Fires once when the host collects services; call ``register(ServiceSpec(...))`` for each one."""


@hookspec
def sandbox_register_transports(register: Callable[[TransportSpec], None]) -> None:
    """Fires once when the host collects transports; call ``register(TransportSpec(...))`` for each one."""


@hookspec(firstresult=True)
def sandbox_map_exception(exc: BaseException, operation: str) -> object | None:
    """Fires when a service call raises something other than a SandboxError; the first plugin to
    return a SandboxError for it wins (firstresult; return None to pass)."""
