"""sandbox-core: hookspecs, plugin manager, config, errors, registry, server and client.

Every public name is imported on first use (a module ``__getattr__``), so that importing a
submodule (the server, the CLI) does not load the client facade or anything else it does not
use; ``from sandbox_core import Sandbox`` works as usual.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .contract.client import Sandbox, SessionHandle
    from .errors import SandboxError
    from .hookspecs import hookimpl
    from .registry import Service, ServiceContext, ServiceSpec, operation
    from .transport import ClientTransport, ServerMount, TransportSpec

# public name -> the submodule that defines it
_LAZY = {
    "ClientTransport": "transport",
    "Sandbox": "contract.client",
    "SandboxError": "errors",
    "ServerMount": "transport",
    "Service": "registry",
    "ServiceContext": "registry",
    "ServiceSpec": "registry",
    "SessionHandle": "contract.client",
    "TransportSpec": "transport",
    "hookimpl": "hookspecs",
    "operation": "registry",
}

__all__ = [
    "ClientTransport",
    "Sandbox",
    "SandboxError",
    "ServerMount",
    "Service",
    "ServiceContext",
    "ServiceSpec",
    "SessionHandle",
    "TransportSpec",
    "hookimpl",
    "operation",
]


if not TYPE_CHECKING:  # type checkers see the imports above, so a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
