"""A third-party service plugin used by the tests: registered only through its entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import msgspec

from sandbox_core import SandboxError, ServiceContext, ServiceSpec, hookimpl, operation


class GreeterSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    greeting: str = "hello"


class Greeter:
    def __init__(self, ctx: ServiceContext) -> None:
        self.greeting = ctx.settings.greeting

    @operation
    async def hello(self, name: str, excited: bool = False) -> dict[str, Any]:
        """Greet ``name``."""
        return {"greeting": f"{self.greeting} {name}{'!' if excited else ''}"}

    @operation
    async def count(self, upto: Annotated[int, msgspec.Meta(ge=0, le=1000)]) -> AsyncIterator[dict[str, Any]]:
        """Stream the numbers 1..upto."""
        for i in range(1, upto + 1):
            yield {"type": "number", "value": i}

    @operation
    async def refuse(self, reason: str) -> None:
        """Always fails with a contract error code."""
        raise SandboxError("RESOURCE_BUSY", f"refused: {reason}", {"reason": reason})


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    register(ServiceSpec("greeter", Greeter, GreeterSettings, "test-only greeter"))
