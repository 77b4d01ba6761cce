"""sandbox-core: hookspecs, plugin manager, config, errors, registry, server and client."""

from .client import Sandbox, SessionHandle
from .errors import SandboxError
from .hookspecs import hookimpl
from .registry import ServiceContext, ServiceSpec, operation
from .transport import ClientTransport, ServerMount, TransportSpec

__all__ = [
    "ClientTransport",
    "Sandbox",
    "SandboxError",
    "ServerMount",
    "ServiceContext",
    "ServiceSpec",
    "SessionHandle",
    "TransportSpec",
    "hookimpl",
    "operation",
]
