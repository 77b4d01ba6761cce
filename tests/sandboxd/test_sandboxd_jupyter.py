"""sandbox.v1.JupyterService on the sandboxd gRPC listener, through our own message classes and a
real Python kernel (ipykernel, a dependency of the services): contexts, state between runs, rich
results, errors, cancellation."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from helpers_sandboxd import server_stream, unary

from sandbox_core.testing import ServerProcess
from sandbox_transport_sandboxd.pb import sandbox_ext_v1_pb2 as pb

SERVICE = "/sandbox.v1.JupyterService"
TIMEOUT_S = 60  # every call's deadline (a kernel may take a while to start on a busy machine)


class Jupyter:
    """The service's four methods on a channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.create_context = unary(channel, f"{SERVICE}/CreateContext", pb.CreateContextRequest, pb.Context)
        self.execute_code = server_stream(
            channel, f"{SERVICE}/ExecuteCode", pb.ExecuteCodeRequest, pb.ExecuteCodeResponse
        )
        self.delete_context = unary(
            channel, f"{SERVICE}/DeleteContext", pb.DeleteContextRequest, pb.DeleteContextResponse
        )
        self.list_contexts = unary(channel, f"{SERVICE}/ListContexts", pb.ListContextsRequest, pb.ListContextsResponse)

    def create(self, **fields: Any) -> pb.Context:
        context: pb.Context = self.create_context(pb.CreateContextRequest(**fields), timeout=TIMEOUT_S)
        return context

    def run(self, context_id: str, code: str, **fields: Any) -> list[pb.ExecuteCodeResponse]:
        """Every message of a run, checked to begin with start and end with complete."""
        request = pb.ExecuteCodeRequest(context_id=context_id, code=code, **fields)
        messages = list(self.execute_code(request, timeout=TIMEOUT_S))
        assert messages[0].WhichOneof("event") == "start" and messages[0].start.context_id == context_id
        assert messages[-1].WhichOneof("event") == "complete", messages
        return messages

    def ids(self) -> set[str]:
        listed = self.list_contexts(pb.ListContextsRequest(), timeout=TIMEOUT_S)
        return {c.context_id for c in listed.contexts}


def stdout(messages: list[pb.ExecuteCodeResponse]) -> str:
    return "".join(m.stdout for m in messages if m.WhichOneof("event") == "stdout")


def results(messages: list[pb.ExecuteCodeResponse]) -> list[dict[str, str]]:
    return [dict(m.result.data) for m in messages if m.WhichOneof("event") == "result"]


def errors(messages: list[pb.ExecuteCodeResponse]) -> list[pb.ExecutionError]:
    return [m.error for m in messages if m.WhichOneof("event") == "error"]


@pytest.fixture
def jupyter(channel: grpc.Channel) -> Jupyter:
    return Jupyter(channel)


@pytest.fixture
def context(jupyter: Jupyter) -> Iterator[pb.Context]:
    """A Python context for the test, deleted after."""
    created = jupyter.create()
    yield created
    if created.context_id in jupyter.ids():
        jupyter.delete_context(pb.DeleteContextRequest(context_id=created.context_id), timeout=TIMEOUT_S)


def test_a_context_keeps_its_state_between_two_runs(
    jupyter: Jupyter, context: pb.Context, sandboxd_server: ServerProcess
) -> None:
    assert context.context_id and context.language == "python"
    assert os.path.realpath(context.cwd) == os.path.realpath(sandboxd_server.workspace)
    first = jupyter.run(context.context_id, "x = 41\nprint('set')")
    assert stdout(first) == "set\n" and not errors(first)
    second = jupyter.run(context.context_id, "print(x + 1)")
    assert stdout(second) == "42\n"
    assert second[-1].complete.HasField("execution_count") and second[-1].complete.execution_count >= 2


