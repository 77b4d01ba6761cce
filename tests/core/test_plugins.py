"""The plugin manager: entry points, load failures, name clashes, test-only plugins, disabling,
tracing, hook documentation."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from sandbox_core import hookspecs
from sandbox_core.hookspecs import hookimpl
from sandbox_core.plugins import (
    TEST_ENTRY_POINT_GROUP,
    Hooks,
    PluginLoadError,
    installed_plugins,
    make_plugin_manager,
    plugin_info,
)


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
    assert {"sessions", "utils", "http"} <= names
    hooks = Hooks(pm)
    assert {"sessions", "commands", "utils"} <= set(hooks.services())
    assert "http" in hooks.transports()


def test_each_call_builds_a_fresh_manager() -> None:
    assert make_plugin_manager() is not make_plugin_manager()


def _fake_distribution(
    tmp_path: Path, module: str, *, name: str = "broken", dist: str = "broken-sandbox-plugin", code: str | None = None
) -> None:
    """A distribution ``dist`` 9.9 on ``tmp_path`` with entry point ``name = module`` in the
    ``sandbox`` group (and the module itself, when ``code`` is given)."""
    info = tmp_path / f"{dist.replace('-', '_')}-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 9.9\n")
    (info / "entry_points.txt").write_text(f"[sandbox]\n{name} = {module}\n")
    if code is not None:
        (tmp_path / f"{module}.py").write_text(code)


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
    with pytest.raises(PluginLoadError, match="registered twice") as info:
        Hooks(pm).services()
    assert f"plugin 'utils' (sandbox-services {version('sandbox-services')})" in str(info.value)
    assert "plugin 'dup' (registered directly" in str(info.value)


DUPLICATE_SERVICE = """
from sandbox_core import ServiceSpec, hookimpl

@hookimpl
def sandbox_register_services(register):
    register(ServiceSpec("utils", object))
"""


def test_service_registered_by_two_distributions_names_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(tmp_path, "dup_sandbox_mod", name="dup", dist="dup-sandbox-plugin", code=DUPLICATE_SERVICE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as info:
        Hooks(make_plugin_manager()).services()
    message = str(info.value)
    assert message.startswith("service 'utils' is registered twice"), message
    assert f"sandbox-services {version('sandbox-services')}" in message
    assert "plugin 'dup' (dup-sandbox-plugin 9.9)" in message


def test_entry_point_name_taken_by_two_distributions_names_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second distribution's entry point named ``http`` neither shadows nor is shadowed."""
    _fake_distribution(tmp_path, "clash_sandbox_plugin_mod", name="http", dist="clash-sandbox-plugin", code="")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as info:
        make_plugin_manager()
    message = str(info.value)
    assert "'http' is provided twice" in message
    assert f"sandbox-transport-http {version('sandbox-transport-http')}" in message
    assert "clash-sandbox-plugin 9.9" in message
    monkeypatch.setenv("SANDBOX_DISABLED_PLUGINS", "http")  # the way out: skip both
    assert "http" not in {p.name for p in plugin_info(make_plugin_manager())}


def test_test_only_plugins_load_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_TEST_PLUGINS", raising=False)
    assert "greeter" not in {p.name for p in plugin_info(make_plugin_manager())}
    assert "greeter" not in Hooks(make_plugin_manager()).services()
    assert "greeter" not in {p.name for p in installed_plugins()}
    asked = {p.name: p for p in plugin_info(make_plugin_manager(test_plugins=True))}
    assert (asked["greeter"].distribution, asked["greeter"].group) == ("sandbox-test-greeter", TEST_ENTRY_POINT_GROUP)
    monkeypatch.setenv("SANDBOX_TEST_PLUGINS", "1")
    assert "greeter" in Hooks(make_plugin_manager()).services()
    assert "greeter" not in Hooks(make_plugin_manager(test_plugins=False)).services()


def test_cli_plugins_lists_and_disables() -> None:
    def plugins(**env: str) -> str:
        clean = {key: value for key, value in os.environ.items() if not key.startswith("SANDBOX_")}
        return subprocess.run(
            [sys.executable, "-m", "sandbox_core.cli", "plugins"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**clean, **env},
        ).stdout

    out = plugins()
    assert "sandbox-transport-http" in out and "sandbox-services" in out
    assert "greeter" not in out  # test-only: not what a development install serves
    assert "sandbox-transport-http" not in plugins(SANDBOX_DISABLED_PLUGINS="http")
    greeter = [line for line in plugins(SANDBOX_TEST_PLUGINS="1").splitlines() if line.startswith("greeter ")]
    assert len(greeter) == 1 and "sandbox-test-greeter" in greeter[0] and greeter[0].endswith("[test-only]")


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
