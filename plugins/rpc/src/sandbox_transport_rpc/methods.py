"""The contract's RPC methods (``SandboxControlAPI``, section a's RPC column) and how each maps to
a service operation: the server reads this table one way (a positional call to named
parameters), the client the other way (the facade's named parameters to a positional call).

A method's arguments are *slots*: a named parameter (its camelCase wire name), or an options
object (:class:`Spread`) whose keys are named parameters. An argument that is ``undefined`` or
``null`` is "not given" (the parameter keeps its default). Values go to the registry as a
mapping, so their validation (and the ``VALIDATION_FAILED`` error naming a field) is the
registry's. A method without slots (``slots=None``) binds its arguments by position, in the
order of the operation's Python signature (:meth:`ServiceRegistry.bind`): the generic rule,
which also serves every operation of every service without a contract name, as
``api.<service>.<operationInCamelCase>(...)``.

A method's *answer* says how its outcome (:func:`sandbox_core.router.perform`: a result, an
error, or an event stream whose first event has come) is rendered in Cap'n Web terms
(:class:`Answer`); ``shape``, ``event_filter`` and the other fields adjust it. ``api.py`` reads
this table and nothing else about a method.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from capnweb import UNDEFINED
from sandbox_core.clock import now_iso
from sandbox_core.errors import validation_error

#: The getters of ``SandboxControlAPI`` the contract names, in its order.
CONTRACT_GETTERS = ("commands", "files", "processes", "ports", "git", "interpreter", "utils", "backup", "watch")

#: Names on the main object that are not services: the generic named call (see ``api.py``).
RESERVED = frozenset({"call"})


@dataclass(frozen=True)
class Spread:
    """An options object whose keys are named parameters (``keys``: the ones taken; None: all;
    ``rename``: (key, parameter) pairs, for an option the SDK names otherwise)."""

    name: str
    keys: tuple[str, ...] | None = None
    rename: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Callbacks:
    """An argument that is not a parameter: an object of the caller's functions, which the
    stream's events call (``on``: an event's type to the callback's name and its argument, made
    from the event without its ``type``). A callback is awaited: a slow caller slows the run."""

    name: str
    on: Mapping[str, tuple[str, Callable[[dict[str, Any]], Any]]] = field(default_factory=dict)


Slot = str | Spread | Callbacks


class Answer(enum.Enum):
    """How a method's outcome is answered (None in the table: ``SSE`` for a streaming
    operation, else ``VALUE``). An error before the answer rejects the call (see ``api.py``)."""

    #: the operation's result as plain data (camelCase keys, bytes kept), then ``shape``
    VALUE = "value"
    #: a ReadableStream of SSE bytes, one chunk an event; an event of raw bytes (``files.readBytes``)
    #: is sent as it is
    SSE = "sse"
    #: each event calls the caller's callbacks (the method's :class:`Callbacks` slot); the call
    #: resolves to undefined when the stream ends, and rejects when it fails
    CALLBACKS = "callbacks"
    #: ``files.readFile``: ``VALUE``, but with ``{encoding: 'none'}`` the file's metadata and a
    #: ReadableStream of its raw bytes, from two operations (``api.py``)
    FILE = "file"


@dataclass(frozen=True)
class Method:
    """One contract method and the operation it runs."""

    getter: str
    name: str
    service: str
    operation: str
    #: how positional arguments become named parameters (None: by position, see the module doc)
    slots: tuple[Slot, ...] | None = None
    #: how the outcome is answered (None: by the operation, see :class:`Answer`)
    answer: Answer | None = None
    #: the method's result is made here, not by a service (``utils.getCommands``)
    constant: Callable[[], Any] | None = None
    #: SSE streams: an ``event: <type>`` line before each ``data:`` line (commands.executeStream)
    event_lines: bool = False
    #: SSE streams: a failure before the first event is an ``error`` event, not a rejection
    errors_in_band: bool = False
    #: SSE streams: each event (as builtins) reshaped, or dropped when this returns None
    event_filter: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    #: server side: the service's result (as builtins) to the contract's result
    shape: Callable[[Any], Any] | None = None
    #: client side: the contract's result back to what the facade's models expect
    unwrap: Callable[[Any], Any] | None = None
    #: whether the Python client sends the facade's operation through this method (False: the
    #: contract's result lacks what the facade needs; the client uses the generic call)
    client: bool = True
    #: what of the method is ours, not upstream's (the generated reference lists it): "" none
    ours: str = ""

    @property
    def qualname(self) -> str:
        return f"{self.getter}.{self.name}"

    @property
    def callbacks(self) -> tuple[int, Callbacks] | None:
        """The position and the slot of the caller's callbacks (``Answer.CALLBACKS``)."""
        for index, slot in enumerate(self.slots or ()):
            if isinstance(slot, Callbacks):
                return index, slot
        return None


