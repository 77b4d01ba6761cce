"""A test-side :class:`~sandbox_core.transport.ClientTransport` that speaks only the sandboxd wire:
gRPC ``process.v1.ProcessService`` (the official SDK's own generated messages, so that our .proto
is not what checks itself), our ``sandbox.v1`` extensions (Watch, Jupyter), and the REST files API,
with ``grpc.aio`` and ``httpx``.

It maps the contract's operations the wire can express onto it and builds the contract's result
and event shapes from what the wire answers. An operation (or a parameter of one) the wire cannot
express raises :class:`Inexpressible` naming it, which the conformance module turns into a skip.

What the wire never carries and this client therefore supplies itself, stated once here:

* ``timestamp`` of every result and event: the client's clock when the answer arrived (the
  sandboxd messages carry no time). ``duration`` of an exec result: measured by the client around
  the call. No test this client runs asserts either.
* a process id: the wire's int32 from ``InitEvent``, as its decimal string; no ``pid``.
* ``success``: derived from the answer (an OK status; an exit code of 0 for an exec).
* ``written`` of a stdin write: the length of the data sent, as an OK ``WriteStdin`` means the
  whole input was written.

Errors: a gRPC status or REST error becomes the contract's code only where that is unambiguous for
the operation (see :data:`GRPC_CODES`); any other becomes a :class:`WireError` whose code is
``GRPC_<STATUS>`` or ``REST_<status>_<code>``, never a contract code.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import grpc
import grpc.aio
import httpx
from google.protobuf import empty_pb2
from k8s_agent_sandbox.commands._process_stubs import process_pb2 as pb

from sandbox_core.contract.models.interpreter import MIME_KEYS
from sandbox_core.errors import ErrorCode, SandboxError, error_from_code
from sandbox_transport_sandboxd.pb import sandbox_ext_v1_pb2 as ext

#: The contract's sessionless session id (a fresh process, no session state): sandboxd's model.
SESSIONLESS = "__DISABLE_SESSION__"

PROCESS = "/process.v1.ProcessService/"

#: The contract's signal names and numbers the wire's Signal enum has.
SIGNALS: dict[str | int, tuple[int, int]] = {}
for _name, _number, _wire in (
    ("SIGINT", 2, pb.SIGNAL_SIGINT),
    ("SIGKILL", 9, pb.SIGNAL_SIGKILL),
    ("SIGTERM", 15, pb.SIGNAL_SIGTERM),
):
    for _key in (_name, _name.removeprefix("SIG"), _number):
        SIGNALS[_key] = (_number, _wire)

#: (operation, gRPC status) -> the contract's code, where the pair has one meaning only. A
#: process id on these calls is always the int32 of a Start: NOT_FOUND says no running Start has it.
GRPC_CODES: dict[tuple[str, grpc.StatusCode], ErrorCode] = {
    ("processes.write_stdin", grpc.StatusCode.NOT_FOUND): ErrorCode.PROCESS_NOT_FOUND,
    ("processes.close_stdin", grpc.StatusCode.NOT_FOUND): ErrorCode.PROCESS_NOT_FOUND,
    ("processes.signal", grpc.StatusCode.NOT_FOUND): ErrorCode.PROCESS_NOT_FOUND,
    ("processes.resize", grpc.StatusCode.NOT_FOUND): ErrorCode.PROCESS_NOT_FOUND,
}


class Inexpressible(Exception):
    """The contract's operation (or a parameter of it) has no expression on the sandboxd wire."""

    def __init__(self, operation: str, why: str) -> None:
        self.operation = operation
        self.why = why
        super().__init__(f"{operation}: {why}")


class WireError(SandboxError):
    """An error the wire answered that maps to no one contract code for the operation."""


async def _refused(error: Exception) -> AsyncGenerator[object, None]:
    """A stream that fails with ``error`` when first read."""
    nothing: tuple[object, ...] = ()
    for item in nothing:
        yield item
    raise error


