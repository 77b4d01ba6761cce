"""The contract's routes and how each maps to a service operation, shared by every transport that
speaks them (http as REST + SSE, ws as frames) and by their clients.

A route names the operation it calls; path segments ``{x}`` and query keys become
parameters; ``wrap`` shapes a result into the route's success body where the contract's
shape is not simply the result, and ``unwrap`` reverses it on the client side. Any operation
without a contract route is reachable at ``POST /api/{service}/{operation}`` (see
:data:`GENERIC_PREFIX`), answering ``{"success": true, "result": ..., "timestamp": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from sandbox_core.clock import now_iso
from sandbox_core.routing import Route, RouteTable

GENERIC_PREFIX = "/api/"


def _data_list(key: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """A result ``{key: [...]}`` sent as ``{"data": [...]}`` (the contract's session list)."""

    def wrap(result: Any) -> Any:
        fields = msgspec.to_builtins(result)
        return {"success": True, "data": fields[key], "timestamp": fields.get("timestamp") or now_iso()}

    def unwrap(body: Any) -> Any:
        return {**body, key: body.get("data", [])}

    return wrap, unwrap


_session_list = _data_list("sessions")

#: The ranged and tail reads' fields (ours).
_RANGES = "`offset` (bytes, negative from the end), `length`, `tailLines`"

ROUTES: list[Route] = [
    Route("POST", "/api/execute", "commands", "execute", session_fallback=True, ours="field `idempotencyKey`"),
    Route(
        "POST",
        "/api/execute/stream",
        "commands",
        "execute_stream",
        stream=True,
        session_fallback=True,
        ours="field `idempotencyKey`",
    ),
    Route("POST", "/api/session/create", "sessions", "create"),
    Route("GET", "/api/session/list", "sessions", "list", wrap=_session_list[0], unwrap=_session_list[1]),
    Route("POST", "/api/session/delete", "sessions", "delete"),
    Route("GET", "/api/ping", "utils", "ping", ours="answer field `runtimeId`"),
    Route("GET", "/api/version", "utils", "version", ours="answer field `runtimeId`"),
    Route(
        "POST", "/api/read", "files", "read", ours=_RANGES + "; the answer then adds `offset`, `length`, `totalSize`"
    ),
    Route(
        "POST",
        "/api/read/stream",
        "files",
        "read_stream",
        stream=True,
        ours=_RANGES + ", `encoding`; the `metadata` event then adds `offset`, `length`, `totalSize`",
    ),
    Route("POST", "/api/write", "files", "write"),
    Route("POST", "/api/delete", "files", "delete"),
    Route("POST", "/api/rename", "files", "rename"),
    Route("POST", "/api/move", "files", "move"),
    Route("POST", "/api/mkdir", "files", "mkdir"),
    Route("POST", "/api/list-files", "files", "list_files"),
    Route("POST", "/api/exists", "files", "exists"),
    Route("POST", "/api/port-watch", "ports", "watch_port", stream=True),
    Route("POST", "/api/git/checkout", "git", "checkout", session_fallback=True),
    Route("POST", "/api/process/start", "processes", "start", ours="fields `argv`, `stdin`, `pty`, `idempotencyKey`"),
    Route("GET", "/api/process/list", "processes", "list", query=("status",)),
    Route("DELETE", "/api/process/kill-all", "processes", "kill_all"),
    Route("GET", "/api/process/{id}", "processes", "get", ours="fields `argv`, `stdin`, `pty`, `awaitingInput`"),
    Route("DELETE", "/api/process/{id}", "processes", "kill"),
    Route("GET", "/api/process/{id}/logs", "processes", "logs"),
    Route(
        "GET",
        "/api/process/{id}/stream",
        "processes",
        "stream_logs",
        stream=True,
        query=("offset",),
        ours="`offset`, events `gap` and `awaiting_input`",
    ),
    # ours: a process's stdin, any signal, its terminal's size
    Route("POST", "/api/process/{id}/stdin", "processes", "write_stdin", ours="all"),
    Route("POST", "/api/process/{id}/signal", "processes", "signal", ours="all"),
    Route("POST", "/api/process/{id}/resize", "processes", "resize", ours="all"),
    # interpreter routes
    Route("GET", "/api/interpreter/health", "interpreter", "health"),
    Route("POST", "/api/contexts", "interpreter", "create_code_context"),
    Route("GET", "/api/contexts", "interpreter", "list_code_contexts"),
    Route("DELETE", "/api/contexts/{id}", "interpreter", "delete_code_context"),
    Route("POST", "/api/execute/code", "interpreter", "run_code", stream=True),
    # watch routes
    Route("POST", "/api/watch", "watch", "watch", stream=True),
    Route("POST", "/api/watch/check", "watch", "check_changes"),
    Route("POST", "/api/watch/list", "watch", "list", ours="all (diagnostics: the active watches)"),
    # backup routes
    Route("POST", "/api/backup/create", "backup", "create_archive", session_fallback=True),
    Route("POST", "/api/backup/restore", "backup", "restore_archive", session_fallback=True),
]


TABLE = RouteTable(ROUTES, generic_prefix=GENERIC_PREFIX)


def request_for(
    service: str, operation: str, params: Mapping[str, Any]
) -> tuple[Route | None, str, str, dict[str, str] | None, dict[str, Any] | None]:
    """How a client calls an operation of this contract (see :meth:`RouteTable.request_for`)."""
    return TABLE.request_for(service, operation, params)
