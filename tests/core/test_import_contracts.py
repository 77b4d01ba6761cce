"""The import contracts in the root pyproject.toml hold, cover every installed transport, and
a violation of each one fails ``lint-imports`` (so CI fails on it)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def settings() -> dict[str, object]:
    return dict(tomllib.loads(CONFIG.read_text())["tool"]["importlinter"])


def contracts() -> dict[str, dict[str, object]]:
    return {c["id"]: c for c in settings()["contracts"]}  # type: ignore[attr-defined]


def lint_imports(pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=pythonpath or ROOT,
        timeout=120,
    )


def transport_packages() -> list[str]:
    """The top-level package of every installed transport plugin (entry points of ``sandbox``)."""
    found = set()
    for ep in entry_points(group="sandbox"):
        package = ep.value.split(".")[0]
        if package.startswith("sandbox_transport_"):
            found.add(package)
    return sorted(found)


def test_the_code_base_keeps_every_contract() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_installed_transport_is_covered() -> None:
    roots = settings()["root_packages"]
    c = contracts()
    transports = transport_packages()
    assert "sandbox_transport_http" in transports
    for package in transports:
        assert package in roots  # type: ignore[operator]
        assert package in c["core-is-the-bottom"]["forbidden_modules"]  # type: ignore[operator]
        assert package in c["services-know-no-transport"]["forbidden_modules"]  # type: ignore[operator]
        own = [x for x in c.values() if x["type"] == "forbidden" and package in x["source_modules"]]  # type: ignore[operator]
        assert own, f"no contract limits what {package} imports"
        assert "sandbox_services" in own[0]["forbidden_modules"]  # type: ignore[operator]
        # transports do not import each other: all of them are in the independence contract
        assert package in c["transports-are-independent"]["modules"]  # type: ignore[operator]
    if "sandbox_transport_rpc" in transports:
        assert any(x.get("source_modules") == ["capnweb"] for x in c.values())


#: A tree with the same package names as ours, and one import that breaks one contract.
VIOLATIONS = {
    "core-is-the-bottom": ("sandbox_core/bad.py", "import sandbox_services.thing\n"),
    "mechanism-knows-no-contract": ("sandbox_core/router/bad.py", "from sandbox_core.contract import routes\n"),
    "services-know-no-transport": ("sandbox_services/bad.py", "from sandbox_transport_http import thing\n"),
    "transports-reach-services-through-the-registry": (
        "sandbox_transport_http/bad.py",
        "import sandbox_services.thing\n",
    ),
    "transports-are-independent": ("sandbox_transport_ws/bad.py", "import sandbox_transport_http.thing\n"),
    "capnweb-engine-knows-no-sandbox": ("capnweb/bad.py", "import sandbox_core.thing\n"),
}


def contract_modules() -> set[str]:
    """Every module some contract names (they must exist in the stand-in tree too)."""
    names: set[str] = set()
    for contract in contracts().values():
        for key in ("source_modules", "forbidden_modules", "modules"):
            names.update(contract.get(key, ()))  # type: ignore[call-overload]
    return names


def stand_in_tree(root: Path) -> None:
    """Our package names, each with an empty ``thing`` module, plus every module a contract names
    (a package for the source of a contract, so a violation can be planted inside it)."""
    for package in settings()["root_packages"]:  # type: ignore[attr-defined]
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        (root / package / "thing.py").write_text("")
    sources = {m for c in contracts().values() for m in c.get("source_modules", ())}  # type: ignore[attr-defined]
    for module in sorted(contract_modules()):
        parts = module.split(".")
        if len(parts) == 1:
            continue
        folder = root.joinpath(*parts[:-1])
        for depth in range(2, len(parts)):  # intermediate packages (sandbox_core.testing)
            package = root.joinpath(*parts[:depth])
            package.mkdir(exist_ok=True)
            (package / "__init__.py").touch()
        if module in sources:
            (folder / parts[-1]).mkdir(exist_ok=True)
            (folder / parts[-1] / "__init__.py").write_text("")
        else:
            (folder / f"{parts[-1]}.py").write_text("")


def test_each_contract_has_a_violation_case() -> None:
    assert set(VIOLATIONS) == set(contracts())


@pytest.mark.parametrize("contract_id", sorted(VIOLATIONS))
def test_a_violation_fails_the_check(tmp_path: Path, contract_id: str) -> None:
    stand_in_tree(tmp_path)
    clean = lint_imports(str(tmp_path))
    assert clean.returncode == 0, clean.stdout + clean.stderr  # the stand-in tree alone keeps every contract
    path, line = VIOLATIONS[contract_id]
    (tmp_path / path).write_text(line)
    broken = lint_imports(str(tmp_path))
    assert broken.returncode != 0
    name = contracts()[contract_id]["name"]
    assert f"{name} BROKEN" in " ".join(broken.stdout.split())
    assert "1 broken" in broken.stdout


def test_the_mechanism_contract_names_every_module_of_the_mechanism() -> None:
    """A new module of sandbox_core is mechanism unless it is part of the contract: the
    contract that keeps the mechanism from the contract must name it."""
    import sandbox_core

    root = Path(sandbox_core.__file__).parent
    listed = set(contracts()["mechanism-knows-no-contract"]["source_modules"])  # type: ignore[arg-type]
    outside = {"sandbox_core", "sandbox_core.testing", "sandbox_core.testing.plugin"}
    for path in root.rglob("*.py"):
        parts = ("sandbox_core", *path.relative_to(root).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module.startswith("sandbox_core.contract") or module in outside:
            continue
        assert module in listed, f"{module} is in neither the contract nor the mechanism's import contract"