def received() -> str:
    """The client's clock, in the contract's format (the wire carries no timestamps)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _grpc_error(operation: str, exc: grpc.aio.AioRpcError) -> SandboxError:
    status = exc.code()
    message = exc.details() or status.name
    code = GRPC_CODES.get((operation, status))
    if code is not None:
        return error_from_code(code, message, {"operation": operation})
    return WireError(f"GRPC_{status.name}", message, {"operation": operation, "grpcStatus": status.name})


def _env(operation: str, env: object) -> dict[str, str]:
    if env is None:
        return {}
    assert isinstance(env, Mapping)
    if any(value is None for value in env.values()):
        raise Inexpressible(operation, "env with a null value (unset a variable): env_vars only sets")
    return dict(env)


def _wire_id(operation: str, process_id: object) -> int:
    """The int32 of a Start call, which this client gave the contract as a decimal string."""
    if isinstance(process_id, str) and process_id.isdigit():
        return int(process_id)
    raise Inexpressible(operation, f"process id {process_id!r}: the wire only knows the int32 ids of running Starts")


def _only(operation: str, params: Mapping[str, object], known: set[str]) -> None:
    extra = sorted(key for key, value in params.items() if key not in known and value is not None)
    if extra:
        raise Inexpressible(operation, f"the wire has no parameter for {', '.join(extra)}")


class _Core:
    """Connections, dispatch, and the process.v1 and commands mappings."""

    def __init__(self, grpc_target: str, rest_url: str, *, token: str | None = None, timeout: float = 60.0) -> None:
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(grpc_target)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=rest_url, timeout=timeout, headers=headers)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.channel.close()

    # the wire ---------------------------------------------------------------------------------

    async def _unary(
        self, operation: str, method: str, request: Any, response: Any, deadline: float | None = None
    ) -> Any:
        call = self.channel.unary_unary(
            method, request_serializer=type(request).SerializeToString, response_deserializer=response.FromString
        )
        try:
            return await call(request, metadata=self.metadata, timeout=deadline or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(operation, exc) from None

    # ClientTransport --------------------------------------------------------------------------

    #: What the wire expresses, by (service, operation): unary calls and streams (filled by
    #: :class:`SandboxdClient`); any other operation is inexpressible.
    calls: dict[tuple[str, str], Callable[[str, Mapping[str, object]], Awaitable[object]]]
    streams: dict[tuple[str, str], Callable[[str, Mapping[str, object]], AsyncGenerator[object, None]]]

    async def call(self, service: str, operation: str, params: Mapping[str, object]) -> object:
        name = f"{service}.{operation}"
        handler = self.calls.get((service, operation))
        if handler is None:
            raise Inexpressible(name, "no sandboxd call does this")
        return await handler(name, params)

    def stream(self, service: str, operation: str, params: Mapping[str, object]) -> AsyncGenerator[object, None]:
        name = f"{service}.{operation}"
        handler = self.streams.get((service, operation))
        if handler is None:
            return _refused(Inexpressible(name, "no sandboxd stream does this"))
        return handler(name, params)

    # processes --------------------------------------------------------------------------------

    def _config(self, name: str, params: Mapping[str, object]) -> Any:
        command, argv = params.get("command"), params.get("argv")
        if (command is None) == (argv is None):
            raise Inexpressible(name, "exactly one of command and argv is the contract's check; the wire has one argv")
        words = ["bash", "-c", command] if isinstance(command, str) else list(argv)  # type: ignore[call-overload]
        config = pb.ProcessConfig(command=words, env_vars=_env(name, params.get("env")))
        cwd = params.get("cwd")
        if cwd is not None:
            config.cwd = str(cwd)
        return config

    async def _stream_processes_run_stream(
        self, name: str, params: Mapping[str, object]
    ) -> AsyncGenerator[object, None]:
        _only(name, params, {"command", "argv", "env", "cwd", "stdin", "pty"})
        stdin, pty = params.get("stdin", "null"), params.get("pty")
        if stdin not in ("null", "pipe"):
            raise Inexpressible(name, f"stdin {stdin!r}: the wire's Start always gives a pipe")
        if stdin == "null" and pty is None:
            raise Inexpressible(name, "stdin null (the default): the wire's Start always gives an open pipe")
        request = pb.StartRequest(config=self._config(name, params))
        if pty is not None:
            assert isinstance(pty, Mapping)
            if not (pty.get("cols") and pty.get("rows")):
                raise Inexpressible(name, "a pty of size 0: the wire takes 0 by 0 as 'the default size'")
            request.pty.CopyFrom(pb.PTY(cols=int(pty["cols"]), rows=int(pty["rows"])))
        call = self.channel.unary_stream(
            PROCESS + "Start",
            request_serializer=pb.StartRequest.SerializeToString,
            response_deserializer=pb.StartResponse.FromString,
        )(request, metadata=self.metadata)
        try:
            async for message in call:
                kind = message.WhichOneof("event")
                if kind == "init":
                    yield {"type": "start", "timestamp": received(), "processId": str(message.init.process_id)}
                elif kind in ("stdout", "stderr"):
                    yield {"type": kind, "timestamp": received(), "data": getattr(message, kind)}
                elif kind == "exit":
                    yield {"type": "exit", "timestamp": received(), "exitCode": message.exit.exit_code}
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(name, exc) from None
        finally:
            call.cancel()  # a stream closed early ends the Start call, and with it the process

    async def _call_processes_write_stdin(self, name: str, params: Mapping[str, object]) -> object:
        _only(name, params, {"id", "data", "encoding", "eof"})
        number = _wire_id(name, params["id"])
        text, encoding = str(params.get("data", "")), params.get("encoding", "utf-8")
        if encoding == "base64":
            data = base64.b64decode(text, validate=True)
        elif encoding == "utf-8":
            data = text.encode()
        else:
            raise Inexpressible(name, f"encoding {encoding!r}: only bytes travel")
        if data:
            request = pb.WriteStdinRequest(process_id=number, input=data)
            await self._unary(name, PROCESS + "WriteStdin", request, pb.WriteStdinResponse)
        if params.get("eof"):
            request = pb.WriteStdinRequest(process_id=number, eof=empty_pb2.Empty())
            await self._unary(name, PROCESS + "WriteStdin", request, pb.WriteStdinResponse)
        return {
            "success": True,
            "processId": params["id"],
            "written": len(data),
            "eof": bool(params.get("eof")),
            "timestamp": received(),
        }

    async def _call_processes_close_stdin(self, name: str, params: Mapping[str, object]) -> object:
        _only(name, params, {"id"})
        request = pb.WriteStdinRequest(process_id=_wire_id(name, params["id"]), eof=empty_pb2.Empty())
        await self._unary(name, PROCESS + "WriteStdin", request, pb.WriteStdinResponse)
        return {"success": True, "processId": params["id"], "written": 0, "eof": True, "timestamp": received()}

    async def _call_processes_signal(self, name: str, params: Mapping[str, object]) -> object:
        _only(name, params, {"id", "signal"})
        signal = params.get("signal")
        key = signal.upper() if isinstance(signal, str) else signal
        if key not in SIGNALS:
            raise Inexpressible(name, f"signal {signal!r}: the wire's enum has SIGINT, SIGKILL and SIGTERM only")
        number, wire = SIGNALS[key]  # type: ignore[index]
        request = pb.SendSignalRequest(process_id=_wire_id(name, params["id"]), signal=wire)  # type: ignore[arg-type]
        await self._unary(name, PROCESS + "SendSignal", request, pb.SendSignalResponse)
        return {"success": True, "processId": params["id"], "signal": number, "timestamp": received()}

    async def _call_processes_resize(self, name: str, params: Mapping[str, object]) -> object:
        _only(name, params, {"id", "cols", "rows"})
        cols, rows = params.get("cols"), params.get("rows")
        if not (isinstance(cols, int) and isinstance(rows, int) and cols > 0 and rows > 0):
            raise Inexpressible(name, "a size of 0 or not a number: the wire's uint32 takes 0 as 'unset'")
        request = pb.ResizeTTYRequest(process_id=_wire_id(name, params["id"]), cols=cols, rows=rows)
        await self._unary(name, PROCESS + "ResizeTTY", request, pb.ResizeTTYResponse)
        return {"success": True, "processId": params["id"], "cols": cols, "rows": rows, "timestamp": received()}

    async def _call_utils_ping(self, name: str, params: Mapping[str, object]) -> object:
        raise Inexpressible(
            name,
            "GET /v1/health answers status ok and an uptime; the contract's ping answers its own status, "
            "message and the server's runtimeId",
        )

    # commands ---------------------------------------------------------------------------------

    async def _call_commands_execute(self, name: str, params: Mapping[str, object]) -> object:
        """Only sessionless: Execute of ``bash -c command`` (what a sessionless exec runs); its
        ``timeoutMs`` is the call's deadline, whose expiry the wire answers with no result."""
        _only(name, params, {"command", "sessionId", "env", "cwd", "timeoutMs"})
        if params.get("sessionId") != SESSIONLESS:
            raise Inexpressible(name, "a session (state kept between commands): every sandboxd process is sessionless")
        command = params.get("command")
        if not isinstance(command, str):
            raise Inexpressible(name, "no command")
        timeout_ms = params.get("timeoutMs")
        deadline = timeout_ms / 1000 if isinstance(timeout_ms, int) else None
        request = pb.ExecuteRequest(config=self._config(name, {"command": command, **_pick(params, "env", "cwd")}))
        began = time.monotonic()
        try:
            answer = await self._unary(name, PROCESS + "Execute", request, pb.ExecuteResponse, deadline=deadline)
        except WireError as exc:
            if deadline is not None and exc.code == "GRPC_DEADLINE_EXCEEDED":
                raise Inexpressible(
                    name, "a command that outlives its timeoutMs: the wire answers DEADLINE_EXCEEDED, no exit 124"
                ) from None
            raise
        return {
            "success": answer.exit_code == 0,
            "exitCode": answer.exit_code,
            "stdout": answer.stdout.decode("utf-8", "replace"),
            "stderr": answer.stderr.decode("utf-8", "replace"),
            "command": command,
            "duration": time.monotonic() - began,
            "timestamp": received(),
            "sessionId": SESSIONLESS,
        }


