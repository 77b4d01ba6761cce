"""The watch filters' globs: the contract's semantics (upstream's ``(^|/)glob(/|$)`` regex),
matched without backtracking, and the patterns refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_core.errors import SandboxError
from sandbox_services.watch.globs import Glob, PathFilter, check_patterns


def reference(pattern: str, path: str) -> bool:
    """Upstream's translation of a glob to a regex, searched in the path."""
    regex = re.escape(pattern).replace(r"\*\*", "\x00").replace(r"\*", "[^/]*").replace("\x00", ".*")
    regex = regex.replace(r"\?", "[^/]")
    return re.search(f"(^|/){regex}(/|$)", path) is not None


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("node_modules", "node_modules/pkg/index.js", True),
        ("node_modules", "a/node_modules", True),
        ("node_modules", "my_node_modules", False),
        (".git", "sub/.git/HEAD", True),
        (".git", "x.git", False),
        ("*.ts", "src/deep/a.ts", True),
        ("*.ts", "a.tsx", False),
        ("src/**", "src/a/b/c", True),
        ("src/**", "lib/src", False),
        ("src/*/x", "src/a/x", True),
        ("src/*/x", "src/a/b/x", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("**", "anything/at/all", True),
        ("a.b", "aXb", False),  # "." is literal
        ("a+b", "a+b", True),
    ],
)
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert Glob(pattern).matches(path) is expected
    assert reference(pattern, path) is expected


@settings(max_examples=500, deadline=None)
@given(st.text("ab/*?.", min_size=1, max_size=8), st.text("ab/.", max_size=10))
def test_glob_agrees_with_the_regex(pattern: str, path: str) -> None:
    assert Glob(pattern).matches(path) is reference(pattern, path)


def test_glob_has_no_catastrophic_backtracking() -> None:
    # the regex of this pattern takes exponential-ish time on such a path; the automaton is linear
    assert not Glob("**a**a**a**a**a**a**a**b").matches("a" * 4000)
    assert not Glob("*a*a*a*a*a*a*b").matches("a" * 4000)


@pytest.mark.parametrize("bad", ["*.[ch]", "{a,b}", "a]", "}", ""])
def test_refused_patterns(bad: str) -> None:
    with pytest.raises(SandboxError) as info:
        check_patterns([bad], "exclude")
    assert info.value.code == "VALIDATION_FAILED" and info.value.details["field"] == "exclude"


def test_pattern_bounds() -> None:
    with pytest.raises(SandboxError):
        check_patterns(["a"] * 65, "include")
    with pytest.raises(SandboxError):
        check_patterns(["a" * 257], "include")
    check_patterns(["a" * 256] * 64, "include")


def test_path_filter() -> None:
    exclude = PathFilter(None, [".git", "node_modules"])
    assert exclude.excluded(".git/HEAD") and not exclude.excluded("src/a.py")
    assert exclude.reported("src/a.py") and not exclude.reported("x/node_modules/y")
    include = PathFilter(["*.py"], None)
    assert not include.excluded("anything")  # include never stops a directory being watched
    assert include.reported("src/a.py") and not include.reported("src")
