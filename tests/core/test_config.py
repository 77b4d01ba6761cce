"""Config: defaults, file lookup, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox_core.config import ConfigError, enabled_transports, load_config, service_settings, transport_settings
from sandbox_core.plugins import Hooks, make_plugin_manager


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sandbox.toml"
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SANDBOX_CONFIG", raising=False)
    monkeypatch.delenv("SANDBOX_TRANSPORT", raising=False)
    config = load_config()
    assert (config.server.host, config.server.port, config.server.transports) == ("127.0.0.1", 3000, None)
    assert (config.client.url, config.client.transport) == ("http://127.0.0.1:3000", None)
    assert config.source is None


def test_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "[server]\nport = 1111\n")
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 2222\n")
    monkeypatch.delenv("SANDBOX_CONFIG", raising=False)
    assert load_config().server.port == 1111
    monkeypatch.setenv("SANDBOX_CONFIG", str(other))
    assert load_config().server.port == 2222
    assert load_config(tmp_path / "sandbox.toml").server.port == 1111


def test_transport_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[client]\ntransport = "http"\nurl = "http://127.0.0.1:9"\n')
    monkeypatch.setenv("SANDBOX_TRANSPORT", "rpc")
    assert load_config(path).client.transport == "rpc"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[server]\nprot = 1\n", "unknown key 'server.prot'"),  # the full path, not only `prot`
        ("[server]\nport = 'x'\n", "server.port: Expected `int`, got `str`"),
        ("[server]\nport = 70000\n", "server.port: Expected `int` <= 65535, got 70000"),
        ("[sever]\n", "unknown key 'sever'"),
        ("[client]\ntimeout = -1\n", "client.timeout: Expected `float` > 0.0, got -1"),
        ("[server]\ntransports = ['http', 1]\n", "server.transports[1]"),
        ("[server]\nlog_level = 'verbose'\n", "server.log_level: Invalid enum value 'verbose'"),
        ("[transports]\nhttp = 5\n", "transports.http: expected a table, got 5"),
        ("[services]\nsessions = 'x'\n", "services.sessions: expected a table"),
        ("origins = {}\n", "unknown key 'origins'"),
        ("[server]\nmax_body_bytes_total = 0\n", "server.max_body_bytes_total: Expected `int` >= 1, got 0"),
        ("[server]\nbody_timeout = 0\n", "server.body_timeout: Expected `float` > 0.0"),
        ("[server]\nbody_wait_timeout = -1\n", "server.body_wait_timeout: Expected `float` >= 0.0, got -1"),
        ("not toml [", "TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert needle in str(info.value)
    assert str(path) in str(info.value)  # and the file


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "critical"])
def test_every_log_level_the_logger_knows_is_accepted(tmp_path: Path, level: str) -> None:
    assert load_config(write(tmp_path, f"[server]\nlog_level = '{level}'\n"), env={}).server.log_level == level


def test_log_level_error_lists_the_levels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="one of: debug, info, warning, error, critical"):
        load_config(write(tmp_path, "[server]\nlog_level = 'verbose'\n"), env={})


def test_overrides_win_over_environment_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 1111\nhost = "0.0.0.0"\n[client]\ntransport = "file"\nurl = "http://f"\n')
    config = load_config(
        path,
        env={"SANDBOX_TRANSPORT": "env", "SANDBOX_URL": "http://e"},
        overrides={"server.port": ("--port", 2222), "client.url": ("--url", "http://flag")},
    )
    assert (config.server.port, config.server.host) == (2222, "0.0.0.0")
    assert (config.client.transport, config.client.url) == ("env", "http://flag")
    assert config.origins == {"client.transport": "SANDBOX_TRANSPORT", "client.url": "--url", "server.port": "--port"}


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("server.port", 70000, "server.port (from --flag): Expected `int` <= 65535, got 70000"),
        ("server.port", -1, "server.port (from --flag): Expected `int` >= 0, got -1"),
        ("server.log_level", "verbose", "server.log_level (from --flag): Invalid enum value 'verbose'"),
        ("server.transports", ["http", 3], "server.transports[1]"),
    ],
)
def test_overrides_get_the_same_validation_as_the_file(tmp_path: Path, key: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""), env={}, overrides={key: ("--flag", value)})
    assert needle in str(info.value)


def test_environment_override_is_validated_and_recorded(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={"SANDBOX_TRANSPORT": "rpc"})
    assert config.origins == {"client.transport": "SANDBOX_TRANSPORT"}
    assert load_config(write(tmp_path, ""), env={}).origins == {}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_unknown_transport_and_bad_transport_setting(tmp_path: Path) -> None:
    installed = Hooks(make_plugin_manager()).transports()
    config = load_config(write(tmp_path, '[server]\ntransports = ["http", "carrier-pigeon"]\n'))
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        enabled_transports(config, installed)
    config = load_config(write(tmp_path, "[transports.http]\nmax_body_bytes = 'big'\n"))
    with pytest.raises(ConfigError, match=r"transports\.http\.max_body_bytes: Expected `int`, got `str`"):
        transport_settings(config, installed["http"])
    config = load_config(write(tmp_path, "[transports.http]\nbogus = 1\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'transports\.http\.bogus'"):
        transport_settings(config, installed["http"])


def test_unknown_transport_from_a_flag_names_the_flag(tmp_path: Path) -> None:
    installed = Hooks(make_plugin_manager()).transports()
    config = load_config(write(tmp_path, ""), env={}, overrides={"server.transports": ("--transport", ["pigeon"])})
    with pytest.raises(ConfigError, match=r"server\.transports \(from --transport\): unknown transport 'pigeon'"):
        enabled_transports(config, installed)


def test_bad_service_setting_names_the_full_path(tmp_path: Path) -> None:
    specs = Hooks(make_plugin_manager()).services()
    config = load_config(write(tmp_path, "[services.sessions]\nkill_grace_ms = 'soon'\n"))
    with pytest.raises(ConfigError, match=r"services\.sessions\.kill_grace_ms: Expected `int`, got `str`"):
        service_settings(config, specs)
    config = load_config(write(tmp_path, "[services.sessions]\nkil_grace_ms = 1\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'services\.sessions\.kil_grace_ms'"):
        service_settings(config, specs)
    config = load_config(write(tmp_path, "[services.nope]\na = 1\n"))
    with pytest.raises(ConfigError, match=r"services\.nope: unknown service 'nope'"):
        service_settings(config, specs)


def test_default_transports_are_every_installed_one(tmp_path: Path) -> None:
    installed = Hooks(make_plugin_manager()).transports()
    config = load_config(write(tmp_path, ""))
    assert enabled_transports(config, installed) == sorted(installed)


@pytest.mark.parametrize(
    ("value", "allowed"), [("1", True), ("true", True), ("YES", True), ("0", False), ("no", False)]
)
def test_allow_unauthenticated_from_the_environment(tmp_path: Path, value: str, allowed: bool) -> None:
    config = load_config(
        write(tmp_path, "[server]\nallow_unauthenticated = true\n" if not allowed else ""),
        env={"SANDBOX_ALLOW_UNAUTHENTICATED": value},
    )
    assert config.server.allow_unauthenticated is allowed
    assert config.origins == {"server.allow_unauthenticated": "SANDBOX_ALLOW_UNAUTHENTICATED"}


def test_allow_unauthenticated_from_the_environment_is_validated(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"server.allow_unauthenticated \(from SANDBOX_ALLOW_UNAUTHENTICATED\).*'maybe'"
    ):
        load_config(write(tmp_path, ""), env={"SANDBOX_ALLOW_UNAUTHENTICATED": "maybe"})
    assert load_config(write(tmp_path, ""), env={"SANDBOX_ALLOW_UNAUTHENTICATED": ""}).origins == {}