def _pick(params: Mapping[str, object], *keys: str) -> dict[str, object]:
    return {key: params[key] for key in keys if params.get(key) is not None}


# files: the REST API ---------------------------------------------------------------------------


def files_endpoint(path: str) -> str:
    """``/v1/files/<path>`` with the whole path one segment (``/`` as ``%2F``), as the SDK sends it."""
    return "/v1/files/" + "%2F".join(quote(segment, safe="") for segment in path.split("/"))


#: (operation, REST status) -> the contract's code, where the pair has one meaning only.
REST_CODES: dict[tuple[str, int], ErrorCode] = {
    ("files.read", 404): ErrorCode.FILE_NOT_FOUND,
    ("files.delete", 404): ErrorCode.FILE_NOT_FOUND,
    ("files.read", 403): ErrorCode.PERMISSION_DENIED,
    ("files.write", 403): ErrorCode.PERMISSION_DENIED,
    ("files.delete", 403): ErrorCode.PERMISSION_DENIED,
    ("files.exists", 403): ErrorCode.PERMISSION_DENIED,
    ("files.write", 507): ErrorCode.NO_SPACE,  # our wire's 507 is only ever NO_SPACE
}


def _rest_error(operation: str, response: httpx.Response) -> SandboxError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    wire_code = body.get("code", "") if isinstance(body, dict) else ""
    message = body.get("message", "") if isinstance(body, dict) else ""
    message = message or response.text[:200] or f"HTTP {response.status_code}"
    code = REST_CODES.get((operation, response.status_code))
    if code is not None:
        return error_from_code(code, message, {"operation": operation})
    return WireError(
        f"REST_{response.status_code}_{wire_code or 'NO_CODE'}",
        message,
        {"operation": operation, "restStatus": response.status_code, "restCode": wire_code},
        status=response.status_code,
    )


