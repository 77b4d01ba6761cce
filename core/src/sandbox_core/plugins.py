"""The plugin manager: built by a function, loading entry points of the ``sandbox`` group.

Test-only plugins (the test suite's own, such as its greeter service) use a group of their
own, ``sandbox.testing``, loaded only when asked for (``SANDBOX_TEST_PLUGINS=1`` or
``make_plugin_manager(test_plugins=True)``): installing the development requirements never
changes what ``sandbox serve`` serves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

import pluggy
import structlog

from . import hookspecs
from .errors import SandboxError
from .registry import ServiceSpec
from .transport import TransportSpec

SpecT = TypeVar("SpecT", ServiceSpec, TransportSpec)

ENTRY_POINT_GROUP = "sandbox"
#: Plugins that exist for tests only; loaded with ``SANDBOX_TEST_PLUGINS=1``.
TEST_ENTRY_POINT_GROUP = "sandbox.testing"
log = structlog.get_logger("sandbox.plugins")


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded; the message names the entry point and distribution."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    group: str = ENTRY_POINT_GROUP

    def describe(self) -> str:
        """``plugin 'NAME' (DISTRIBUTION VERSION)``, for error messages."""
        if self.distribution == "<local>":
            return f"plugin {self.name!r} (registered directly, from no distribution)"
        return f"plugin {self.name!r} ({self.distribution} {self.version})"


def _disabled() -> set[str]:
    raw = os.environ.get("SANDBOX_DISABLED_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def wants_test_plugins() -> bool:
    """Whether ``SANDBOX_TEST_PLUGINS`` asks for the test-only plugins."""
    return os.environ.get("SANDBOX_TEST_PLUGINS", "") not in ("", "0")


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return ("<unknown>", "")
    return (dist.metadata["Name"], dist.version)


def _info(ep: EntryPoint) -> PluginInfo:
    dist_name, version = _dist_of(ep)
    return PluginInfo(ep.name, dist_name, version, ep.value, ep.group)


def _entry_points(test_plugins: bool) -> list[EntryPoint]:
    """The plugin entry points to load, in name order; ``SANDBOX_DISABLED_PLUGINS`` ones left
    out. Two distributions with an entry point of the same name are an error naming both:
    neither may silently shadow the other."""
    groups = [ENTRY_POINT_GROUP, TEST_ENTRY_POINT_GROUP] if test_plugins else [ENTRY_POINT_GROUP]
    disabled = _disabled()
    chosen: dict[str, EntryPoint] = {}
    for group in groups:
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            if ep.name in disabled:
                continue
            first = chosen.setdefault(ep.name, ep)
            if first is not ep and _dist_of(first) != _dist_of(ep):
                a, b = sorted((_info(first), _info(ep)), key=lambda i: (i.distribution, i.group))
                raise PluginLoadError(
                    f"plugin entry point {ep.name!r} is provided twice: by {a.distribution} {a.version} "
                    f"({a.group}: {a.module}) and by {b.distribution} {b.version} ({b.group}: {b.module}); "
                    f"uninstall one, or skip both with SANDBOX_DISABLED_PLUGINS={ep.name}"
                )
    return [chosen[name] for name in sorted(chosen)]


def installed_plugins(*, test_plugins: bool | None = None) -> list[PluginInfo]:
    """The plugins :func:`make_plugin_manager` would load, read from the installed metadata
    without importing any of them, in name order."""
    return [_info(ep) for ep in _entry_points(wants_test_plugins() if test_plugins is None else test_plugins)]


class SandboxPluginManager(pluggy.PluginManager):
    """pluggy's plugin manager for the ``sandbox`` project, which also knows where each of its
    plugins came from (:attr:`infos`: entry point name to :class:`PluginInfo`)."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    def register_plugin(self, plugin: Any, info: PluginInfo) -> None:
        """Register ``plugin`` under ``info.name`` and remember where it came from."""
        self.register(plugin, name=info.name)
        self.infos[info.name] = info


def _infos(pm: pluggy.PluginManager) -> dict[str, PluginInfo]:
    return pm.infos if isinstance(pm, SandboxPluginManager) else {}