def absent(value: object) -> bool:
    """``undefined`` and ``null`` arguments mean "not given"."""
    return value is None or value is UNDEFINED


def clean(value: Any) -> Any:
    """A value from the wire with ``undefined`` left out of objects (a JavaScript object's
    undefined property is absent, as JSON would have it) and turned into null in arrays."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if v is not UNDEFINED}
    if isinstance(value, list):
        return [None if v is UNDEFINED else clean(v) for v in value]
    return value


def trim(args: Sequence[Any]) -> list[Any]:
    """The arguments without trailing ``undefined`` ones (what JavaScript passes for a missing one)."""
    out = list(args)
    while out and out[-1] is UNDEFINED:
        out.pop()
    return out


def named_params(method: Method, args: Sequence[Any]) -> dict[str, Any]:
    """The named parameters of a call of ``method`` (which has slots) with ``args``."""
    assert method.slots is not None
    args = trim(args)
    if len(args) > len(method.slots):
        wanted = ", ".join(s if isinstance(s, str) else s.name for s in method.slots) or "none"
        raise validation_error(
            f"{method.qualname} takes at most {len(method.slots)} argument{'s' if len(method.slots) != 1 else ''}"
            f" ({wanted}), got {len(args)}",
            "arguments",
        )
    params: dict[str, Any] = {}
    for slot, value in zip(method.slots, args, strict=False):
        if absent(value) or isinstance(slot, Callbacks):
            continue
        if isinstance(slot, str):
            params[slot] = clean(value)
            continue
        if not isinstance(value, dict):
            raise validation_error(
                f"Invalid field '{slot.name}': {method.qualname} takes an object here, not {type(value).__name__}",
                slot.name,
            )
        for key, item in value.items():
            if absent(item) or (slot.keys is not None and key not in slot.keys):
                continue  # unknown options are ignored, as upstream
            params[key] = clean(item)
        for key, name in slot.rename:
            if key in params:
                params[name] = params.pop(key)
    return params


def callbacks_arg(method: Method, args: Sequence[Any]) -> dict[str, Any]:
    """The caller's callbacks of a call of ``method`` (an object; none given: no callbacks)."""
    found = method.callbacks
    assert found is not None
    index, slot = found
    value = args[index] if index < len(args) else None
    if absent(value) or not value:
        return {}
    if not isinstance(value, dict):
        raise validation_error(f"Invalid field '{slot.name}': an object of functions is expected", slot.name)
    return clean(value)  # type: ignore[no-any-return]


def positional_args(method: Method, params: Mapping[str, Any]) -> list[Any] | None:
    """The client side: the positional arguments that carry ``params`` (named, camelCase) to
    ``method``, or None when some parameter has no slot there (then the generic call carries it)."""
    assert method.slots is not None
    covered: set[str] = set()
    args: list[Any] = []
    for slot in method.slots:
        if isinstance(slot, Callbacks):
            return None  # functions do not come from named parameters
        if isinstance(slot, str):
            covered.add(slot)
            args.append(params.get(slot))
            continue
        if slot.keys is None:
            options = {k: v for k, v in params.items() if k not in covered and v is not None}
            covered.update(options)
        else:
            options = {k: params[k] for k in slot.keys if params.get(k) is not None}
            covered.update(slot.keys)
        args.append(options or None)
    if any(v is not None for k, v in params.items() if k not in covered):
        return None
    while args and args[-1] is None:
        args.pop()
    return args


# result shapes ---------------------------------------------------------------------------------


def _session_created(result: Any) -> Any:
    """``utils.createSession``: ``{success, id, message, timestamp, containerPlacementId}``."""
    keys = ("success", "id", "message", "timestamp")
    out = {k: result[k] for k in keys if k in result}
    out["containerPlacementId"] = result.get("containerPlacementId")
    return out


def _ping(result: Any) -> Any:
    return result.get("status", "healthy") if isinstance(result, dict) else result


def _version(result: Any) -> Any:
    return result.get("version", "unknown") if isinstance(result, dict) else result


def _runtime_id(result: Any) -> Any:
    return result.get("runtimeId") if isinstance(result, dict) else None


def _unwrap_ping(result: Any) -> Any:
    return {"success": True, "status": result, "message": "pong", "timestamp": now_iso()}


def _unwrap_version(result: Any) -> Any:
    return {"success": True, "version": result, "timestamp": now_iso()}


def _date(value: Any) -> datetime.datetime:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.datetime.now(datetime.UTC)


