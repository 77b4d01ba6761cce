"""Every installed transport passes the conformance suite."""

from sandbox_core.contract.conformance import ConformanceSuite


class TestConformance(ConformanceSuite):
    pass
