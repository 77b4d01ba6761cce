"""Plugins for servers a test runs in its own process (``sandbox_core.server.serve``).

Such a server must not run the sessions service: it makes the process a child subreaper and, when
it stops, ends every child of the process that the services did not start themselves, the
servers other tests started as subprocesses (the shared ``sandbox_server``) included. So these
servers get the http transport and the utils service (``/api/ping``) only: the utils plugin alone
(each service of sandbox-services is a plugin of its own).
"""

from __future__ import annotations

from typing import Any

import sandbox_services.utils
import sandbox_transport_http.plugin
from sandbox_core.plugins import SandboxPluginManager, make_plugin_manager


def in_process_plugins(*extra: tuple[str, Any]) -> SandboxPluginManager:
    """http, the utils service and ``extra`` (name, plugin) pairs: no entry point is loaded."""
    return make_plugin_manager(
        load_entry_points=False,
        plugins=[("http", sandbox_transport_http.plugin), ("utils", sandbox_services.utils), *extra],
    )
