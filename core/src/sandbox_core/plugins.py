"""The plugin manager: built by a function, loading entry points of the ``sandbox`` group."""

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
log = structlog.get_logger("sandbox.plugins")


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded; the message names the entry point and distribution."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str


def _disabled() -> set[str]:
    raw = os.environ.get("SANDBOX_DISABLED_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return ("<unknown>", "")
    return (dist.metadata["Name"], dist.version)


def make_plugin_manager(
    *, load_entry_points: bool = True, plugins: Iterable[tuple[str, Any]] = ()
) -> pluggy.PluginManager:
    """Build a fresh plugin manager with the hookspecs, the installed plugins and ``plugins``.

    ``SANDBOX_DISABLED_PLUGINS=a,b`` skips entry points by name; ``SANDBOX_TRACE_HOOKS=1``
    logs every hook call.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    disabled = _disabled()
    if load_entry_points:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in disabled:
                pm.set_blocked(ep.name)
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            dist_name, version = _dist_of(ep)
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin entry point {ep.name!r} ({ep.value}) of distribution "
                    f"{dist_name} {version} failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            pm.register(plugin, name=ep.name)
            infos[ep.name] = PluginInfo(ep.name, dist_name, version, ep.value)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
        infos.setdefault(name, PluginInfo(name, "<local>", "", getattr(plugin, "__name__", repr(plugin))))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc
    pm.sandbox_plugin_info = infos  # type: ignore[attr-defined]
    if os.environ.get("SANDBOX_TRACE_HOOKS", "") not in ("", "0"):
        pm.trace.root.setwriter(lambda msg: log.debug("hook.trace", message=msg.rstrip()))
        pm.enable_tracing()
    return pm


def plugin_info(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """What :func:`make_plugin_manager` loaded, in name order."""
    return sorted(getattr(pm, "sandbox_plugin_info", {}).values(), key=lambda p: p.name)


class Hooks:
    """A typed facade over ``pm.hook`` so that every call is visible to the type checker."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def services(self) -> dict[str, ServiceSpec]:
        """Every service the plugins register, by name (a name registered twice is an error)."""
        return _collect("service", ServiceSpec, self.pm.hook.sandbox_register_services)

    def transports(self) -> dict[str, TransportSpec]:
        """Every transport the plugins register, by name (a name registered twice is an error)."""
        return _collect("transport", TransportSpec, self.pm.hook.sandbox_register_transports)

    def map_exception(self, exc: BaseException, operation: str) -> SandboxError | None:
        """The SandboxError a plugin maps ``exc`` to, or None when no plugin does."""
        mapped = self.pm.hook.sandbox_map_exception(exc=exc, operation=operation)
        return mapped if isinstance(mapped, SandboxError) else None


def _collect(kind: str, spec_type: type[SpecT], hook: Callable[..., object]) -> dict[str, SpecT]:
    """Call a ``register`` hook and gather what it registers, refusing duplicates and strays."""
    found: dict[str, SpecT] = {}

    def register(spec: SpecT) -> None:
        if not isinstance(spec, spec_type):
            raise PluginLoadError(f"a plugin registered {spec!r} where a {spec_type.__name__} was expected")
        if spec.name in found:
            raise PluginLoadError(f"{kind} {spec.name!r} is registered twice")
        found[spec.name] = spec

    hook(register=register)
    return found
