"""Time as the contract writes it: ISO 8601 in UTC with a ``Z``.

Every timestamp the runtime puts on the wire comes from here.
"""

from __future__ import annotations

import time

_cached_second = -1
_cached_prefix = ""


def now_iso() -> str:
    """The current time with milliseconds (``2026-01-02T03:04:05.678Z``), as the contract's ``timestamp``."""
    global _cached_second, _cached_prefix
    now = time.time()
    second = int(now)
    if second != _cached_second:  # formatting the date is the costly part: once a second
        _cached_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _cached_second = second
    return f"{_cached_prefix}{int((now - second) * 1000):03d}Z"


def iso_ms(seconds: float) -> str:
    """``seconds`` since the epoch with milliseconds (process start and end times)."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)) + f"{int((seconds - whole) * 1000):03d}Z"


def iso_us_from_ns(ns: int) -> str:
    """Nanoseconds since the epoch with microseconds (a file's ``modifiedAt``)."""
    whole, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)) + f"{frac // 1000:06d}Z"