def _absolute(operation: str, params: Mapping[str, object]) -> str:
    _only(operation, params, {"path", "content", "encoding", "mode", "recursive"})
    path = params.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise Inexpressible(operation, f"path {path!r}: the contract resolves a relative path in a session's cwd")
    return path


class _FilesMixin:
    http: httpx.AsyncClient

    async def _call_files_write(self, name: str, params: Mapping[str, object]) -> object:
        path = _absolute(name, params)
        content, encoding = params.get("content"), params.get("encoding")
        if not isinstance(content, str):
            raise Inexpressible(name, "content that is not a string")
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except ValueError:
                raise Inexpressible(name, "content that is not base64: the wire carries the bytes themselves") from None
        elif encoding in (None, "utf-8", "utf8"):
            data = content.encode()
        else:
            raise Inexpressible(name, f"encoding {encoding!r}")
        query = {}
        mode = params.get("mode")
        if isinstance(mode, bool | float):
            raise Inexpressible(name, f"mode {mode!r}: the wire's mode is an octal string")
        if isinstance(mode, int):
            if not 0 <= mode <= 0o777:
                raise Inexpressible(name, f"mode {mode!r}: the wire's mode has 3 octal digits")
            mode = f"0{mode:03o}"
        if mode is not None:
            query["mode"] = str(mode)
        response = await self.http.put(files_endpoint(path), content=data, params=query)
        if response.status_code != 204:
            raise _rest_error(name, response)
        return {"success": True, "path": path, "timestamp": received()}

    async def _call_files_read(self, name: str, params: Mapping[str, object]) -> object:
        path = _absolute(name, params)
        encoding = params.get("encoding")
        if encoding is None:
            raise Inexpressible(
                name,
                "no encoding: the contract tells text from binary by the file's MIME type, "
                "which the wire does not carry",
            )
        response = await self.http.get(files_endpoint(path))
        if response.status_code != 200:
            raise _rest_error(name, response)
        if response.headers.get("content-type", "").startswith("application/json"):
            raise Inexpressible(name, "a directory: the wire answers its listing")
        data = response.content
        if encoding == "base64":
            content, binary = base64.b64encode(data).decode("ascii"), True
        else:
            try:
                content, binary = data.decode("utf-8"), False
            except UnicodeDecodeError:
                raise Inexpressible(name, "utf-8 asked of bytes that are not UTF-8") from None
        return {
            "success": True,
            "path": path,
            "content": content,
            "timestamp": received(),
            "encoding": "base64" if binary else "utf-8",
            "isBinary": binary,
            "mimeType": response.headers.get("content-type", ""),  # the wire's own, whatever it says
            "size": len(data),
        }

    async def _call_files_list_files(self, name: str, params: Mapping[str, object]) -> object:
        raise Inexpressible(
            name,
            "GET of a directory lists it, but its entries lack what the contract's carry (permissions for "
            "the server's user; symlinks as such, not as their target's type; a recursive listing)",
        )

    async def _call_files_exists(self, name: str, params: Mapping[str, object]) -> object:
        path = _absolute(name, params)
        response = await self.http.head(files_endpoint(path))
        if response.status_code not in (200, 404):
            raise _rest_error(name, response)
        return {"success": True, "path": path, "exists": response.status_code == 200, "timestamp": received()}

    async def _call_files_delete(self, name: str, params: Mapping[str, object]) -> object:
        path = _absolute(name, params)
        recursive = params.get("recursive")
        if recursive is None:
            raise Inexpressible(
                name, "no recursive: the contract refuses a directory, the wire's DELETE removes an empty one"
            )
        if not isinstance(recursive, bool):
            raise Inexpressible(name, f"recursive {recursive!r}: not a boolean")
        response = await self.http.delete(files_endpoint(path), params={"recursive": str(recursive).lower()})
        if response.status_code != 204:
            raise _rest_error(name, response)
        return {"success": True, "path": path, "timestamp": received()}


