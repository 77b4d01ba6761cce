"""The conformance suite: what every transport must do, checked through the client facade.

Use it from a transport's tests by subclassing::

    from sandbox_core.testing.conformance import ConformanceSuite

    class TestMyTransport(ConformanceSuite):
        pass

The tests take the ``sandbox`` fixture (a connected :class:`~sandbox_core.client.Sandbox`),
which the pytest plugin parametrises over every installed transport. Each test uses its own
session ids and paths, so tests are independent although they share one server. One mixin
per service, in the module of that name.
"""

from .backup import BackupSuite
from .commands import CommandsSuite
from .files import FilesSuite
from .git import GitSuite
from .interpreter import InterpreterSuite
from .limits import LimitsSuite
from .ports import PortsSuite
from .processes import ProcessesSuite
from .sessions import SessionsSuite
from .watch import WatchSuite


class ConformanceSuite(
    CommandsSuite,
    SessionsSuite,
    ProcessesSuite,
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