def _code_context(ctx: dict[str, Any]) -> dict[str, Any]:
    """A context as the contract's RPC answers it: ``createdAt`` and ``lastUsed`` are Dates."""
    created = _date(ctx.get("createdAt"))
    used = _date(ctx.get("lastUsed")) if ctx.get("lastUsed") else created
    return {"id": ctx["id"], "language": ctx["language"], "cwd": ctx["cwd"], "createdAt": created, "lastUsed": used}


def _context_created(created: Any) -> Any:
    """``interpreter.createCodeContext``: the new context (its ``createdAt`` the answer's time)."""
    return _code_context(
        {
            "id": created["contextId"],
            "language": created["language"],
            "cwd": created["cwd"],
            "createdAt": created["timestamp"],
        }
    )


def _contexts(result: Any) -> Any:
    """``interpreter.listCodeContexts``: the contexts, as an array."""
    return [_code_context(c) for c in result["contexts"]]


def _output(event: dict[str, Any]) -> dict[str, Any]:
    return {"text": event.get("text"), "timestamp": time.time() * 1000}


def _code_error(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": event.get("ename") or "Error",
        "message": event.get("evalue") or event.get("error") or "Unknown error",
        "traceback": event.get("traceback") or [],
    }


#: ``runCodeStream``'s ``{onStdout, onStderr, onResult, onError}``
RUN_CODE_CALLBACKS = Callbacks(
    "callbacks",
    {
        "stdout": ("onStdout", _output),
        "stderr": ("onStderr", _output),
        "result": ("onResult", lambda event: event),
        "error": ("onError", _code_error),
    },
)


def _log_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """``processes.streamProcessLogs``: no ``process_info``, and ``exit`` without ``data``."""
    if event.get("type") == "process_info":
        return None
    if event.get("type") == "exit":
        event.pop("data", None)
    return event


# ``idempotencyKey``, ``argv``, ``stdin`` and ``pty`` are ours (not upstream's): see
# sandbox_services.idempotency and sandbox_services.processes
EXEC_OPTIONS = Spread("options", ("timeoutMs", "env", "cwd", "origin", "idempotencyKey"))
#: ``readFile``'s options; ``offset``, ``length`` and ``tailLines`` are ours (ranged and tail
#: reads), and so is the options argument of ``readFileStream`` (upstream takes none).
READ_OPTIONS = Spread("options", ("encoding", "offset", "length", "tailLines"))
PROCESS_OPTIONS = Spread(
    "options",
    (
        "processId",
        "timeoutMs",
        "env",
        "cwd",
        "encoding",
        "autoCleanup",
        "origin",
        "idempotencyKey",
        "argv",
        "stdin",
        "pty",
    ),
)

