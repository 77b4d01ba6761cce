"""Exclude patterns for ``mksquashfs -wildcards -ef FILE`` (contract section a8).

A user's pattern is gitignore-like; mksquashfs has no ``**``, so the globstars are normalised
away as the contract says: ``**/x``, ``x/`` and a single-component ``x`` match ``x`` at any depth
(two lines: ``x`` and mksquashfs's non-anchored ``... x``), ``x/**`` is ``x`` itself, and a
multi-component pattern is anchored at the backup's root. Patterns that could not be written
to a line-based exclude file, that would exclude the whole backup, or that mksquashfs cannot
express (a ``**`` left between components) are refused with the reason, before anything runs.

Paths from ``git ls-files`` become literal patterns (:func:`literal`): wildcard characters are
escaped; a path that a line cannot carry (control characters, edge whitespace, a leading
``... ``) is left out of the exclusions (the file is then kept in the backup).
"""

from __future__ import annotations

import re

MAX_PATTERN_LENGTH = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WILDCARD = re.compile(r"([*?\[\]])")


def _matches_every_component(pattern: str) -> bool:
    """Whether a single-component pattern matches every (non-empty) name: stars only, or
    stars with one ``?``."""
    if "/" in pattern:
        return False
    required = pattern.replace("*", "")
    return required == "" or (required == "?" and "*" in pattern)


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` is refused, or None when it is a valid exclude pattern."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"patterns must be at most {MAX_PATTERN_LENGTH} characters"
    if _CONTROL.search(pattern):
        return "patterns must not contain control characters"
    if pattern.strip() != pattern:
        return "patterns must not have leading or trailing whitespace"
    if pattern.startswith(("/", "./", "../")):
        return "patterns must not start with '/', './', or '../'"
    if pattern.startswith("... "):
        return "patterns must not start with mksquashfs sticky syntax ('... ')"
    canonical = pattern[:-1] if pattern.endswith("/") else pattern
    if any(part in ("", ".", "..") for part in canonical.split("/")):
        return "patterns must not contain empty, '.', or '..' path components"
    remainder, leading, _ = _strip_globstars(canonical)
    if not remainder or remainder == "**":
        return "patterns must not be empty or consist only of recursive globstars"
    if _matches_every_component(remainder):
        return "patterns must not match the entire backup"
    if "**" in remainder.split("/") or (leading and "/" in remainder):
        return (
            "recursive globstars with multiple path components are not supported; use a root-relative"
            " multi-component pattern or a single-component pattern for recursive exclusion"
        )
    return None


def _strip_globstars(canonical: str) -> tuple[str, bool, bool]:
    """(the pattern without its leading ``**/`` and trailing ``/**``, whether a leading one was
    removed, whether a trailing one was)."""
    remainder = canonical
    leading = False
    while remainder.startswith("**/"):
        remainder = remainder[3:]
        leading = True
    trailing = False
    if remainder.endswith("/**"):
        remainder = remainder[:-3]
        trailing = True
    return remainder, leading, trailing


def expand(pattern: str) -> list[str]:
    """The exclude-file lines of a valid ``pattern`` (see the module doc); ValueError if invalid."""
    reason = pattern_error(pattern)
    if reason is not None:
        raise ValueError(reason)
    canonical = pattern[:-1] if pattern.endswith("/") else pattern
    remainder, leading, trailing = _strip_globstars(canonical)
    recursive = leading or (not trailing and "/" not in remainder)
    return [remainder, f"... {remainder}"] if recursive else [remainder]


def literal(path: str) -> str | None:
    """The exclude line matching exactly the relative ``path`` (wildcards escaped), or None
    when a line cannot carry it."""
    path = path.rstrip("/")  # git lists an ignored directory as "dir/"
    if not path or _CONTROL.search(path) or path.strip() != path or path.startswith("... "):
        return None
    return _WILDCARD.sub(r"\\\1", path.replace("\\", "\\\\"))
