"""The plugin manager: entry points, load failures, disabling, tracing, hook documentation."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox_core import hookspecs
from sandbox_core.hookspecs import hookimpl
from sandbox_core.plugins import Hooks, PluginLoadError, make_plugin_manager, plugin_info


def test_every_hook_is_documented() -> None:
    hooks = [
        (name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("sandbox_")
    ]
    assert hooks
    for name, fn in hooks:
        doc = inspect.getdoc(fn)
        assert doc and doc.strip(), f"hook {name} has no docstring"


def test_installed_plugins_load() -> None:
    pm = make_plugin_manager()
    names = {info.name for info in plugin_info(pm)}
    assert {"services", "http"} <= names
    hooks = Hooks(pm)
    assert {"sessions", "commands", "utils"} <= set(hooks.services())
    assert "http" in hooks.transports()


def test_each_call_builds_a_fresh_manager() -> None:
    assert make_plugin_manager() is not make_plugin_manager()


def _fake_distribution(tmp_path: Path, module: str) -> None:
    info = tmp_path / "broken_sandbox_plugin-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-sandbox-plugin\nVersion: 9.9\n")
    (info / "entry_points.txt").write_text(f"[sandbox]\nbroken = {module}\n")


def test_load_failure_names_entry_point_and_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(tmp_path, "no_such_module_for_sandbox_tests")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as info:
        make_plugin_manager()
    message = str(info.value)
    assert "'broken'" in message and "broken-sandbox-plugin 9.9" in message
    monkeypatch.setenv("SANDBOX_DISABLED_PLUGINS", "broken")
    assert "broken" not in {p.name for p in plugin_info(make_plugin_manager())}


def test_misspelt_hook_fails_at_startup() -> None:
    class Typo:
        @hookimpl
        def sandbox_register_servces(self, register: object) -> None:
            pass

    with pytest.raises(PluginLoadError, match="sandbox_register_servces"):
        make_plugin_manager(load_entry_points=False, plugins=[("typo", Typo())])


def test_duplicate_service_is_an_error() -> None:
    from sandbox_core.registry import ServiceSpec

    class Dup:
        @hookimpl
        def sandbox_register_services(self, register: object) -> None:
            register(ServiceSpec("utils", object))  # type: ignore[operator]

    pm = make_plugin_manager(plugins=[("dup", Dup())])
    with pytest.raises(PluginLoadError, match="registered twice"):
        Hooks(pm).services()


def test_cli_plugins_lists_and_disables() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sandbox_core.cli", "plugins"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "sandbox-transport-http" in out and "sandbox-services" in out
    env = {**os.environ, "SANDBOX_DISABLED_PLUGINS": "http"}
    out = subprocess.run(
        [sys.executable, "-m", "sandbox_core.cli", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    ).stdout
    assert "sandbox-transport-http" not in out


def test_trace_hooks_logs_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    monkeypatch.setenv("SANDBOX_TRACE_HOOKS", "1")
    with capture_logs() as logs:
        Hooks(make_plugin_manager()).transports()
    assert any(entry["event"] == "hook.trace" and "sandbox_register_transports" in entry["message"] for entry in logs)


def test_cli_config_error_names_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nhots = 'x'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox_core.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "hots" in proc.stderr
