"""Parameter and setting types shared by the services (msgspec validates them on every call).

Every number a caller sends has an upper bound as well as a lower one, so a value out of
range is 400 ``VALIDATION_FAILED`` naming the field: never a 500 from an overflow deeper
down (``10**400 / 1000`` cannot become a float), never a setting that can never be met.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

#: The largest signed 64-bit integer: the bound of counts, sizes and byte offsets.
MAX_INT64 = 2**63 - 1
#: The longest duration in milliseconds (about 24.8 days; JavaScript's ``setTimeout`` limit,
#: so a value the official client can send is one we can honour).
MAX_MS = 2**31 - 1

PositiveInt = Annotated[int, Meta(gt=0, le=MAX_INT64)]
#: Also a byte offset into a stream (a process log's ``offset``): 0 to ``MAX_INT64``.
NonNegativeInt = Annotated[int, Meta(ge=0, le=MAX_INT64)]
#: A duration in milliseconds that must be positive (a timeout, a limit): 1 to ``MAX_MS``.
PositiveMs = Annotated[int, Meta(gt=0, le=MAX_MS)]
#: A duration in seconds (a setting): more than 0, at most ``MAX_MS`` milliseconds.
PositiveSeconds = Annotated[float, Meta(gt=0, le=MAX_MS / 1000)]
#: An HTTP status code (100 to 599).
HttpStatus = Annotated[int, Meta(ge=100, le=599)]
#: ``git clone --depth``: git takes a positive C ``int``, so 1 to 2**31 - 1.
GitDepth = Annotated[int, Meta(gt=0, le=2**31 - 1)]
#: Per-command environment: a None value is skipped (as the contract's ``undefined``).
Env = dict[str, str | None]
#: A byte offset into a file: negative counts from the end (-``MAX_INT64`` to ``MAX_INT64``).
FileOffset = Annotated[int, Meta(ge=-MAX_INT64, le=MAX_INT64)]
#: A file's permission bits: an octal string (``"0644"``, ``"755"``, ``"04755"``) or a number
#: (``420``, as JSON has no octal), 0 to ``0o7777``.
FileMode = Annotated[str, Meta(pattern=r"^0?[0-7]{3,4}$")] | Annotated[int, Meta(ge=0, le=0o7777)]


def file_mode(mode: str | int | None) -> int | None:
    """The permission bits a :data:`FileMode` names (None stays None)."""
    return int(mode, 8) if isinstance(mode, str) else mode
