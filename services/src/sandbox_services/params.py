"""Parameter and setting types shared by the services (msgspec validates them on every call)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

PositiveInt = Annotated[int, Meta(gt=0)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
#: A duration in milliseconds that must be positive (a timeout, a limit).
PositiveMs = PositiveInt
#: Per-command environment: a None value is skipped (as the contract's ``undefined``).
Env = dict[str, str | None]
