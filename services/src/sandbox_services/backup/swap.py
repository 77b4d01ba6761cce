"""Putting an extracted tree in place of a directory, so that a failure leaves the old one whole.

:func:`exchange` swaps two directory entries of one filesystem in one step
(``renameat2(RENAME_EXCHANGE)``): at every moment the target is either all old or all new.
Where the filesystem has no exchange, the old directory is renamed aside and the new one
renamed in (a moment with no directory there), and the old one goes back if the second
rename fails.

A directory that cannot be renamed (a mount point, such as a volume mounted at /workspace, or
an allow-listed root itself) has its *contents* swapped instead (:func:`swap_contents`): the
old entries move into a holding directory, the new ones move in, and on a failure everything
moves back. That is entry by entry, not one step, but it never leaves a mix of old and new
behind unless the rollback itself fails (then the error says where the old entries are).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
from collections.abc import Callable

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def exchange(new: str, target: str, aside: str) -> None:
    """Put directory ``new`` at ``target``, whose old tree ends up at ``new``'s path (when
    exchanged in one step) or at ``aside`` (renamed). Raises OSError with nothing changed."""
    func = _renameat2()
    if func is not None:
        if func(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE) == 0:
            os.rename(new, aside)  # the old tree, to where the caller removes it
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), target)
    os.rename(target, aside)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(aside, target)
        raise


def swap_contents(new: str, target: str, holding: str, skip: str) -> None:
    """Replace the entries of ``target`` (except ``skip``, a name in it) with those of ``new``,
    moving the old ones into ``holding`` (a directory); the root's mode and times follow ``new``.
    On failure every entry moved so far goes back and the OSError is raised."""
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in os.listdir(target):
            if name != skip:
                os.rename(os.path.join(target, name), os.path.join(holding, name))
                moved_out.append(name)
        for name in os.listdir(new):
            os.rename(os.path.join(new, name), os.path.join(target, name))
            moved_in.append(name)
    except OSError as exc:
        failed: list[str] = []
        for name in reversed(moved_in):
            try:
                os.rename(os.path.join(target, name), os.path.join(new, name))
            except OSError:
                failed.append(name)
        for name in reversed(moved_out):
            try:
                os.rename(os.path.join(holding, name), os.path.join(target, name))
            except OSError:
                failed.append(name)
        if failed:
            raise OSError(
                exc.errno, f"{exc.strerror}; rolling back also failed: the old entries are in {holding}", target
            ) from exc
        raise
    st = os.stat(new)
    with contextlib.suppress(OSError):
        os.chmod(target, st.st_mode & 0o7777)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything under it (read-only directories too); errors are ignored."""

    def retry(func: Callable[..., object], p: str, exc_info: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)  # a read-only directory stops the removal of its entries
            func(p)

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=retry)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)
