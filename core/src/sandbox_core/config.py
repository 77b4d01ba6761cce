"""Configuration from one TOML file, with environment and command-line overrides.

Looked up in this order: an explicit path (``--config``), ``SANDBOX_CONFIG``, ``sandbox.toml``
in the working directory; with none, every default applies. Environment overrides
(``SANDBOX_TRANSPORT``, ``SANDBOX_URL``) and command-line flags are applied to the file's data
*before* it is validated, so every value goes through the same checks. Unknown keys and bad
values are startup errors naming the key by its full path (``server.port``,
``transports.http.max_body_bytes``) and, for an override, where the value came from.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

from .registry import ServiceSpec
from .transport import TransportSpec

Port = Annotated[int, Meta(ge=0, le=65535)]
#: The levels :func:`sandbox_core.log.configure_logging` knows.
LogLevel = Literal["debug", "info", "warning", "error", "critical"]

#: (setting, environment variable that overrides it)
ENV_OVERRIDES = (
    ("client.transport", "SANDBOX_TRANSPORT"),
    ("client.url", "SANDBOX_URL"),
    ("client.token", "SANDBOX_TOKEN"),  # the server reads SANDBOX_TOKEN itself (sandbox_core.edge)
)


#: The environment variables the server itself reads (its configuration, its token, its plugin
#: switches): never passed on to the code it runs for users (see :func:`user_environment`).
SERVER_ENVIRONMENT = frozenset(
    {
        "SANDBOX_CONFIG",
        "SANDBOX_TOKEN",
        "SANDBOX_TRANSPORT",
        "SANDBOX_URL",
        "SANDBOX_DISABLED_PLUGINS",
        "SANDBOX_TEST_PLUGINS",
        "SANDBOX_TRACE_HOOKS",
    }
)


def user_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to start user code with (shells, processes, kernels, terminals, the tools
    the services run): ``env`` (default: the server's own) without :data:`SERVER_ENVIRONMENT`.
    The token and the config path stay with the server."""
    source = os.environ if env is None else env
    return {name: value for name, value in source.items() if name not in SERVER_ENVIRONMENT}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Port = 3000
    workspace: str | None = None
    transports: list[str] | None = None
    log_level: LogLevel = "info"
    shutdown_timeout: Annotated[float, Meta(ge=0)] = 5.0
    # from SIGTERM, readiness (GET /api/ready) answers 503 while the server keeps serving for this
    # long, so that a load balancer stops sending before connections close; then shutdown_timeout
    drain_delay: Annotated[float, Meta(ge=0, le=3600)] = 0.0
    metrics: bool = True  # GET /metrics (Prometheus text format) and what it counts
    # the edge (sandbox_core.edge): who may talk to the server, and how long a connection may idle
    token: str | None = None  # SANDBOX_TOKEN overrides it; never logged
    token_file: str | None = None  # a file whose first line is the token
    allow_unauthenticated: bool = False  # needed to serve a non-loopback address with no token
    allowed_hosts: list[str] | None = None  # Host header names; default: loopback names + the bound address
    allowed_origins: list[str] = msgspec.field(default_factory=list)  # browser Origins allowed; "*": any
    keep_alive_timeout: Annotated[float, Meta(gt=0, le=3600)] = 15.0  # idle connection
    header_timeout: Annotated[float, Meta(gt=0, le=3600)] = 10.0  # a request head, from its first byte
    http2: bool = False  # serve h2c (prior knowledge and Upgrade: h2c)
    # what the server takes in (sandbox_core.intake): one budget for every transport's request
    # bodies, WebSocket messages and rpc batches; past it a request waits for room, then 503 (1013)
    max_body_bytes_total: Annotated[int, Meta(gt=0)] = 256 * 1024 * 1024
    body_wait_timeout: Annotated[float, Meta(ge=0, le=3600)] = 30.0
    # a request body or WebSocket message that has begun: no bytes of it for this long ends it
    body_timeout: Annotated[float, Meta(gt=0, le=3600)] = 30.0


class ClientConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = "http://127.0.0.1:3000"
    transport: str | None = None  # default: http if installed, else the only transport installed
    timeout: Annotated[float, Meta(gt=0)] = 120.0
    token: str | None = None  # sent as `Authorization: Bearer`; SANDBOX_TOKEN overrides it


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)
    transports: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    services: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    #: not settings: the file the config came from, and where each overridden setting came
    #: from (``{"client.transport": "SANDBOX_TRANSPORT", "server.port": "--port"}``)
    source: str | None = None
    origins: dict[str, str] = msgspec.field(default_factory=dict)

    def workspace(self) -> str:
        """The configured workspace, else /workspace if it exists, else the working directory.
        A configured one must be an existing directory (a ConfigError names the setting)."""
        if self.server.workspace:
            path = self.server.workspace
            if not os.path.isdir(path):
                what = "does not exist" if not os.path.lexists(path) else "is not a directory"
                raise ConfigError(f"{describe_setting(self, 'server.workspace')}: {path!r} {what}")
            return os.path.abspath(path)
        if Path("/workspace").is_dir():
            return "/workspace"
        return os.getcwd()


#: Fields of :class:`Config` that record where it came from; a file may not set them.
_NOT_SETTINGS = ("source", "origins")


def find_config_file(path: str | os.PathLike[str] | None = None) -> Path | None:
    if path is not None:
        return Path(path)
    env = os.environ.get("SANDBOX_CONFIG")
    if env:
        return Path(env)
    local = Path("sandbox.toml")
    return local if local.is_file() else None


#: Settings whose error lists the values they take.
_CHOICES: dict[str, tuple[str, ...]] = {"server.log_level": get_args(LogLevel)}
_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")


def _lookup(data: Any, path: str) -> tuple[bool, Any]:
    """The value at a msgspec path (``.a.b[1]``) in ``data``: (found, value)."""
    for attr, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        if attr and isinstance(data, Mapping) and attr in data:
            data = data[attr]
        elif index and isinstance(data, list) and int(index) < len(data):
            data = data[int(index)]
        else:
            return False, None
    return True, data


def _describe(exc: msgspec.ValidationError, data: Any, prefix: str, where: str, origins: Mapping[str, str]) -> str:
    """A validation error as ``WHERE: KEY: PROBLEM``, KEY the full dotted path of the setting."""
    m = _AT.match(str(exc))
    assert m is not None  # the pattern matches any text
    problem, path = m.group("problem"), m.group("path") or ""
    key = ".".join(part for part in (prefix, path.lstrip(".")) if part)
    unknown, missing = _UNKNOWN.match(problem), _MISSING.match(problem)
    if unknown or missing:
        name = (unknown or missing).group("name")  # type: ignore[union-attr]
        full = f"{key}.{name}" if key else name
        return f"{where}: {'unknown' if unknown else 'missing required'} key {full!r}"
    found, value = _lookup(data, path)
    if found and ", got " not in problem and repr(value) not in problem:
        problem = f"{problem}, got {value!r}"
    if key in _CHOICES:
        problem = f"{problem}; one of: {', '.join(_CHOICES[key])}"
    origin = origins.get(key)
    if origin is not None:
        return f"{key} (from {origin}): {problem}"
    return f"{where}: {key}: {problem}"


