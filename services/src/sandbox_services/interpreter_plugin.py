"""The ``interpreter`` plugin (entry point): the code interpreter service alone
(:mod:`sandbox_services.interpreter`), so ``SANDBOX_DISABLED_PLUGINS=interpreter`` leaves it
out, and the server then never imports it (nor Jupyter's client)."""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceSpec

from .interpreter import InterpreterService, InterpreterSettings


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``interpreter`` plugin (entry point): this service alone."""
    register(ServiceSpec("interpreter", InterpreterService, InterpreterSettings, "code contexts: Python kernels, Node"))
