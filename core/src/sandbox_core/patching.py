"""Guards for code of ours that patches, overrides or relies on another package's internals.

Such code is written against one release of that package. Its module lists what it depends
on, fix by fix, as a hash of each piece of the other package's code (``{fix: {"module:Qualified.name":
hash}}``); a test compares the hashes with the installed package (:func:`changed_code`), so an
upgrade that changes any of it fails that test, naming the fix to review, instead of silently
losing the fix or breaking it. Standard library only: the serving process may import it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from collections.abc import Mapping

_Defs = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def code_hash(name: str) -> str | None:
    """A hash of the syntax tree of ``module:Qualified.name`` (a class, function, method, or a
    module-level ``NAME = ...``) as the installed package has it, read from its source file, so a
    patch applied in place does not hide it. It is taken of :func:`ast.unparse`'s text without
    docstrings: comments, layout and documentation do not count. None when it is absent."""
    module, _, qualname = name.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # its parent package is not installed
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as fh:
        body: list[ast.stmt] = ast.parse(fh.read()).body
    node: ast.stmt | None = None
    for part in qualname.split("."):
        node = next((candidate for candidate in body if _names(candidate) == part), None)
        if node is None:
            return None
        body = node.body if isinstance(node, _Defs) else []
    if node is None:
        return None
    _strip_docstrings(node)
    return hashlib.sha256(ast.unparse(node).encode()).hexdigest()[:16]


def _names(node: ast.stmt) -> str | None:
    """The name a statement defines: a class's, a function's, or the single target of an
    assignment (None for anything else)."""
    if isinstance(node, _Defs):
        return node.name
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    return None


def _strip_docstrings(tree: ast.AST) -> None:
    """Remove the docstring of every class and function in ``tree`` (in place)."""
    for node in ast.walk(tree):
        if not isinstance(node, _Defs):
            continue
        first = node.body[0] if node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = node.body[1:] or [ast.Pass()]


def changed_code(patched: Mapping[str, Mapping[str, str]], owner: str) -> list[str]:
    """What differs from ``patched`` (``{fix: {"module:Qualified.name": hash}}``) in the installed
    packages, one line per piece of code, naming the fix (as ``owner.fix``) that depends on it.
    Empty: every fix applies to the code it was written for."""
    problems = []
    for fix, pieces in patched.items():
        for name, expected in pieces.items():
            found = code_hash(name)
            if found != expected:
                what = "is gone" if found is None else f"has changed (hash {found}, expected {expected})"
                problems.append(f"{owner}.{fix}: {name} {what}: review {fix} against it, then update the hash")
    return problems
