"""The one error table: every code the code base can raise is in it, with status and class."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_core import errors
from sandbox_core.errors import ErrorCode, SandboxError, error_from_code, lookup

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "core" / "src", ROOT / "services" / "src", *sorted((ROOT / "plugins").glob("*/src"))]
CODE_SHAPE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
#: calls whose first argument (or ``code=``) is an error code
RAISERS = re.compile(r"(Error|Failed|NotFound|Exists|Terminated|Destroyed|Denied|TooLarge)$|^error_from_code$")


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _code_literal(node: ast.AST | None) -> Iterator[ast.Constant]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE_SHAPE.match(node.value):
        yield node
    elif isinstance(node, ast.IfExp):
        yield from _code_literal(node.body)
        yield from _code_literal(node.orelse)


def code_literals(source: str) -> Iterator[tuple[int, str]]:
    """Each string that stands where an error code goes: the code argument of an error's
    constructor, a value of a mapping, a returned value or a compared value."""
    for node in ast.walk(ast.parse(source)):
        found: list[ast.AST | None] = []
        if isinstance(node, ast.Call) and RAISERS.search(_name(node.func)):
            found += node.args[:1]
            found += [kw.value for kw in node.keywords if kw.arg == "code"]
        elif isinstance(node, ast.Dict):
            found += node.values
        elif isinstance(node, ast.Return):
            found.append(node.value)
        elif isinstance(node, ast.Compare):
            found += [node.left, *node.comparators]
        for candidate in found:
            for const in _code_literal(candidate):
                yield const.lineno, const.value


def every_code_literal() -> list[tuple[str, int, str]]:
    out = []
    for top in SOURCES:
        for path in sorted(top.rglob("*.py")):
            for line, code in code_literals(path.read_text()):
                out.append((str(path.relative_to(ROOT)), line, code))
    return out


def test_every_code_the_code_base_uses_is_in_the_table() -> None:
    found = every_code_literal()
    missing = [f"{path}:{line}: {code}" for path, line, code in found if lookup(code) is None]
    assert not missing, "codes outside sandbox_core.errors.ErrorCode:\n" + "\n".join(missing)
    # the scan sees the codes it must see (were it blind, the check above would pass vacuously)
    seen = {code for _, _, code in found} | {m.value for m in ErrorCode if _used_as_member(m)}
    for code in ("FILE_NOT_FOUND", "NO_SPACE", "GIT_CLONE_FAILED", "SESSION_DESTROYED", "PROCESS_NOT_FOUND"):
        assert code in seen


def _used_as_member(member: ErrorCode) -> bool:
    needle = f"ErrorCode.{member.name}"
    table = Path(errors.__file__).resolve()
    return any(needle in path.read_text() for top in SOURCES for path in top.rglob("*.py") if path.resolve() != table)


@pytest.mark.parametrize(
    "source",
    [
        'raise SandboxError("NOT_A_REAL_CODE", "x")',
        'raise FileSystemError(code="NOT_A_REAL_CODE")',
        'TABLE = {1: "NOT_A_REAL_CODE"}',
        'def f():\n    return "NOT_A_REAL_CODE" if x else "FILE_NOT_FOUND"',
        'if err.code == "NOT_A_REAL_CODE": pass',
    ],
)
def test_the_scan_catches_a_code_the_table_lacks(source: str) -> None:
    assert [code for _, code in code_literals(source) if lookup(code) is None] == ["NOT_A_REAL_CODE"]


def test_environment_names_are_not_mistaken_for_codes() -> None:
    source = 'os.environ.get("SANDBOX_VERSION")\nenv = {"GIT_TERMINAL_PROMPT": "0"}\n'
    assert list(code_literals(source)) == []


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("FILE_NOT_FOUND", 404),
        ("VALIDATION_FAILED", 400),
        ("GIT_AUTH_FAILED", 401),
        ("PERMISSION_DENIED", 403),
        ("PROCESS_READY_TIMEOUT", 408),
        ("SESSION_ALREADY_EXISTS", 409),
        ("SESSION_TERMINATED", 410),
        ("FILE_TOO_LARGE", 413),
        ("PYTHON_NOT_AVAILABLE", 501),
        ("GIT_NETWORK_ERROR", 502),
        ("INTERPRETER_NOT_READY", 503),
        ("NO_SPACE", 500),
        ("GIT_CLONE_FAILED", 500),
        ("FILESYSTEM_ERROR", 500),
    ],
)
def test_status_of_each_family(code: str, status: int) -> None:
    assert ErrorCode(code).status == status
    assert SandboxError(code, "m").status == status
    assert SandboxError(code, "m").to_body()["httpStatus"] == status


@pytest.mark.parametrize(
    ("code", "cls", "family"),
    [
        ("FILE_EXISTS", errors.FileExists, errors.FileSystemError),
        ("FILE_TOO_LARGE", errors.FileTooLarge, errors.FileSystemError),
        ("PERMISSION_DENIED", errors.PermissionDenied, errors.FileSystemError),
        ("FILE_NOT_FOUND", errors.FileNotFound, errors.FileSystemError),
        ("NO_SPACE", errors.FileSystemError, errors.SandboxError),
        ("COMMAND_NOT_FOUND", errors.CommandNotFound, errors.CommandError),
        ("PROCESS_NOT_FOUND", errors.ProcessNotFound, errors.ProcessError),
        ("GIT_BRANCH_NOT_FOUND", errors.GitBranchNotFound, errors.GitError),
        ("INVALID_PORT_NUMBER", errors.InvalidPort, errors.PortError),
        ("RPC_TRANSPORT_ERROR", errors.TransportError, errors.SandboxError),
    ],
)
def test_client_exception_classes_come_from_the_table(
    code: str, cls: type[SandboxError], family: type[SandboxError]
) -> None:
    exc = error_from_code(code, "message", {"path": "/x"}, status=418)
    assert type(exc) is cls and isinstance(exc, family)
    assert (exc.code, exc.message, exc.details, exc.status) == (code, "message", {"path": "/x"}, 418)


def test_every_class_in_the_table_defaults_to_a_code_of_its_own_family() -> None:
    for member in ErrorCode:
        cls = member.error_class
        assert issubclass(cls, SandboxError)
        default = ErrorCode(cls.default_code)  # a class's default code is in the table too
        assert issubclass(default.error_class, cls) or default.error_class is cls


def test_a_code_outside_the_table_is_carried_as_500() -> None:
    exc = error_from_code("SOMETHING_NEW", "from a newer server")
    assert type(exc) is SandboxError and exc.code == "SOMETHING_NEW" and exc.status == 500
    assert "suggestion" not in exc.to_body()


def test_suggestions_reach_the_body() -> None:
    body = SandboxError(ErrorCode.FILE_NOT_FOUND, "File not found: /x", {"path": "/x"}).to_body()
    assert body["suggestion"] == ErrorCode.FILE_NOT_FOUND.suggestion != ""
    assert body["code"] == "FILE_NOT_FOUND" and type(body["code"]) is str
