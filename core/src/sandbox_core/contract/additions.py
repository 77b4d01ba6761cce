"""Our additions to the contract (not upstream's): fields, answers and rpc methods that the
upstream container protocol does not have, listed here so that the generated reference
(``docs/generate_reference.py``) marks each one as ours."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Addition:
    """One addition: ``where`` (a route, or an rpc method), the ``name`` added there and ``what`` it does."""

    where: str
    name: str
    what: str


ADDITIONS: tuple[Addition, ...] = (
    Addition(
        "GET /api/ping, GET /api/version",
        "`runtimeId` (answer)",
        "this run of the server: random, new at every start; a process id of an earlier run is 404"
        " `PROCESS_NOT_FOUND` saying so (`context.runtimeId`, `context.processRuntimeId`)",
    ),
    Addition(
        "rpc `utils.getRuntimeId()`",
        "method",
        "the `runtimeId` (the contract's `ping()` and `getVersion()` answer bare strings)",
    ),
    Addition(
        "POST /api/execute, POST /api/execute/stream, POST /api/process/start (rpc: the options of"
        " `execute`, `executeStream`, `startProcess`)",
        "`idempotencyKey` (request)",
        "1-128 characters: a retry with the same key runs nothing and answers the first request's"
        " outcome (the same result or error; the same process; the stream replayed from offset 0);"
        " with other parameters 409 `IDEMPOTENCY_KEY_REUSED`; held `services.processes."
        "idempotency_window_s` after the request ended, in a table bounded by count and bytes",
    ),
)
