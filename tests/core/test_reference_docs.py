"""docs/reference.md is what docs/generate_reference.py makes of the route and error tables now:
a route or an error code added, removed or changed without regenerating the page fails here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from sandbox_core.contract.routes import ROUTES
from sandbox_core.errors import ErrorCode

DOCS = Path(__file__).resolve().parents[2] / "docs"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_reference", DOCS / "generate_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_page_is_up_to_date() -> None:
    gen = generator()
    committed = (DOCS / "reference.md").read_text() if (DOCS / "reference.md").is_file() else ""
    assert committed == gen.render(), f"docs/reference.md is out of date: run `{gen.COMMAND}`"


def test_page_has_every_route_and_every_code() -> None:
    page = generator().render()
    for route in ROUTES:
        assert f"| {route.method} | `{route.path}` | `{route.service}.{route.operation}` |" in page
    for code in ErrorCode:
        assert f"| `{code.value}` | {code.status} | `{code.error_class.__name__}`" in page


def test_check_mode_fails_on_a_stale_page(tmp_path: Path) -> None:
    script = tmp_path / "generate_reference.py"
    script.write_text((DOCS / "generate_reference.py").read_text())
    (tmp_path / "reference.md").write_text("stale\n")
    check = [sys.executable, str(script), "--check"]
    stale = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and "run `python3 docs/generate_reference.py`" in stale.stderr
    subprocess.run([sys.executable, str(script)], check=True, timeout=60)  # rewrites the copy's page
    assert subprocess.run(check, capture_output=True, text=True, timeout=60).returncode == 0