def _convert(
    data: Any, typ: type[Any], *, where: str, prefix: str = "", origins: Mapping[str, str] | None = None
) -> Any:
    try:
        return msgspec.convert(data, typ)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, data, prefix, where, origins or {})) from None


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` in the raw config data, creating tables on the way. Where the file
    has something other than a table in the way, it is left alone: validation reports it."""
    *tables, last = key.split(".")
    for name in tables:
        data = data.setdefault(name, {})
        if not isinstance(data, dict):
            return
    data[last] = value


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, tuple[str, Any]] | None = None,
) -> Config:
    """Read the config file (if any), apply the environment overrides and ``overrides``, then
    validate it all.

    ``overrides`` maps a setting's dotted path to where its value comes from and the value
    (the CLI's flags: ``{"server.port": ("--port", 8080)}``); it wins over the environment,
    which wins over the file. An invalid override is named with its origin.
    """
    env = os.environ if env is None else env
    found = find_config_file(path)
    where = f"config {found}" if found is not None else "config (defaults)"
    data: dict[str, Any] = {}
    if found is not None:
        try:
            data = tomllib.loads(found.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {found} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {found} is not valid TOML: {exc}") from None
    for key in _NOT_SETTINGS:  # fields of ours (where the config came from), not settings
        if key in data:
            raise ConfigError(f"{where}: unknown key {key!r}")
    for section in ("transports", "services"):  # msgspec names no key inside a dict: check here
        tables = data.get(section)
        for name, table in tables.items() if isinstance(tables, dict) else ():
            if not isinstance(table, dict):
                raise ConfigError(f"{where}: {section}.{name}: expected a table, got {table!r}")
    origins: dict[str, str] = {}
    for key, var in ENV_OVERRIDES:
        if env.get(var):
            _set(data, key, env[var])
            origins[key] = var
    for key, (origin, value) in (overrides or {}).items():
        _set(data, key, value)
        origins[key] = origin
    config: Config = _convert(data, Config, where=where, origins=origins)
    config.source = str(found) if found else None
    config.origins = origins
    return config


def describe_setting(config: Config, key: str | None = None) -> str:
    """What to name in an error about ``key``: where its value came from (the file, the
    defaults, an environment variable or a flag)."""
    origin = config.origins.get(key) if key is not None else None
    if origin is not None:
        return f"{key} (from {origin})"
    where = f"config {config.source}" if config.source else "config (defaults)"
    return f"{where}: {key}" if key is not None else where


def transport_settings(config: Config, spec: TransportSpec) -> Any:
    """The validated ``[transports.NAME]`` table for one transport."""
    raw = config.transports.get(spec.name, {})
    if spec.settings is None:
        if raw:
            raise ConfigError(
                f"{describe_setting(config, f'transports.{spec.name}')}: transport {spec.name!r} takes no settings, "
                f"got {sorted(raw)}"
            )
        return None
    return _convert(raw, spec.settings, where=describe_setting(config), prefix=f"transports.{spec.name}")


def service_settings(config: Config, specs: Mapping[str, ServiceSpec]) -> dict[str, Any]:
    """The validated ``[services.NAME]`` tables; an unknown service name is an error."""
    out: dict[str, Any] = {}
    for name, raw in config.services.items():
        spec = specs.get(name)
        where = describe_setting(config, f"services.{name}")
        if spec is None:
            raise ConfigError(f"{where}: unknown service {name!r}; installed: {sorted(specs)}")
        if spec.settings is None:
            raise ConfigError(f"{where}: service {name!r} takes no settings")
        out[name] = _convert(raw, spec.settings, where=describe_setting(config), prefix=f"services.{name}")
    return out


def enabled_transports(config: Config, installed: Mapping[str, TransportSpec]) -> list[str]:
    """The transports to serve: the configured ones (each must be installed) or all installed."""
    names = config.server.transports
    if names is None:
        return sorted(name for name, spec in installed.items() if spec.server is not None)
    if not names:
        served = sorted(name for name, spec in installed.items() if spec.server is not None)
        raise ConfigError(
            f"{describe_setting(config, 'server.transports')}: an empty list serves nothing; name at least one of "
            f"{served} (or leave the setting out to serve every installed transport)"
        )
    for name in names:
        if name not in installed:
            raise ConfigError(
                f"{describe_setting(config, 'server.transports')}: unknown transport {name!r}; "
                f"installed: {sorted(installed)}"
            )
    return list(names)
