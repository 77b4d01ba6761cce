"""Config: defaults, file lookup, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox_core.config import ConfigError, enabled_transports, load_config, transport_settings
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
    assert (config.client.url, config.client.transport) == ("http://127.0.0.1:3000", "http")
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
        ("[server]\nprot = 1\n", "prot"),
        ("[server]\nport = 'x'\n", "port"),
        ("[server]\nport = 70000\n", "port"),
        ("[sever]\n", "sever"),
        ("[client]\ntimeout = -1\n", "timeout"),
        ("not toml [", "TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert needle in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_unknown_transport_and_bad_transport_setting(tmp_path: Path) -> None:
    installed = Hooks(make_plugin_manager()).transports()
    config = load_config(write(tmp_path, '[server]\ntransports = ["http", "carrier-pigeon"]\n'))
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        enabled_transports(config, installed)
    config = load_config(write(tmp_path, "[transports.http]\nmax_body_bytes = 'big'\nbogus = 1\n"))
    with pytest.raises(ConfigError, match=r"transports\.http"):
        transport_settings(config, installed["http"])


def test_default_transports_are_every_installed_one(tmp_path: Path) -> None:
    installed = Hooks(make_plugin_manager()).transports()
    config = load_config(write(tmp_path, ""))
    assert enabled_transports(config, installed) == sorted(installed)
