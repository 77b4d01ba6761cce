"""``process.v1.ProcessService`` over the processes service.

Every process is sessionless (a fresh process in a process group of its own, in the workspace
unless ``cwd`` says otherwise) and belongs to the ``Start`` or ``Execute`` call that started it:
``processes.run_stream``, whose events become messages. A ``cwd`` is confined to the workspace
by ``files.confine`` (outside it: PERMISSION_DENIED). The spec's process ids are int32s: this
module numbers the records of running ``Start`` calls from 1 and forgets a number when its call
ends, as sandboxd does (past 2**31 - 1 it starts again at 1, skipping the numbers in use).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from sandbox_core.contract.models.processes import RunExitEvent, RunStartEvent, RunStderrEvent, RunStdoutEvent
from sandbox_core.errors import ErrorCode, SandboxError, validation_error
from sandbox_core.registry import ServiceRegistry
from sandbox_core.transport import ServerContext

from .grpc_server import GrpcService, Rpc

if TYPE_CHECKING:
    from .grpc_server import Context
from .pb import sandboxd_process_v1_pb2 as pb
from .settings import SandboxdSettings

#: The service's name on the wire (the spec's package, see the .proto).
NAME = "process.v1.ProcessService"

#: A PTY whose size is 0 by 0 (unset) gets this one.
DEFAULT_PTY = {"cols": 80, "rows": 24}

#: The spec's process ids are int32s: past the largest, numbering starts again at 1.
MAX_PROCESS_ID = 2**31 - 1

#: The spec's signals (its enum) by number; any other value is INVALID_ARGUMENT.
SIGNALS = {pb.SIGNAL_SIGINT: "SIGINT", pb.SIGNAL_SIGKILL: "SIGKILL", pb.SIGNAL_SIGTERM: "SIGTERM"}


class ProcessApi:
    def __init__(self, registry: ServiceRegistry, settings: SandboxdSettings) -> None:
        self.registry = registry
        self.settings = settings
        self.last_number = 0
        self.running: dict[int, str] = {}  # the spec's process id -> the record's id, while its Start runs

    def _number(self, record: str) -> int:
        """The next free process id (an int32, from 1), now ``record``'s."""
        number = self.last_number
        while True:
            number = number % MAX_PROCESS_ID + 1
            if number not in self.running:
                break
        self.last_number = number
        self.running[number] = record
        return number

    async def _params(self, config: pb.ProcessConfig) -> dict[str, Any]:
        """run_stream's parameters from a ProcessConfig (``command`` is argv: no shell)."""
        if not config.command:
            raise validation_error("config.command: give the program and its arguments", "config.command")
        params: dict[str, Any] = {"argv": list(config.command)}
        if config.env_vars:
            params["env"] = dict(config.env_vars)
        if config.HasField("cwd") and config.cwd:
            confined: Any = await self.registry.call("files", "confine", {"path": config.cwd, "field": "config.cwd"})
            params["cwd"] = confined.resolved
        return params

    def _record(self, process_id: int) -> str:
        record = self.running.get(process_id)
        if record is None:
            raise SandboxError(
                ErrorCode.PROCESS_NOT_FOUND, f"Process {process_id} not found (or its Start call has ended)"
            )
        return record

    async def start(self, request: pb.StartRequest, context: Context) -> AsyncGenerator[pb.StartResponse, None]:
        params = await self._params(request.config)
        params["stdin"] = "pipe"  # as sandboxd: WriteStdin reaches every started process
        if request.HasField("pty"):
            size = {"cols": request.pty.cols, "rows": request.pty.rows}
            params["pty"] = size if size["cols"] and size["rows"] else DEFAULT_PTY
        events = self.registry.stream("processes", "run_stream", params)
        number = 0
        try:
            async for event in events:
                if isinstance(event, RunStdoutEvent):
                    yield pb.StartResponse(stdout=event.data)
                elif isinstance(event, RunStderrEvent):
                    yield pb.StartResponse(stderr=event.data)
                elif isinstance(event, RunStartEvent):
                    number = self._number(event.process_id)
                    yield pb.StartResponse(init=pb.InitEvent(process_id=number))
                elif isinstance(event, RunExitEvent):
                    code = -1 if event.exit_code is None else event.exit_code
                    yield pb.StartResponse(exit=pb.ExitEvent(exit_code=code))
        finally:
            self.running.pop(number, None)
            await events.aclose()  # a call that ended early (cancelled, client gone) ends its process

    async def execute(self, request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        params = await self._params(request.config)
        limit = self.settings.execute_max_output_bytes
        out = {"stdout": bytearray(), "stderr": bytearray()}
        code = -1
        events = self.registry.stream("processes", "run_stream", params)
        try:
            async for event in events:
                if isinstance(event, RunStdoutEvent | RunStderrEvent):
                    name = "stdout" if isinstance(event, RunStdoutEvent) else "stderr"
                    buffer = out[name]
                    if len(buffer) + len(event.data) > limit:
                        raise SandboxError(
                            ErrorCode.FILE_TOO_LARGE,
                            f"Execute: the command wrote more than {limit} bytes to {name} "
                            "(transports.sandboxd.execute_max_output_bytes); it was ended. Use Start to stream it",
                        )
                    buffer += event.data
                elif isinstance(event, RunExitEvent):
                    code = -1 if event.exit_code is None else event.exit_code
        finally:
            await events.aclose()
        return pb.ExecuteResponse(exit_code=code, stdout=bytes(out["stdout"]), stderr=bytes(out["stderr"]))

    async def write_stdin(self, request: pb.WriteStdinRequest, context: Context) -> pb.WriteStdinResponse:
        record = self._record(request.process_id)
        payload = request.WhichOneof("payload")
        if payload == "input":
            await self.registry.call(
                "processes",
                "write_stdin",
                {"id": record, "data": base64.b64encode(request.input).decode("ascii"), "encoding": "base64"},
            )
        elif payload == "eof":
            await self.registry.call("processes", "close_stdin", {"id": record})
        return pb.WriteStdinResponse()

    async def send_signal(self, request: pb.SendSignalRequest, context: Context) -> pb.SendSignalResponse:
        name = SIGNALS.get(request.signal)
        if name is None:
            raise validation_error(
                f"signal: {request.signal} is not one of SIGINT (2), SIGKILL (9), SIGTERM (15)", "signal"
            )
        record = self._record(request.process_id)
        try:
            await self.registry.call("processes", "signal", {"id": record, "signal": name})
        except SandboxError as exc:
            if exc.code != ErrorCode.PROCESS_NOT_RUNNING:  # exited, its stream not yet over: nothing to do
                raise
        return pb.SendSignalResponse()

    async def resize_tty(self, request: pb.ResizeTTYRequest, context: Context) -> pb.ResizeTTYResponse:
        record = self._record(request.process_id)
        # 0 (unset) or over 65535 is refused by the service, naming the field (INVALID_ARGUMENT)
        await self.registry.call("processes", "resize", {"id": record, "cols": request.cols, "rows": request.rows})
        return pb.ResizeTTYResponse()


def service(ctx: ServerContext, settings: SandboxdSettings) -> GrpcService:
    api = ProcessApi(ctx.registry, settings)
    return GrpcService(
        NAME,
        (
            Rpc("Start", pb.StartRequest, pb.StartResponse, api.start, streaming=True),
            Rpc("Execute", pb.ExecuteRequest, pb.ExecuteResponse, api.execute),
            Rpc("WriteStdin", pb.WriteStdinRequest, pb.WriteStdinResponse, api.write_stdin),
            Rpc("SendSignal", pb.SendSignalRequest, pb.SendSignalResponse, api.send_signal),
            Rpc("ResizeTTY", pb.ResizeTTYRequest, pb.ResizeTTYResponse, api.resize_tty),
        ),
    )
