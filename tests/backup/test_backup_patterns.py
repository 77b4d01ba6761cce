"""Exclude patterns: the contract's normalisation of ``**`` (the upstream vectors), the refused
patterns, git paths as literal patterns, and the compressor-missing message of mksquashfs."""

from __future__ import annotations

import pytest

from sandbox_services.backup.patterns import expand, literal, pattern_error
from sandbox_services.backup.service import unsupported_compressor

ACCEPTED = [
    ("node_modules", ["node_modules", "... node_modules"]),
    ("node_modules/", ["node_modules", "... node_modules"]),
    ("dist", ["dist", "... dist"]),
    ("dist/", ["dist", "... dist"]),
    ("**/dist", ["dist", "... dist"]),
    ("**/dist/", ["dist", "... dist"]),
    ("**/dist/**", ["dist", "... dist"]),
    ("**/**/cache", ["cache", "... cache"]),
    ("dist/**", ["dist"]),
    ("foo/**/", ["foo"]),
    ("a/b/**/", ["a/b"]),
    ("**/x/**/", ["x", "... x"]),
    ("packages/app/**", ["packages/app"]),
    ("alpha/beta/", ["alpha/beta"]),
    ("a/b", ["a/b"]),
    (".cache/foo/*/node_modules", [".cache/foo/*/node_modules"]),
    ("nested/path/", ["nested/path"]),
    ("*/*", ["*/*"]),
    ("a/*", ["a/*"]),
    ("?", ["?", "... ?"]),
    ("?*?", ["?*?", "... ?*?"]),
    ("*.log", ["*.log", "... *.log"]),
    ("logs/**.log", ["logs/**.log"]),
    ("foo**/bar", ["foo**/bar"]),
    ("...foo", ["...foo", "... ...foo"]),
]

REFUSED = [
    "", "**", "**/", "*", "*/", "***", "***/", "*?", "?*", "*?*", "**?**", "**/***", "***/**", "**/*?/**",
    "**/*", "**/*/", "*/**", "**/*/**", "/", "/absolute", "./relative", "../parent", "nested/./path",
    "nested/../path", "nested//path", "dist//", "**/dist//", "a//b", " leading", "trailing ", "... cache",
    "line\nbreak", "delete\x7fme", "nul\x00", "**/nested/path", "**/a/b", "**/a/b/", "**/packages/app/**",
    "nested/**/path", "a/**/b", "foo/**/**", "x" * 4097,
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "lines"), ACCEPTED)
def test_backup_pattern_accepted(pattern: str, lines: list[str]) -> None:
    assert pattern_error(pattern) is None
    assert expand(pattern) == lines


@pytest.mark.parametrize("pattern", REFUSED)
def test_backup_pattern_refused(pattern: str) -> None:
    reason = pattern_error(pattern)
    assert reason
    with pytest.raises(ValueError) as info:
        expand(pattern)
    assert str(info.value) == reason


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("build/", "build"),
        ("src/a.o", "src/a.o"),
        ("we*ird?[x].txt", "we\\*ird\\?\\[x\\].txt"),
        ("back\\slash", "back\\\\slash"),
        ("with space", "with space"),
        ("ünï", "ünï"),
        ("new\nline", None),
        (" edge", None),
        ("... sticky", None),
        ("", None),
    ],
)
def test_backup_git_path_as_literal(path: str, line: str | None) -> None:
    assert literal(path) == line


def test_backup_unsupported_compressor_message() -> None:
    # what mksquashfs 4.5 writes when it was built without a compressor
    output = (
        'mksquashfs: Compressor "zstd" is not supported!\nmksquashfs: Compressors available:\n'
        "\tgzip (default)\n\tlzo\n\tlz4\n\txz\n"
    )
    assert unsupported_compressor(output) == ("zstd", ["gzip", "lzo", "lz4", "xz"])
    assert unsupported_compressor("FATAL ERROR: something else") is None