# the sandbox.v1 extensions: Watch and Jupyter ----------------------------------------------------

WATCH = "/sandbox.v1.WatchService/"
JUPYTER = "/sandbox.v1.JupyterService/"


class _Grpc:
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]

    async def _unary(
        self, operation: str, method: str, request: Any, response: Any, deadline: float | None = None
    ) -> Any:
        raise NotImplementedError


class _WatchMixin(_Grpc):
    async def _stream_watch_watch(self, name: str, params: Mapping[str, object]) -> AsyncGenerator[object, None]:
        _only(name, params, {"path", "recursive", "events", "include", "exclude"})
        path = params.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise Inexpressible(name, f"path {path!r}: the contract resolves a relative path in a session's cwd")
        request = ext.WatchRequest(path=path)
        if params.get("recursive") is not None:
            request.recursive = bool(params["recursive"])
        for field in ("events", "include", "exclude"):
            values = params.get(field)
            if values is not None:
                getattr(request, field).extend(values)  # type: ignore[arg-type]
        call = self.channel.unary_stream(
            WATCH + "Watch",
            request_serializer=ext.WatchRequest.SerializeToString,
            response_deserializer=ext.WatchResponse.FromString,
        )(request, metadata=self.metadata)
        try:
            async for message in call:
                kind = message.WhichOneof("event")
                if kind == "watching":
                    yield {"type": "watching", "path": message.watching.path, "watchId": message.watching.watch_id}
                elif kind == "change":
                    change = message.change
                    yield {
                        "type": "event",
                        "eventType": change.event_type,
                        "path": change.path,
                        "isDirectory": change.is_directory,
                        "timestamp": change.timestamp,
                    }
                elif kind == "stopped":
                    yield {"type": "stopped", "reason": message.stopped.reason}
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(name, exc) from None
        finally:
            call.cancel()


