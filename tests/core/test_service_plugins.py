"""Each service of sandbox-services is a plugin of its own (its own entry point, named as the
service), so ``SANDBOX_DISABLED_PLUGINS`` leaves out one service alone; a service that requires
another (``ServiceSpec.requires``) stops start-up, naming both, when that one is missing."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable

import httpx
import pytest

from sandbox_core import Sandbox, SandboxError
from sandbox_core.plugins import Hooks, PluginLoadError, installed_plugins, make_plugin_manager
from sandbox_core.registry import ServiceContext, ServiceRegistry, ServiceSpec
from sandbox_core.testing import ServerProcess, assert_error, installed_transports

SERVICES = {"backup", "commands", "files", "git", "interpreter", "ports", "processes", "sessions", "terminals"}
SERVICES |= {"utils", "watch"}


def test_each_service_is_a_plugin_of_its_own() -> None:
    infos = {info.name: info for info in installed_plugins()}
    for name in sorted(SERVICES):
        assert infos[name].distribution == "sandbox-services", infos[name]
        module = importlib.import_module(infos[name].module)
        alone = make_plugin_manager(load_entry_points=False, plugins=[(name, module)])
        assert list(Hooks(alone).services()) == [name]
    assert "services" not in infos  # the former all-in-one entry point


def test_the_all_in_one_module_registers_every_service() -> None:
    """sandbox_services.plugin, for a host that registers the services by hand (as tests do)."""
    import sandbox_services.plugin

    pm = make_plugin_manager(load_entry_points=False, plugins=[("services", sandbox_services.plugin)])
    assert set(Hooks(pm).services()) == SERVICES


def test_disabling_one_service_leaves_out_that_one_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_DISABLED_PLUGINS", "interpreter")
    services = set(Hooks(make_plugin_manager(test_plugins=False)).services())
    assert services == SERVICES - {"interpreter"}


async def test_a_server_without_the_interpreter_serves_everything_else(
    sandbox_server_factory: Callable[..., ServerProcess],
) -> None:
    server = sandbox_server_factory(env={"SANDBOX_DISABLED_PLUGINS": "interpreter"})
    started = json.loads(server.started_line)
    assert SERVICES - {"interpreter"} <= set(started["services"]) and "interpreter" not in started["services"]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for path, body in (("/api/contexts", {"language": "python"}), ("/api/interpreter/list_code_contexts", {})):
            answer = assert_error(await http.post(path, json=body), 404, "UNKNOWN_ERROR")
            assert "interpreter" in json.dumps(answer), answer
        assert_error(await http.get("/api/contexts"), 404, "UNKNOWN_ERROR")
        ran = await http.post("/api/execute", json={"command": "echo still here"})
        assert ran.status_code == 200 and ran.json()["stdout"].strip() == "still here", ran.text
    for transport in installed_transports():
        async with Sandbox(server.url, transport=transport) as sb:
            with pytest.raises(SandboxError) as info:
                await sb.interpreter.list_contexts()
            assert info.value.status == 404, (transport, info.value)
            # the same connection serves on (ws: a contract route of a missing service once closed it)
            assert (await sb.exec("echo ok")).stdout.strip() == "ok", transport
            await sb.files.write(f"{server.workspace}/{transport}.txt", "written")
            assert (await sb.files.read(f"{server.workspace}/{transport}.txt")).content == "written"
            assert await sb.ping() == "healthy"


def test_a_server_without_sessions_refuses_to_start_naming_what_needs_it() -> None:
    server = ServerProcess(env={"SANDBOX_DISABLED_PLUGINS": "sessions"}, startup_timeout=20)
    try:
        with pytest.raises(RuntimeError) as info:
            server.start()
    finally:
        code = server.stop()
    assert code == 2, code
    message = str(info.value)
    for needs in ("commands", "files", "processes", "terminals"):
        assert f"service {needs!r} requires 'sessions'" in message, message
    assert "SANDBOX_DISABLED_PLUGINS" in message and "leave out commands, files, processes, terminals" in message


# the registry, on services of this test ----------------------------------------------------------


def recording(built: list[str]) -> Callable[[ServiceContext], object]:
    class Service:
        def __init__(self, ctx: ServiceContext) -> None:
            self.name = ctx.name
            built.append(f"built {ctx.name}")

        async def startup(self) -> None:
            built.append(f"started {self.name}")

    return Service


async def test_a_missing_required_service_stops_the_registry_before_anything_is_built() -> None:
    built: list[str] = []
    specs = {
        "alone": ServiceSpec("alone", recording(built)),
        "needy": ServiceSpec("needy", recording(built), requires=("gone", "alone")),
        "needier": ServiceSpec("needier", recording(built), requires=("needy",)),
    }
    registry = ServiceRegistry(specs, settings={}, workspace="/")
    with pytest.raises(PluginLoadError) as info:
        await registry.start()
    assert built == []
    message = str(info.value)
    assert message.startswith("service 'needy' requires 'gone', which no plugin registers"), message
    assert "SANDBOX_DISABLED_PLUGINS" in message and "leave out needier, needy as well" in message


async def test_services_are_built_and_started_after_those_they_require() -> None:
    built: list[str] = []
    specs = {
        "top": ServiceSpec("top", recording(built), requires=("middle",)),
        "middle": ServiceSpec("middle", recording(built), requires=("base",)),
        "base": ServiceSpec("base", recording(built)),
    }
    registry = ServiceRegistry(specs, settings={}, workspace="/")
    await registry.start()
    try:
        assert built == [f"{step} {name}" for step in ("built", "started") for name in ("base", "middle", "top")]
    finally:
        await registry.aclose()


async def test_services_that_require_each_other_are_refused() -> None:
    specs = {
        "a": ServiceSpec("a", recording([]), requires=("b",)),
        "b": ServiceSpec("b", recording([]), requires=("a",)),
    }
    with pytest.raises(PluginLoadError, match="services require each other in a cycle"):
        await ServiceRegistry(specs, settings={}, workspace="/").start()