def make_plugin_manager(
    *,
    load_entry_points: bool = True,
    plugins: Iterable[tuple[str, Any]] = (),
    test_plugins: bool | None = None,
) -> SandboxPluginManager:
    """Build a fresh plugin manager with the hookspecs, the installed plugins and ``plugins``.

    ``SANDBOX_DISABLED_PLUGINS=a,b`` skips entry points by name; ``SANDBOX_TRACE_HOOKS=1``
    logs every hook call. The test-only plugins (group ``sandbox.testing``) are loaded when
    ``test_plugins`` is true, or when it is None and ``SANDBOX_TEST_PLUGINS=1``.
    """
    if test_plugins is None:
        test_plugins = wants_test_plugins()
    pm = SandboxPluginManager()
    if load_entry_points:
        for ep in _entry_points(test_plugins):
            info = _info(ep)
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin entry point {ep.name!r} ({ep.value}) of distribution "
                    f"{info.distribution} {info.version} failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            pm.register_plugin(plugin, info)
    for name, plugin in plugins:
        pm.register_plugin(plugin, PluginInfo(name, "<local>", "", getattr(plugin, "__name__", repr(plugin)), ""))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc
    if os.environ.get("SANDBOX_TRACE_HOOKS", "") not in ("", "0"):
        pm.trace.root.setwriter(lambda msg: log.debug("hook.trace", message=msg.rstrip()))
        pm.enable_tracing()
    return pm


def plugin_info(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """What :func:`make_plugin_manager` loaded, in name order."""
    return sorted(_infos(pm).values(), key=lambda p: p.name)


class Hooks:
    """A typed facade over ``pm.hook`` so that every call is visible to the type checker."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def services(self) -> dict[str, ServiceSpec]:
        """Every service the plugins register, by name (a name registered twice is an error)."""
        return _collect(self.pm, "sandbox_register_services", "service", ServiceSpec)

    def transports(self) -> dict[str, TransportSpec]:
        """Every transport the plugins register, by name (a name registered twice is an error)."""
        return _collect(self.pm, "sandbox_register_transports", "transport", TransportSpec)

    def map_exception(self, exc: BaseException, operation: str) -> SandboxError | None:
        """The SandboxError a plugin maps ``exc`` to, or None when no plugin does."""
        mapped = self.pm.hook.sandbox_map_exception(exc=exc, operation=operation)
        return mapped if isinstance(mapped, SandboxError) else None


def _collect(pm: pluggy.PluginManager, hookname: str, kind: str, spec_type: type[SpecT]) -> dict[str, SpecT]:
    """Call a ``register`` hook and gather what it registers, refusing duplicates and strays.

    Each plugin's implementation is called on its own (in pluggy's order, traced like any hook
    call) with a ``register`` that knows who calls it, so that a name registered by two
    plugins is an error naming both, with their distributions and versions.
    """
    found: dict[str, SpecT] = {}
    owners: dict[str, str] = {}
    infos = _infos(pm)
    impls = getattr(pm.hook, hookname).get_hookimpls()

    def describe(plugin_name: str) -> str:
        info = infos.get(plugin_name)
        return info.describe() if info is not None else f"plugin {plugin_name!r}"

    def registrar(owner: str) -> Callable[[SpecT], None]:
        def register(spec: SpecT) -> None:
            if not isinstance(spec, spec_type):
                expected = spec_type.__name__
                raise PluginLoadError(f"{describe(owner)} registered {spec!r} where a {expected} was expected")
            if spec.name in found:
                raise PluginLoadError(
                    f"{kind} {spec.name!r} is registered twice: by {describe(owners[spec.name])} "
                    f"and by {describe(owner)}"
                )
            found[spec.name] = spec
            owners[spec.name] = owner

        return register

    callers = [impl for impl in impls if not (impl.hookwrapper or impl.wrapper)]
    for impl in reversed(callers):  # pluggy's order: the last registered first
        others = [other.plugin for other in callers if other is not impl]
        pm.subset_hook_caller(hookname, remove_plugins=others)(register=registrar(impl.plugin_name))
    return found
