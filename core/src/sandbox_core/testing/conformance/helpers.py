"""Small helpers shared by the conformance suites."""

from __future__ import annotations

import random
import uuid
from typing import Any


def sid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sleeper() -> tuple[str, str]:
    """A long ``sleep`` whose command line is unique, and the pgrep pattern that finds it."""
    seconds = f"86{random.randrange(10**6, 10**7)}"
    return f"sleep {seconds}", f"^sleep {seconds}$"


async def collect(stream: Any) -> list[Any]:
    return [event async for event in stream]


def joined(events: list[Any], kind: type) -> str:
    return "".join(e.data for e in events if isinstance(e, kind))
