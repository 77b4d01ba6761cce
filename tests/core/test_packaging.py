"""Packaging metadata: one license for every distribution, typed packages, descriptions that say
what each distribution holds, and CI installing the built wheels (``.ci/wheels``)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import sandbox_services.plugin
from sandbox_core.plugins import Hooks, make_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
#: every distribution folder: core, services, each transport plugin, each test-only plugin
DISTRIBUTIONS = sorted(
    path.parent for pattern in ("*", "plugins/*", "tests/plugins/*") for path in ROOT.glob(f"{pattern}/pyproject.toml")
)


def project(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((folder / "pyproject.toml").read_text())
    return data


def test_the_distributions_are_found() -> None:
    names = {project(folder)["project"]["name"] for folder in DISTRIBUTIONS}
    assert {"sandbox-core", "sandbox-services", "sandbox-transport-http", "sandbox-test-greeter"} <= names


def test_license_file_is_the_apache_license() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("folder", DISTRIBUTIONS, ids=lambda folder: str(folder.relative_to(ROOT)))
def test_every_distribution_declares_the_license_and_ships_py_typed(folder: Path) -> None:
    data = project(folder)
    assert data["project"]["license"] == "Apache-2.0"
    # an SPDX `license` string needs setuptools 77 (PEP 639)
    assert "setuptools>=77" in data["build-system"]["requires"]
    assert "Typing :: Typed" in data["project"]["classifiers"]
    for package, files in data["tool"]["setuptools"]["package-data"].items():
        assert "py.typed" in files
        assert (folder / "src" / package / "py.typed").is_file()


def test_services_description_names_every_service() -> None:
    pm = make_plugin_manager(load_entry_points=False, plugins=[("services", sandbox_services.plugin)])
    description = project(ROOT / "services")["project"]["description"]
    for name in Hooks(pm).services():
        assert name in description, f"sandbox-services' description does not mention {name!r}"


def test_ci_runs_the_readme_commands_in_a_fresh_venv() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert 'python3 -m venv "$venv"' in run and 'source "$venv/bin/activate"' in run
    assert run.index('source "$venv/bin/activate"') < run.index('bash -c "$serve_cmd"') < run.index("pip install")


def test_ci_installs_the_wheels_before_the_tests() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert ".ci/wheels" in run and run.index(".ci/wheels") < run.index('bash -c "$test_cmd"')
    assert (ROOT / ".ci" / "wheels").stat().st_mode & 0o111  # executable


def test_ci_builds_and_runs_the_image_after_the_tests() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert ".ci/container" in run and run.index('bash -c "$test_cmd"') < run.rindex(".ci/container")
    assert (ROOT / ".ci" / "container").stat().st_mode & 0o111  # executable


def test_the_image_defaults() -> None:
    """The Containerfile: a base any engine resolves (no registry host named), never root, the
    server as PID 1 behind the entry point, SIGTERM to stop, the readiness route as health."""
    text = (ROOT / "Containerfile").read_text()
    assert "ARG BASE=debian:bookworm-slim\n" in text
    assert "\nUSER 1000:1000\n" in text and "\nSTOPSIGNAL SIGTERM\n" in text
    assert "/api/ready" in text.split("HEALTHCHECK", 1)[1].split("ENTRYPOINT", 1)[0]
    cmd = text.split("\nCMD ", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    assert " ".join(cmd.split()) == (
        '["/opt/sandbox/bin/sandbox", "serve", "--host", "0.0.0.0", "--port", "3000", '
        '"--transport", "http", "--transport", "ws", "--transport", "rpc"]'
    )
    entrypoint = (ROOT / "deploy" / "container" / "entrypoint").read_text()
    assert entrypoint.rstrip().endswith('exec "$@"')


def test_the_pytest_plugin_is_opt_in(tmp_path: Path) -> None:
    """Installing sandbox-core changes no other project's tests: its fixtures (and its
    ``anyio_backend``) arrive only with ``-p sandbox_core.testing.plugin``."""
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")

    def fixtures(*args: str) -> str:
        cmd = [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", *args]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert "sandbox_server_factory" not in fixtures()
    assert "sandbox_server_factory" in fixtures("-p", "sandbox_core.testing.plugin")