METHODS: tuple[Method, ...] = (
    # commands
    Method(
        "commands",
        "execute",
        "commands",
        "execute",
        ("command", "sessionId", EXEC_OPTIONS),
        ours="option `idempotencyKey`",
    ),
    Method(
        "commands",
        "executeStream",
        "commands",
        "execute_stream",
        ("command", "sessionId", EXEC_OPTIONS),
        event_lines=True,
        errors_in_band=True,
        ours="option `idempotencyKey`",
    ),
    # files
    Method(
        "files",
        "readFile",
        "files",
        "read",
        ("path", "sessionId", READ_OPTIONS),
        answer=Answer.FILE,
        ours="options `offset`, `length`, `tailLines`; the answer's `offset`, `length`, `totalSize`",
    ),
    Method(
        "files",
        "readFileStream",
        "files",
        "read_stream",
        ("path", "sessionId", READ_OPTIONS),
        ours="the `options` argument (`encoding`, `offset`, `length`, `tailLines`)",
    ),
    Method("files", "writeFile", "files", "write", ("path", "content", "sessionId", Spread("options", ("encoding",)))),
    Method("files", "writeFileStream", "files", "write_file_stream", ("path", "data", "sessionId")),
    Method("files", "deleteFile", "files", "delete", ("path", "sessionId")),
    Method("files", "renameFile", "files", "rename", ("oldPath", "newPath", "sessionId")),
    Method("files", "moveFile", "files", "move", ("sourcePath", "destinationPath", "sessionId")),
    Method("files", "mkdir", "files", "mkdir", ("path", "sessionId", Spread("options", ("recursive",)))),
    Method("files", "listFiles", "files", "list_files", ("path", "sessionId", "options")),
    Method("files", "exists", "files", "exists", ("path", "sessionId")),
    # processes (listProcesses' optional status filter is ours: upstream takes no argument)
    Method(
        "processes",
        "startProcess",
        "processes",
        "start",
        ("command", "sessionId", PROCESS_OPTIONS),
        ours="options `argv`, `stdin`, `pty`, `idempotencyKey`",
    ),
    Method("processes", "listProcesses", "processes", "list", ("status",)),
    Method("processes", "getProcess", "processes", "get", ("id",)),
    Method("processes", "killProcess", "processes", "kill", ("id",)),
    Method("processes", "killAllProcesses", "processes", "kill_all", ()),
    Method("processes", "getProcessLogs", "processes", "logs", ("id",)),
    Method(
        "processes", "streamProcessLogs", "processes", "stream_logs", ("id",), event_filter=_log_event, client=False
    ),
    # ours: startProcess's argv, stdin and pty options; stdin, any signal, a terminal's size
    Method(
        "processes",
        "writeStdin",
        "processes",
        "write_stdin",
        ("id", "data", Spread("options", ("encoding", "eof", "timeoutMs"))),
        ours="all",
    ),
    Method("processes", "closeStdin", "processes", "close_stdin", ("id",), ours="all"),
    Method("processes", "signal", "processes", "signal", ("id", "signal"), ours="all"),
    Method("processes", "resize", "processes", "resize", ("id", "cols", "rows"), ours="all"),
    # ports
    Method("ports", "watchPort", "ports", "watch_port", (Spread("request"),)),
    # git
    Method(
        "git",
        "checkout",
        "git",
        "checkout",
        ("repoUrl", "sessionId", Spread("options", ("branch", "targetDir", "depth", "timeoutMs"))),
    ),
    # utils (sessions live in the sessions service)
    Method(
        "utils",
        "createSession",
        "sessions",
        "create",
        (Spread("options", ("id", "env", "cwd", "commandTimeoutMs")),),
        shape=_session_created,
        client=False,  # the facade wants the session's data, which the contract's answer has not
    ),
    Method("utils", "listSessions", "sessions", "list", ()),
    Method("utils", "deleteSession", "sessions", "delete", ("sessionId",)),
    # the contract answers ping and getVersion with a bare string, which has no room for the
    # runtimeId: the Python client calls them by the generic call (the whole result)
    Method("utils", "ping", "utils", "ping", (), shape=_ping, unwrap=_unwrap_ping, client=False),
    Method("utils", "getVersion", "utils", "version", (), shape=_version, unwrap=_unwrap_version, client=False),
    # ours: this run of the server (the runtimeId of utils.ping and utils.version)
    Method("utils", "getRuntimeId", "utils", "version", (), shape=_runtime_id, client=False, ours="all"),
    Method("utils", "getCommands", "utils", "commands", (), constant=list),
    # interpreter, backup, watch: their services come from other plugins; until one registers
    # the service, these reject with UNKNOWN_ERROR 404 naming it. Operations are the methods'
    # names in snake_case; request objects are spread into named parameters.
    # interpreter: contexts answer {id, language, cwd, createdAt: Date, lastUsed: Date}
    Method(
        "interpreter",
        "createCodeContext",
        "interpreter",
        "create_code_context",
        (Spread("options", ("language", "cwd", "envVars", "env_vars"), rename=(("envVars", "env_vars"),)),),
        shape=_context_created,
        client=False,
    ),
    Method("interpreter", "listCodeContexts", "interpreter", "list_code_contexts", (), shape=_contexts, client=False),
    Method(
        "interpreter",
        "deleteCodeContext",
        "interpreter",
        "delete_code_context",
        ("id",),
        shape=lambda _: UNDEFINED,
        client=False,
    ),
    Method("interpreter", "streamCode", "interpreter", "run_code", ("context_id", "code", "language")),
    Method(
        "interpreter",
        "runCodeStream",
        "interpreter",
        "run_code",
        ("context_id", "code", "language", RUN_CODE_CALLBACKS, "timeout_ms"),
        answer=Answer.CALLBACKS,
        client=False,
    ),
    Method(
        "backup",
        "createArchive",
        "backup",
        "create_archive",
        ("dir", "archivePath", "sessionId", Spread("options", ("excludes", "gitignore", "compression"))),
    ),
    Method("backup", "restoreArchive", "backup", "restore_archive", ("dir", "archivePath", "sessionId")),
    Method("backup", "uploadParts", "backup", "upload_parts", (Spread("request"),)),
    Method("watch", "watch", "watch", "watch", (Spread("request"),)),
    Method("watch", "checkChanges", "watch", "check_changes", (Spread("request"),)),
)

#: (service, operation) → the Method the Python client uses for it
BY_OPERATION: dict[tuple[str, str], Method] = {
    (m.service, m.operation): m for m in METHODS if m.client and m.slots is not None and m.constant is None
}


def camel(name: str) -> str:
    """An operation's generic method name: ``stream_logs`` → ``streamLogs``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def generic(service: str, operation: str) -> Method:
    """The generic method of an operation with no contract name."""
    return Method(service, camel(operation), service, operation)
