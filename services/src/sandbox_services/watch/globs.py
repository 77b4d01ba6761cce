"""The watch filters' globs: ``*``, ``**``, ``?`` and ``/`` (contract section a9), sans-IO.

A pattern matches a path (relative to the watched directory) when it matches a run of whole
path components: it may start at the beginning or after any ``/`` and must end at the end or
before a ``/`` (upstream's ``(^|/)glob(/|$)``). So ``node_modules`` matches
``node_modules/x/y.js`` and ``a/node_modules``; ``*.ts`` matches ``src/a.ts``; ``src/**``
matches everything under ``src``. ``*`` and ``?`` never cross a ``/``; ``**`` does.

Matching is a simulation of the pattern's automaton over the path (time ``O(len(path) *
len(pattern))``, no backtracking), so no pattern can stall the server the way a regex such as
``.*a.*a.*a.*b`` can.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandbox_core.errors import validation_error

#: The characters the contract refuses in a pattern (400).
FORBIDDEN = frozenset("[]{}")
MAX_PATTERNS = 64
MAX_PATTERN_CHARS = 256

_STAR = "\x00*"  # one path component's worth of any characters (never a "/")
_GLOBSTAR = "\x00**"  # any characters, "/" included
_ANY = "\x00?"  # one character that is not "/"


def _tokens(pattern: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                out.append(_GLOBSTAR)
                i += 2
                while i < len(pattern) and pattern[i] == "*":  # "***" is "**"
                    i += 1
                continue
            out.append(_STAR)
        elif c == "?":
            out.append(_ANY)
        else:
            out.append(c)
        i += 1
    return tuple(out)


class Glob:
    """One compiled pattern."""

    __slots__ = ("_final", "_tokens", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._tokens = _tokens(pattern)
        self._final = len(self._tokens)

    def _close(self, states: set[int]) -> set[int]:
        """Add the states reachable without input (a star may match nothing)."""
        todo = list(states)
        while todo:
            k = todo.pop()
            if k < self._final and self._tokens[k] in (_STAR, _GLOBSTAR) and k + 1 not in states:
                states.add(k + 1)
                todo.append(k + 1)
        return states

    def matches(self, path: str) -> bool:
        tokens, final = self._tokens, self._final
        start = self._close({0})
        states: set[int] = set()
        n = len(path)
        for i in range(n + 1):
            if i == 0 or path[i - 1] == "/":
                states |= start
            if final in states and (i == n or path[i] == "/"):
                return True
            if i == n or not states:
                if i == n:
                    break
                continue
            c = path[i]
            nxt: set[int] = set()
            for k in states:
                if k == final:
                    continue
                t = tokens[k]
                if t == _GLOBSTAR or (t == _STAR and c != "/"):
                    nxt.add(k)
                elif (t == _ANY and c != "/") or t == c:
                    nxt.add(k + 1)
            states = self._close(nxt) if nxt else nxt
        return False

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"


def check_patterns(patterns: Sequence[str], field: str) -> None:
    """400 ``VALIDATION_FAILED`` naming ``field`` for a pattern the contract refuses."""
    if len(patterns) > MAX_PATTERNS:
        raise validation_error(f"{field} has {len(patterns)} patterns: at most {MAX_PATTERNS}", field)
    for pattern in patterns:
        if not pattern:
            raise validation_error(f"{field} must not contain an empty pattern", field)
        if len(pattern) > MAX_PATTERN_CHARS:
            raise validation_error(
                f"{field} pattern is longer than {MAX_PATTERN_CHARS} characters ({len(pattern)})", field
            )
        bad = sorted(set(pattern) & FORBIDDEN)
        if bad:
            raise validation_error(
                f"{field} pattern {pattern!r} uses {' '.join(bad)}: only *, **, ? and / are supported",
                field,
                pattern=pattern,
            )
        if "\x00" in pattern:
            raise validation_error(f"{field} pattern must not contain NUL", field)


class PathFilter:
    """include XOR exclude, over paths relative to the watched directory."""

    __slots__ = ("exclude", "include")

    def __init__(self, include: Sequence[str] | None, exclude: Sequence[str] | None) -> None:
        self.include = tuple(Glob(p) for p in include) if include else None
        self.exclude = tuple(Glob(p) for p in exclude or ())

    def excluded(self, rel: str) -> bool:
        """Whether ``rel`` (a file or directory) is excluded: never reported, never watched."""
        return any(g.matches(rel) for g in self.exclude)

    def reported(self, rel: str) -> bool:
        """Whether an event on ``rel`` reaches the subscribers."""
        if self.include is not None:
            return any(g.matches(rel) for g in self.include)
        return not self.excluded(rel)