def test_create_context_takes_a_confined_cwd_and_env_vars(jupyter: Jupyter, sandboxd_server: ServerProcess) -> None:
    os.makedirs(os.path.join(sandboxd_server.workspace, "proj"), exist_ok=True)
    created = jupyter.create(language="python", cwd="proj", env_vars={"GREETING": "hello"})
    try:
        assert os.path.realpath(created.cwd) == os.path.realpath(os.path.join(sandboxd_server.workspace, "proj"))
        messages = jupyter.run(created.context_id, "import os\nprint(os.environ['GREETING'], os.getcwd())")
        assert stdout(messages) == f"hello {created.cwd}\n"
    finally:
        jupyter.delete_context(pb.DeleteContextRequest(context_id=created.context_id), timeout=TIMEOUT_S)
    with pytest.raises(grpc.RpcError) as caught:
        jupyter.create(cwd="../..")
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "cwd" in error.details(), error.details()
    with pytest.raises(grpc.RpcError) as caught:
        jupyter.create(language="cobol")
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "language" in error.details(), error.details()


def test_rich_results_carry_their_mime_types(jupyter: Jupyter, context: pb.Context) -> None:
    code = (
        "from IPython.display import HTML, JSON, display\n"
        "display(HTML('<b>bold</b>'))\n"
        "display(JSON({'a': [1, 2]}))\n"
        "6 * 7\n"
    )
    found = results(jupyter.run(context.context_id, code))
    assert any(r.get("text/html") == "<b>bold</b>" for r in found), found
    assert any(json.loads(r.get("application/json", "null")) == {"a": [1, 2]} for r in found), found
    assert found[-1] == {"text/plain": "42"}, found  # the value of the last expression


def test_an_exception_is_an_execution_error_then_complete(jupyter: Jupyter, context: pb.Context) -> None:
    messages = jupyter.run(context.context_id, "print('before')\n1 / 0")
    assert stdout(messages) == "before\n"
    [error] = errors(messages)
    assert error.ename == "ZeroDivisionError" and "division by zero" in error.evalue and error.traceback
    assert [m.WhichOneof("event") for m in messages[-2:]] == ["error", "complete"]
    assert stdout(jupyter.run(context.context_id, "print('after')")) == "after\n"  # the context lives on


def test_a_run_that_times_out_is_an_execution_error(jupyter: Jupyter, context: pb.Context) -> None:
    messages = jupyter.run(context.context_id, "import time\ntime.sleep(60)", timeout_ms=300)
    [error] = errors(messages)
    assert error.ename == "TimeoutError", error


def test_list_and_delete_contexts(jupyter: Jupyter) -> None:
    created = jupyter.create()
    assert created.context_id in jupyter.ids()
    listed = jupyter.list_contexts(pb.ListContextsRequest(), timeout=TIMEOUT_S)
    [entry] = [c for c in listed.contexts if c.context_id == created.context_id]
    assert (entry.language, entry.cwd) == (created.language, created.cwd)
    jupyter.delete_context(pb.DeleteContextRequest(context_id=created.context_id), timeout=TIMEOUT_S)
    assert created.context_id not in jupyter.ids()
    with pytest.raises(grpc.RpcError) as caught:
        jupyter.delete_context(pb.DeleteContextRequest(context_id=created.context_id), timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_an_unknown_context_is_not_found(jupyter: Jupyter) -> None:
    call = jupyter.execute_code(pb.ExecuteCodeRequest(context_id="no-such-context", code="1"), timeout=TIMEOUT_S)
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no-such-context" in error.details(), error.details()


def test_a_cancelled_run_is_interrupted(jupyter: Jupyter, context: pb.Context) -> None:
    code = (
        "import time\n"
        "state = 'running'\n"
        "try:\n"  # the interrupt may come while print still waits for its output to be sent
        "    print('started', flush=True)\n"
        "    time.sleep(600)\n"
        "except KeyboardInterrupt:\n"
        "    state = 'interrupted'\n"
    )
    call = jupyter.execute_code(pb.ExecuteCodeRequest(context_id=context.context_id, code=code), timeout=TIMEOUT_S)
    printed = ""
    for message in call:
        printed += message.stdout
        if "started" in printed:
            break
    call.cancel()
    # the next run waits for the cancelled one, which the server interrupts when its stream closes
    assert stdout(jupyter.run(context.context_id, "print(state)")) == "interrupted\n"
