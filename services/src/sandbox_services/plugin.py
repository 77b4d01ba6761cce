"""Every service of sandbox-services at once, for a host that registers them by hand (a test's
``make_plugin_manager(load_entry_points=False, plugins=[("services", sandbox_services.plugin)])``).

An installed server does not use this module: each service is a plugin of its own, its own entry
point in the ``sandbox`` group named as the service (``sessions = "sandbox_services.sessions"``,
..., ``interpreter = "sandbox_services.interpreter_plugin"``), so that
``SANDBOX_DISABLED_PLUGINS`` leaves out one service alone. Registering this module as well as
the entry points registers every service twice, which is an error.
"""

from __future__ import annotations

from collections.abc import Callable

from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceSpec

from . import backup, commands, files, git, interpreter_plugin, ports, processes, sessions, terminals, utils, watch

#: Each service's plugin module, in the order its services are registered.
SERVICE_PLUGINS = (
    sessions,
    commands,
    utils,
    processes,
    ports,
    git,
    files,
    terminals,
    interpreter_plugin,
    watch,
    backup,
)


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    for plugin in SERVICE_PLUGINS:
        plugin.sandbox_register_services(register)
