"""The conformance suite on the sandboxd wire, where the contract overlaps it.

The ``sandbox`` fixture is the contract's ``Sandbox`` over :class:`SandboxdClient` (gRPC process.v1
and our sandbox.v1 extensions, the REST files API: nothing else) on a server that serves the
sandboxd transport alone. A test that needs an operation the wire cannot express is skipped
naming it (:func:`skipping_inexpressible`); a test that needs a field the wire does not carry is
left out, with the reason, in :data:`LEFT_OUT`.

The server's workspace is ``/``: sandboxd confines every path and ``cwd`` to its workspace and
re-roots an absolute path there, so with ``/`` an absolute path means the same file on both sides
(the suite's paths are absolute, under ``/tmp``).
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from helpers_sandboxd import grpc_target, rest_url
from sandboxd_client import Inexpressible, SandboxdClient

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.commands import CommandsSuite
from sandbox_core.contract.conformance.files import FilesSuite
from sandbox_core.contract.conformance.helpers import SESSIONLESS
from sandbox_core.contract.conformance.interpreter import InterpreterSuite
from sandbox_core.contract.conformance.processes import DrivenProcessesSuite, ProcessesSuite, RunStreamSuite
from sandbox_core.contract.conformance.watch import WatchSuite
from sandbox_core.testing import ServerProcess
from sandbox_core.testing.plugin import TEST_CONFIG

#: Tests that need what the wire does not carry (so they can not pass on it, whatever the server
#: does), by name: why.
LEFT_OUT: dict[str, str] = {
    "test_run_stream_raw_bytes_in_order_and_exit": "needs the start event's pid (InitEvent carries none) "
    "and processes.get (no sandboxd call)",
    "test_a_handle_resumes_from_a_second_client": "opens clients by transport name (sandboxd is not a "
    "registered client transport) and needs processes.start/list (no sandboxd call)",
    "test_delete_recursive_option": "needs FILE_EXISTS for a non-empty directory: the wire's 409 CONFLICT is "
    "that or RESOURCE_BUSY; and the error's details.path",
    "test_no_space": "needs the error's details.path (the wire's error is a code and a message)",
    "test_paths_the_filesystem_refuses_are_4xx_naming_the_field": "needs NAME_TOO_LONG, TOO_MANY_LINKS, "
    "NOT_DIRECTORY: the wire's 400 INVALID_ARGUMENT is any of them; and details.field/path",
    "test_permission_denied": "needs the error's details (path, operation): the wire's error is a code and a message",
    "test_watch_bad_filters_are_refused": "needs VALIDATION_FAILED naming the field: the wire's INVALID_ARGUMENT "
    "carries a message only (and watch.check_changes has no sandboxd call)",
    "test_watch_directory_bounds_are_clear_4xx": "opens a client by transport name on a server of its own "
    "(sandboxd is not a registered client transport) and needs watch.check_changes/list (no sandboxd call)",
}


#: Tests of an operation whose sandboxd counterpart means something else by the spec, by name: the
#: difference. They are expected to fail (strictly: one that passes is reported).
DIFFERS: dict[str, str] = {
    "test_write_is_atomic_and_keeps_mode": "a PUT without mode sets 0644 (sandboxd's spec); the contract's write "
    "keeps the file's mode",
    "test_write_mode_option": "a PUT without mode sets 0644 (sandboxd's spec); the contract's write keeps the "
    "mode an earlier write gave",
}


class SandboxdSandbox(Sandbox):
    """The contract's facade over a given :class:`SandboxdClient` (not a registered transport)."""

    def __init__(self, client: SandboxdClient) -> None:
        super().__init__("http://sandboxd.invalid", transport="sandboxd")
        self._client = client

    async def __aenter__(self) -> SandboxdSandbox:
        self._t = self._client
        return self


def _inexpressible(exc: BaseException) -> Inexpressible | None:
    """The :class:`Inexpressible` that ended a test (also inside an exception group), if one did."""
    if isinstance(exc, Inexpressible):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _inexpressible(inner)
            if found is not None:
                return found
    return None


