"""sandbox_core.patching: the hash of a piece of another package's code changes with its code, not
with its comments, layout or docstrings, and the guard names the fix that depends on a change."""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path

import pytest

from sandbox_core import patching

_names = itertools.count()

ORIGINAL = '''
"""A package of someone else's."""

LIMIT = 10


class Buffer:
    """Holds bytes."""

    def pop(self, n):
        """Take n bytes."""
        data = self.data[:n]
        del self.data[:n]
        return data


def helper(x):
    return x + 1
'''


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """``source`` as an importable module of its own; its name."""
    name = f"patching_sample_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return name


def hashes(module: str) -> dict[str, str | None]:
    return {part: patching.code_hash(f"{module}:{part}") for part in ("LIMIT", "Buffer", "Buffer.pop", "helper")}


def test_the_hash_follows_the_code_not_its_comments_layout_or_docstrings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = hashes(install(tmp_path, monkeypatch, ORIGINAL))
    assert all(original.values()), original
    reworded = ORIGINAL.replace('"""Take n bytes."""', '"""Take up to n bytes (a new docstring)."""')
    reworded = reworded.replace("del self.data[:n]", "del self.data[ : n ]  # a comment")
    assert hashes(install(tmp_path, monkeypatch, reworded)) == original
    changed = hashes(install(tmp_path, monkeypatch, ORIGINAL.replace("del self.data[:n]", "self.data = b''")))
    assert changed["Buffer.pop"] != original["Buffer.pop"] and changed["Buffer"] != original["Buffer"]
    assert changed["LIMIT"] == original["LIMIT"] and changed["helper"] == original["helper"]
    raised = hashes(install(tmp_path, monkeypatch, ORIGINAL.replace("LIMIT = 10", "LIMIT = 20")))
    assert raised["LIMIT"] != original["LIMIT"]


def test_the_guard_names_the_fix_whose_code_changed_or_went(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = install(tmp_path, monkeypatch, ORIGINAL)
    expected = hashes(module)
    patched = {
        "fix_pop": {f"{module}:Buffer.pop": expected["Buffer.pop"], f"{module}:LIMIT": expected["LIMIT"]},
        "fix_helper": {f"{module}:helper": expected["helper"]},
    }
    assert patching.changed_code(patched, "ours") == []
    source = ORIGINAL.replace("def helper", "def helper2").replace("LIMIT = 10", "LIMIT = 1")
    renamed = install(tmp_path, monkeypatch, source)
    moved = {fix: {name.replace(module, renamed): h for name, h in pieces.items()} for fix, pieces in patched.items()}
    problems = patching.changed_code(moved, "ours")
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"ours.fix_pop: {renamed}:LIMIT has changed (hash ")
    assert problems[1].startswith(f"ours.fix_helper: {renamed}:helper is gone")
    assert patching.code_hash("no_such_package_here.sub:Thing") is None
    assert patching.code_hash(f"{module}:Buffer.missing") is None