class _JupyterMixin(_Grpc):
    async def _call_interpreter_create_code_context(self, name: str, params: Mapping[str, object]) -> object:
        _only(name, params, {"language", "cwd", "env_vars"})
        request = ext.CreateContextRequest(
            language=str(params.get("language") or ""), env_vars=_env(name, params.get("env_vars"))
        )
        if params.get("cwd") is not None:
            request.cwd = str(params["cwd"])
        context = await self._unary(name, JUPYTER + "CreateContext", request, ext.Context)
        return {
            "success": True,
            "contextId": context.context_id,
            "language": context.language,
            "cwd": context.cwd,
            "timestamp": received(),
        }

    async def _call_interpreter_list_code_contexts(self, name: str, params: Mapping[str, object]) -> object:
        _only(name, params, set())
        answer = await self._unary(name, JUPYTER + "ListContexts", ext.ListContextsRequest(), ext.ListContextsResponse)
        contexts = [{"id": c.context_id, "language": c.language, "cwd": c.cwd} for c in answer.contexts]
        return {"success": True, "contexts": contexts, "timestamp": received()}

    async def _call_interpreter_delete_code_context(self, name: str, params: Mapping[str, object]) -> object:
        _only(name, params, {"id"})
        request = ext.DeleteContextRequest(context_id=str(params["id"]))
        await self._unary(name, JUPYTER + "DeleteContext", request, ext.DeleteContextResponse)
        return {"success": True, "contextId": params["id"], "timestamp": received()}

    async def _stream_interpreter_run_code(
        self, name: str, params: Mapping[str, object]
    ) -> AsyncGenerator[object, None]:
        _only(name, params, {"context_id", "code", "timeout_ms"})
        request = ext.ExecuteCodeRequest(context_id=str(params.get("context_id")), code=str(params.get("code")))
        if params.get("timeout_ms") is not None:
            request.timeout_ms = int(params["timeout_ms"])  # type: ignore[call-overload]
        call = self.channel.unary_stream(
            JUPYTER + "ExecuteCode",
            request_serializer=ext.ExecuteCodeRequest.SerializeToString,
            response_deserializer=ext.ExecuteCodeResponse.FromString,
        )(request, metadata=self.metadata)
        raised = False  # the wire ends a run that raised with complete too; the contract's ends at its error
        try:
            async for message in call:
                kind = message.WhichOneof("event")
                if kind == "start":
                    yield {"type": "execution_start", "contextId": message.start.context_id}
                elif kind in ("stdout", "stderr"):
                    yield {"type": kind, "text": getattr(message, kind)}
                elif kind == "result":
                    yield {"type": "result", **_result(message.result)}
                elif kind == "error":
                    error = message.error
                    raised = True
                    yield {
                        "type": "error",
                        "ename": error.ename,
                        "evalue": error.evalue,
                        "traceback": list(error.traceback),
                    }
                elif kind == "complete" and not raised:
                    count = message.complete.execution_count if message.complete.HasField("execution_count") else None
                    yield {"type": "execution_complete", "execution_count": count}
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(name, exc) from None
        finally:
            call.cancel()


def _result(result: Any) -> dict[str, object]:
    """A Result's data in the contract's keys (what the wire's map holds; ``json`` parsed)."""
    out: dict[str, object] = {"metadata": json.loads(result.metadata_json) if result.metadata_json else {}}
    for key, value in result.data.items():
        contract_key = MIME_KEYS.get(key, key)
        out[contract_key] = json.loads(value) if contract_key == "json" else value
    return out


class SandboxdClient(_Core, _FilesMixin, _WatchMixin, _JupyterMixin):
    """The sandboxd wire as a :class:`~sandbox_core.transport.ClientTransport`."""

    def __init__(self, grpc_target: str, rest_url: str, *, token: str | None = None, timeout: float = 60.0) -> None:
        super().__init__(grpc_target, rest_url, token=token, timeout=timeout)
        self.calls = {
            ("processes", "write_stdin"): self._call_processes_write_stdin,
            ("processes", "close_stdin"): self._call_processes_close_stdin,
            ("processes", "signal"): self._call_processes_signal,
            ("processes", "resize"): self._call_processes_resize,
            ("commands", "execute"): self._call_commands_execute,
            ("utils", "ping"): self._call_utils_ping,
            ("files", "write"): self._call_files_write,
            ("files", "read"): self._call_files_read,
            ("files", "list_files"): self._call_files_list_files,
            ("files", "exists"): self._call_files_exists,
            ("files", "delete"): self._call_files_delete,
            ("interpreter", "create_code_context"): self._call_interpreter_create_code_context,
            ("interpreter", "list_code_contexts"): self._call_interpreter_list_code_contexts,
            ("interpreter", "delete_code_context"): self._call_interpreter_delete_code_context,
        }
        self.streams = {
            ("processes", "run_stream"): self._stream_processes_run_stream,
            ("watch", "watch"): self._stream_watch_watch,
            ("interpreter", "run_code"): self._stream_interpreter_run_code,
        }