def _close_unawaited(exc: BaseException) -> None:
    """Close the coroutines a test built but never awaited (a list of cases, say) before it stopped
    at an inexpressible one, so that none warns when collected."""
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            items = value if isinstance(value, list | tuple) else (value,)
            for item in items:
                for candidate in item if isinstance(item, tuple) else (item,):
                    if inspect.iscoroutine(candidate) and inspect.getcoroutinestate(candidate) == "CORO_CREATED":
                        candidate.close()
        tb = tb.tb_next


def _skipping(test: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        try:
            await test(*args, **kwargs)
        except BaseException as exc:
            found = _inexpressible(exc)
            if found is None:
                raise
            _close_unawaited(exc)
            pytest.skip(f"inexpressible on the sandboxd wire: {found}")

    return run


def skipping_inexpressible(cls: type) -> type:
    """Every test of ``cls`` (inherited ones too) skipped when it needs an operation the wire cannot
    express; the tests named in :data:`LEFT_OUT` skipped with their reason."""
    for name in dir(cls):
        test = getattr(cls, name)
        if not (name.startswith("test_") and inspect.iscoroutinefunction(test)):
            continue
        wrapped = _skipping(test)
        if name in LEFT_OUT:
            wrapped = pytest.mark.skip(reason=f"left out: {LEFT_OUT[name]}")(wrapped)
        elif name in DIFFERS:
            wrapped = pytest.mark.xfail(reason=f"differs by the spec: {DIFFERS[name]}", strict=True)(wrapped)
        setattr(cls, name, wrapped)
    return cls


@pytest.fixture(scope="module")
def sandboxd_conformance_server() -> Iterator[ServerProcess]:
    """The sandboxd transport alone, the suite's settings, the workspace ``/``."""
    with ServerProcess(transports=["sandboxd"], config=TEST_CONFIG, workspace="/") as server:
        yield server


class SandboxdOverlap:
    @pytest.fixture
    async def sandbox(self, sandboxd_conformance_server: ServerProcess) -> AsyncIterator[Sandbox]:
        client = SandboxdClient(grpc_target(sandboxd_conformance_server), rest_url(sandboxd_conformance_server))
        async with SandboxdSandbox(client) as sb:
            yield sb


@skipping_inexpressible
class TestSandboxdRunStream(SandboxdOverlap, RunStreamSuite):
    pass


@skipping_inexpressible
class TestSandboxdProcesses(SandboxdOverlap, ProcessesSuite):
    pass


@skipping_inexpressible
class TestSandboxdDrivenProcesses(SandboxdOverlap, DrivenProcessesSuite):
    pass


@skipping_inexpressible
class TestSandboxdCommands(SandboxdOverlap, CommandsSuite):
    pass


@skipping_inexpressible
class TestSandboxdFiles(SandboxdOverlap, FilesSuite):
    @pytest.fixture
    async def scratch(self, sandbox: Sandbox) -> AsyncIterator[str]:
        """The suite's scratch directory, made by a command: ``files.mkdir`` has no sandboxd call."""
        path = f"/tmp/conformance-files-{uuid.uuid4().hex}"
        made = await sandbox.exec(f"mkdir -p '{path}'", session_id=SESSIONLESS)
        assert made.exit_code == 0, made
        try:
            yield path
        finally:
            await sandbox.exec(f"chmod -R u+rwx '{path}' 2>/dev/null; rm -rf '{path}'", session_id=SESSIONLESS)


@skipping_inexpressible
class TestSandboxdWatch(SandboxdOverlap, WatchSuite):
    @pytest.fixture
    async def watched(self, sandbox: Sandbox) -> AsyncIterator[str]:
        """The suite's fresh directory, under /tmp rather than in the workspace (``/`` here)."""
        made = await sandbox.exec(
            f'mkdir /tmp/watch-{uuid.uuid4().hex[:12]} && cd "$_" && pwd -P', session_id=SESSIONLESS
        )
        assert made.exit_code == 0, made
        path = made.stdout.strip()
        try:
            yield path
        finally:
            await sandbox.exec(f"rm -rf '{path}'", session_id=SESSIONLESS)


@skipping_inexpressible
class TestSandboxdInterpreter(SandboxdOverlap, InterpreterSuite):
    pass
