"""The engine's modules keep to their own private members: a module reads or sets an
underscore-named attribute of another object only when that name is its own (a member of a class
it defines), and imports no underscore-named name from another module. What one module needs of
another is that module's public (or documented package-internal) interface."""

from __future__ import annotations

import ast
from pathlib import Path

import capnweb as capnweb

PACKAGE = Path(capnweb.__file__).parent


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(tree: ast.Module) -> set[str]:
    """The underscore names the module defines: methods and class attributes of its classes,
    ``__slots__`` entries and attributes it sets on ``self``/``cls``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    for target in item.targets:
                        if isinstance(target, ast.Name):
                            names.add(target.id)
                            if target.id == "__slots__" and isinstance(item.value, (ast.Tuple, ast.List)):
                                names.update(
                                    e.value
                                    for e in item.value.elts
                                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                                )
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
    return names


def _foreign_private_uses(source: str, name: str) -> list[str]:
    tree = ast.parse(source, name)
    own = _own_names(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr not in own:
                found.append(f"{name}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.extend(f"{name}:{node.lineno}: import {a.name}" for a in node.names if _private(a.name))
    return found


def test_no_module_reaches_into_another_modules_private_members() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) > 5  # the engine's modules were found
    found = [use for module in modules for use in _foreign_private_uses(module.read_text(), module.name)]
    assert found == []


def test_the_check_sees_a_foreign_private_member() -> None:
    """The check itself: its own members a module may use; another's it may not."""
    source = (
        "from .streams import _Rejection\n"
        "class A:\n"
        "    __slots__ = ('_slot',)\n"
        "    def _own(self, other: 'A') -> None:\n"
        "        self._set = 1\n"
        "        other._own(other); other._slot; other._set\n"
        "def f(session):\n"
        "    return session._done(1)\n"
    )
    assert _foreign_private_uses(source, "sample.py") == ["sample.py:1: import _Rejection", "sample.py:8: ._done"]
