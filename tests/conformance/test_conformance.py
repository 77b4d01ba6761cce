"""Every installed transport passes the conformance suite."""

from sandbox_core.testing.conformance import ConformanceSuite


class TestConformance(ConformanceSuite):
    pass
