"""The conformance suite: what every transport must do, checked through the client facade.

Use it from a transport's tests by subclassing::

    from sandbox_core.contract.conformance import ConformanceSuite

    class TestMyTransport(ConformanceSuite):
        pass

The tests take the ``sandbox`` fixture (a connected :class:`~sandbox_core.contract.client.Sandbox`),
which the pytest plugin parametrises over every installed transport. Each test uses its own
session ids and paths, so tests are independent although they share one server. One mixin
per service, in the module of that name.
"""

from sandbox_core.contract.conformance.backup import BackupSuite
from sandbox_core.contract.conformance.commands import CommandsSuite
from sandbox_core.contract.conformance.files import FilesSuite
from sandbox_core.contract.conformance.git import GitSuite
from sandbox_core.contract.conformance.interpreter import InterpreterSuite
from sandbox_core.contract.conformance.limits import LimitsSuite
from sandbox_core.contract.conformance.once import OnceSuite
from sandbox_core.contract.conformance.ports import PortsSuite
from sandbox_core.contract.conformance.processes import DrivenProcessesSuite, ProcessesSuite, RunStreamSuite
from sandbox_core.contract.conformance.sessions import SessionsSuite
from sandbox_core.contract.conformance.watch import WatchSuite


class ConformanceSuite(
    CommandsSuite,
    SessionsSuite,
    ProcessesSuite,
    DrivenProcessesSuite,
    RunStreamSuite,
    OnceSuite,
    PortsSuite,
    GitSuite,
    FilesSuite,
    LimitsSuite,
    InterpreterSuite,
    WatchSuite,
    BackupSuite,
):
    """Every service's conformance tests."""


__all__ = ["ConformanceSuite"]
