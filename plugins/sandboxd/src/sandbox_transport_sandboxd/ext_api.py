"""This project's extensions on the gRPC listener (``sandbox.v1``): ``WatchService`` over the
watch service and ``JupyterService`` over the interpreter service, each served when its service
is installed (a server without one answers its methods UNIMPLEMENTED, as for any unknown method).

``Watch``: the ``path`` is confined to the workspace by ``files.confine`` (sandboxd's rule, as a
process ``cwd``: outside it, PERMISSION_DENIED), then ``watch.watch`` streams ``Watching``, one
``Change`` per change, and ``Stopped`` (the stream then ends); a watch that cannot go on (events
were lost, a limit was reached) ends with RESOURCE_EXHAUSTED and the service's text. The request's
kinds and patterns are the watch service's (it validates them: INVALID_ARGUMENT naming the field).

``JupyterService``: code contexts of the interpreter service. ``ExecuteCode`` streams ``start``,
``stdout``/``stderr`` text and rich ``Result`` s as they are produced, then ``complete``; code that
raised (or timed out) gives an ``ExecutionError`` first, and the run still ends with ``complete``.
A client that cancels a ``Watch`` or an ``ExecuteCode`` closes the service's stream: the watch is
released, the run interrupted. An unknown context is NOT_FOUND.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from sandbox_core.contract.models.interpreter import (
    CodeCompleteEvent,
    CodeErrorEvent,
    CodeResultEvent,
    CodeStartEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)
from sandbox_core.contract.models.watch import FileWatchEvent, WatchErrorEvent, WatchingEvent, WatchStoppedEvent
from sandbox_core.errors import ErrorCode, SandboxError
from sandbox_core.registry import ServiceRegistry
from sandbox_core.transport import ServerContext

from .grpc_server import GrpcService, Rpc
from .pb import sandbox_ext_v1_pb2 as pb
from .settings import SandboxdSettings

if TYPE_CHECKING:
    from .grpc_server import Context

#: The services' names on the wire (the .proto's package).
WATCH = "sandbox.v1.WatchService"
JUPYTER = "sandbox.v1.JupyterService"

#: A result's keys (the interpreter service's) and the MIME types they stand for. Text as it is;
#: images base64, as the service gives them; ``json`` JSON-encoded.
MIME = {
    "text": "text/plain",
    "html": "text/html",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "svg": "image/svg+xml",
    "latex": "text/latex",
    "markdown": "text/markdown",
    "javascript": "application/javascript",
}
JSON_MIME = "application/json"


async def _confine(registry: ServiceRegistry, path: str, field: str) -> str:
    confined: Any = await registry.call("files", "confine", {"path": path, "field": field})
    return str(confined.resolved)


class WatchApi:
    def __init__(self, registry: ServiceRegistry) -> None:
        self.registry = registry
        self.root = os.path.realpath(registry.workspace)  # what confine's answers are under

    async def watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[pb.WatchResponse]:
        confined = await _confine(self.registry, request.path, "path")
        params: dict[str, Any] = {
            # relative to the workspace, as the watch service reports paths (its workspace as
            # configured, which may be reached through a symbolic link; confine's is resolved)
            "path": str(PurePosixPath(confined).relative_to(self.root)),
            "recursive": request.recursive if request.HasField("recursive") else True,
        }
        for name in ("events", "include", "exclude"):
            values = list(getattr(request, name))
            if values:
                params[name] = values
        events = self.registry.stream("watch", "watch", params)
        try:
            async for event in events:
                if isinstance(event, FileWatchEvent):
                    yield pb.WatchResponse(
                        change=pb.Change(
                            event_type=event.event_type,
                            path=event.path,
                            is_directory=event.is_directory,
                            timestamp=event.timestamp,
                        )
                    )
                elif isinstance(event, WatchingEvent):
                    yield pb.WatchResponse(watching=pb.Watching(path=event.path, watch_id=event.watch_id))
                elif isinstance(event, WatchStoppedEvent):
                    yield pb.WatchResponse(stopped=pb.Stopped(reason=event.reason))
                    return
                elif isinstance(event, WatchErrorEvent):
                    raise SandboxError(ErrorCode.RESOURCE_BUSY, event.error)  # RESOURCE_EXHAUSTED
        finally:
            await events.aclose()  # a cancelled call releases its watch


def _result(event: CodeResultEvent) -> pb.Result:
    data = {mime: value for key, mime in MIME.items() if (value := getattr(event, key)) is not None}
    if event.json is not None:
        data[JSON_MIME] = json.dumps(event.json)
    return pb.Result(data=data, metadata_json=json.dumps(event.metadata))


class JupyterApi:
    def __init__(self, registry: ServiceRegistry) -> None:
        self.registry = registry

    async def create_context(self, request: pb.CreateContextRequest, context: Context) -> pb.Context:
        params: dict[str, Any] = {"language": request.language or "python"}
        if request.HasField("cwd") and request.cwd:
            params["cwd"] = await _confine(self.registry, request.cwd, "cwd")
        if request.env_vars:
            params["env_vars"] = dict(request.env_vars)
        created: Any = await self.registry.call("interpreter", "create_code_context", params)
        return pb.Context(context_id=created.context_id, language=created.language, cwd=created.cwd)

    async def execute_code(
        self, request: pb.ExecuteCodeRequest, context: Context
    ) -> AsyncIterator[pb.ExecuteCodeResponse]:
        params: dict[str, Any] = {"context_id": request.context_id, "code": request.code}
        if request.HasField("timeout_ms"):
            params["timeout_ms"] = request.timeout_ms
        events = self.registry.stream("interpreter", "run_code", params)
        completed = False
        try:
            async for event in events:
                if isinstance(event, CodeStdoutEvent):
                    yield pb.ExecuteCodeResponse(stdout=event.text)
                elif isinstance(event, CodeStderrEvent):
                    yield pb.ExecuteCodeResponse(stderr=event.text)
                elif isinstance(event, CodeResultEvent):
                    yield pb.ExecuteCodeResponse(result=_result(event))
                elif isinstance(event, CodeStartEvent):
                    yield pb.ExecuteCodeResponse(start=pb.ExecutionStart(context_id=event.context_id))
                elif isinstance(event, CodeErrorEvent):
                    evalue = event.evalue or event.error or ""
                    error = pb.ExecutionError(ename=event.ename, evalue=evalue, traceback=event.traceback)
                    yield pb.ExecuteCodeResponse(error=error)
                elif isinstance(event, CodeCompleteEvent):
                    completed = True
                    yield pb.ExecuteCodeResponse(complete=pb.ExecutionComplete(execution_count=event.execution_count))
        finally:
            await events.aclose()  # a cancelled call interrupts its run
        if not completed:  # the service ends a run that raised with its error: the run is over
            yield pb.ExecuteCodeResponse(complete=pb.ExecutionComplete())

    async def delete_context(self, request: pb.DeleteContextRequest, context: Context) -> pb.DeleteContextResponse:
        await self.registry.call("interpreter", "delete_code_context", {"id": request.context_id})
        return pb.DeleteContextResponse()

    async def list_contexts(self, request: pb.ListContextsRequest, context: Context) -> pb.ListContextsResponse:
        listed: Any = await self.registry.call("interpreter", "list_code_contexts", {})
        contexts = [pb.Context(context_id=c.id, language=c.language, cwd=c.cwd) for c in listed.contexts]
        return pb.ListContextsResponse(contexts=contexts)


def services(ctx: ServerContext, settings: SandboxdSettings) -> list[GrpcService]:
    found: list[GrpcService] = []
    if ctx.registry.has("watch"):
        watch = WatchApi(ctx.registry)
        rpc = Rpc("Watch", pb.WatchRequest, pb.WatchResponse, watch.watch, streaming=True)
        found.append(GrpcService(WATCH, (rpc,)))
    if ctx.registry.has("interpreter"):
        api = JupyterApi(ctx.registry)
        rpcs = (
            Rpc("CreateContext", pb.CreateContextRequest, pb.Context, api.create_context),
            Rpc("ExecuteCode", pb.ExecuteCodeRequest, pb.ExecuteCodeResponse, api.execute_code, streaming=True),
            Rpc("DeleteContext", pb.DeleteContextRequest, pb.DeleteContextResponse, api.delete_context),
            Rpc("ListContexts", pb.ListContextsRequest, pb.ListContextsResponse, api.list_contexts),
        )
        found.append(GrpcService(JUPYTER, rpcs))
    return found
