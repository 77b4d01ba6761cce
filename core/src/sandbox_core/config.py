"""Configuration from one TOML file, with environment overrides.

Looked up in this order: an explicit path (``--config``), ``SANDBOX_CONFIG``, ``sandbox.toml``
in the working directory; with none, every default applies. Unknown keys and bad values are
startup errors naming the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from .registry import ServiceSpec, validation_from_msgspec
from .transport import TransportSpec

Port = Annotated[int, Meta(ge=0, le=65535)]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Port = 3000
    workspace: str | None = None
    transports: list[str] | None = None
    log_level: str = "info"
    shutdown_timeout: Annotated[float, Meta(ge=0)] = 5.0


class ClientConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = "http://127.0.0.1:3000"
    transport: str = "http"
    timeout: Annotated[float, Meta(gt=0)] = 120.0


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)
    transports: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    services: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    source: str | None = None

    def workspace(self) -> str:
        """The configured workspace, else /workspace if it exists, else the working directory."""
        if self.server.workspace:
            return self.server.workspace
        if Path("/workspace").is_dir():
            return "/workspace"
        return os.getcwd()


def find_config_file(path: str | os.PathLike[str] | None = None) -> Path | None:
    if path is not None:
        return Path(path)
    env = os.environ.get("SANDBOX_CONFIG")
    if env:
        return Path(env)
    local = Path("sandbox.toml")
    return local if local.is_file() else None


def _convert(data: Any, typ: type[Any], where: str) -> Any:
    try:
        return msgspec.convert(data, typ)
    except msgspec.ValidationError as exc:
        err = validation_from_msgspec(exc, where)
        raise ConfigError(err.message.replace("request body", where)) from None


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file (if any) and apply environment overrides."""
    env = os.environ if env is None else env
    found = find_config_file(path)
    data: dict[str, Any] = {}
    if found is not None:
        try:
            data = tomllib.loads(found.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {found} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {found} is not valid TOML: {exc}") from None
    if "source" in data:  # a field of ours (where the config came from), not a setting
        raise ConfigError(f"config {found}: unknown key 'source'")
    config: Config = _convert(data, Config, f"config {found or '(defaults)'}")
    config.source = str(found) if found else None
    if env.get("SANDBOX_TRANSPORT"):
        config.client.transport = env["SANDBOX_TRANSPORT"]
    if env.get("SANDBOX_URL"):
        config.client.url = env["SANDBOX_URL"]
    return config


def transport_settings(config: Config, spec: TransportSpec) -> Any:
    """The validated ``[transports.NAME]`` table for one transport."""
    raw = config.transports.get(spec.name, {})
    if spec.settings is None:
        if raw:
            raise ConfigError(
                f"[transports.{spec.name}] has settings, but transport {spec.name!r} takes none: {sorted(raw)}"
            )
        return None
    return _convert(raw, spec.settings, f"[transports.{spec.name}]")


def service_settings(config: Config, specs: Mapping[str, ServiceSpec]) -> dict[str, Any]:
    """The validated ``[services.NAME]`` tables; an unknown service name is an error."""
    out: dict[str, Any] = {}
    for name, raw in config.services.items():
        spec = specs.get(name)
        if spec is None:
            raise ConfigError(f"[services.{name}]: unknown service {name!r}; installed: {sorted(specs)}")
        if spec.settings is None:
            raise ConfigError(f"[services.{name}]: service {name!r} takes no settings")
        out[name] = _convert(raw, spec.settings, f"[services.{name}]")
    return out


def enabled_transports(config: Config, installed: Mapping[str, TransportSpec]) -> list[str]:
    """The transports to serve: the configured ones (each must be installed) or all installed."""
    names = config.server.transports
    if names is None:
        return sorted(name for name, spec in installed.items() if spec.server is not None)
    for name in names:
        if name not in installed:
            raise ConfigError(f"server.transports: unknown transport {name!r}; installed: {sorted(installed)}")
    return list(names)
