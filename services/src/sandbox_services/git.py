"""Git: clone a repository (contract section a5, the ``checkout`` operation).

git runs as an argv list (never through a shell) in its own process group, outside any
session's lock, from the session's current directory:

    git -c http.lowSpeedLimit=1024 -c http.lowSpeedTime=30 clone --filter=blob:none
        [--branch B] [--depth N] -- URL DIR

with ``GIT_TERMINAL_PROMPT=0`` (a private repository fails instead of waiting for a
password), stdin at /dev/null and ``LC_ALL=C`` (the error mapping reads git's English
messages). The default target is ``<workspace>/<repo name from the URL>``; a relative target
is resolved against the session's current directory. At ``timeoutMs`` the process group gets
SIGTERM (git then removes its partial clone), SIGKILL after ``kill_grace_ms``, and the answer
is 502 ``GIT_NETWORK_ERROR``.

Failures map by exit code and stderr exactly as the contract says (:func:`classify_clone_error`).
Credentials in URLs (``https://user:pass@host``) and secret query parameters are redacted in
every message, detail and log line, git's own stderr included (:func:`redact`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Callable

import msgspec

from sandbox_core.clock import now_iso
from sandbox_core.contract.models.git import GitCheckoutResult
from sandbox_core.errors import ErrorCode, SandboxError, validation_error
from sandbox_core.hookspecs import hookimpl
from sandbox_core.registry import ServiceContext, ServiceSpec, operation

from . import tools
from .files.paths import check_cwd
from .params import GitDepth, NonNegativeInt, PositiveMs
from .sessions import SessionsService, check_session_id

MAX_URL_LENGTH = 2048
MAX_PATH_LENGTH = 4096
DEFAULT_TIMEOUT_MS = 600_000
FALLBACK_REPO_NAME = "repository"
_BRANCH_TIMEOUT_S = 30.0

# ``scheme://userinfo@``: everything up to the last ``@`` of the URL token is hidden, so a
# password with a stray ``@`` or ``/`` in it is hidden too (over-redacting is the safe side).
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^\s\"'`<>,;{}\[\]]*@")
_SECRET_PARAMS = re.compile(
    r"([?&])(X-Amz-Credential|X-Amz-Signature|X-Amz-Security-Token|token|secret|password)=[^&\s\"'`<>#]*", re.IGNORECASE
)


class GitSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.git]``"""

    kill_grace_ms: NonNegativeInt = 5000  # SIGTERM to SIGKILL on timeout (upstream: timeout -k 5)


def redact(text: str, url: str | None = None) -> str:
    """``text`` with URL credentials shown as ``******`` and secret query values as ``REDACTED``.

    With ``url``, the credentials found in it are also hidden wherever they appear verbatim
    (or percent-decoded) in ``text``, whatever surrounds them.
    """
    out = _URL_CREDENTIALS.sub(r"\1******@", text)
    if "?" in out and "=" in out:
        out = _SECRET_PARAMS.sub(r"\1\2=REDACTED", out)
    if url:
        for secret in _secrets_of(url):
            out = out.replace(secret, "******")
    return out


def _secrets_of(url: str) -> list[str]:
    scheme_end = url.find("://")
    if scheme_end < 0:
        return []
    rest = url[scheme_end + 3 :]
    end = len(rest)
    for stop in "/?#":
        pos = rest.find(stop)
        if pos >= 0:
            end = min(end, pos)
    at = rest.rfind("@", 0, end)
    if at <= 0:
        return []
    userinfo = rest[:at]
    found = {userinfo, urllib.parse.unquote(userinfo)}
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        found.update({password, urllib.parse.unquote(password)})
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def repo_name(url: str) -> str:
    """The directory name for a clone: the URL's last path segment without ``.git`` (as the SDK)."""
    texts = [url]
    if "://" in url:
        with contextlib.suppress(ValueError):
            texts.insert(0, urllib.parse.urlsplit(url).path)
    for text in texts:
        segments = [s for s in re.split(r"[:/\\]", text) if s]
        if segments:
            name = segments[-1]
            name = name[:-4] if name.endswith(".git") else name
            if name not in ("", ".", ".."):
                return name
    return FALLBACK_REPO_NAME


_BRANCH = ("did not match", "pathspec")
_NOT_FOUND = (
    "repository not found",
    "does not exist",
    "does not appear to be a git repository",
    "returned error: 404",
    "invalid gitfile format",
)  # the last: a local path that is a file
_AUTH = (
    "authentication failed",
    "permission denied",
    "could not read username",
    "could not read password",
    "credentials",
    "returned error: 401",
    "returned error: 403",
)
_NETWORK = (
    "could not resolve host",
    "connection refused",
    "connection timed out",
    "failed to connect",
    "network is unreachable",
    "operation timed out",
)


def classify_clone_error(exit_code: int | None, stderr: str) -> str:
    """The error code for a failed clone, from git's exit code and (English) stderr.

    Section a5 maps every exit code 128 to GIT_OPERATION_FAILED unless the text says
    "repository not found"; but git exits 128 for nearly every failure, which would make the
    not-found, branch and auth codes unreachable. We read the text first (keeping a5's codes),
    and fall back to a5's mapping by exit code.
    """
    text = stderr.lower()
    if exit_code == 124:
        return ErrorCode.GIT_NETWORK_ERROR
    if any(p in text for p in _BRANCH) or ("remote branch" in text and "not found" in text):
        return ErrorCode.GIT_BRANCH_NOT_FOUND
    if any(p in text for p in _NOT_FOUND):
        return ErrorCode.GIT_REPOSITORY_NOT_FOUND
    if any(p in text for p in _AUTH):
        return ErrorCode.GIT_AUTH_FAILED
    if any(p in text for p in _NETWORK):
        return ErrorCode.GIT_NETWORK_ERROR
    return ErrorCode.GIT_OPERATION_FAILED if exit_code == 128 else ErrorCode.GIT_CLONE_FAILED


def _shown_url(url: str) -> str:
    shown = redact(url, url).replace("\x00", "\\0")
    return shown if len(shown) <= 120 else shown[:117] + "..."


def check_repo_url(url: str) -> None:
    reason = None
    if not url.strip():
        reason = "repository URL must not be empty"
    elif len(url) > MAX_URL_LENGTH:
        reason = f"repository URL must be at most {MAX_URL_LENGTH} characters"
    elif "\x00" in url:
        reason = "repository URL must not contain NUL"
    elif url.startswith("-"):
        reason = "repository URL must not start with '-'"
    if reason is not None:
        raise SandboxError(
            ErrorCode.INVALID_GIT_URL,
            f"Invalid Git URL '{_shown_url(url)}': {reason}",
            {"field": "repoUrl", "reason": reason},
        )


class GitService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.registry = ctx.registry
        self.workspace = ctx.workspace
        self.log = ctx.log
        settings: GitSettings = ctx.settings
        self.grace = settings.kill_grace_ms / 1000

    def _cwd_of(self, session_id: str) -> str:
        cwd = self.workspace
        if self.registry.has("sessions"):
            cwd = self.registry.get("sessions", SessionsService).cwd_of(session_id)
        return cwd

    @staticmethod
    def _start_dir(cwd: str) -> str:
        """Where git starts: ``cwd``, or "/" when that is no directory."""
        return cwd if os.path.isdir(cwd) else "/"

    async def _run(self, argv: list[str], cwd: str, time_limit: float) -> tools.ToolRun:
        """Run git from ``cwd`` (from "/" when that is no directory); ``time_limit`` (seconds) is a
        kill deadline, not a cancellation timeout (see :func:`sandbox_services.tools.run`)."""
        try:
            return await tools.run(argv, time_limit=time_limit, grace=self.grace, cwd=self._start_dir(cwd))
        except FileNotFoundError:
            raise SandboxError(
                ErrorCode.GIT_OPERATION_FAILED, "git is not installed in the sandbox", {"command": argv[0]}
            ) from None

    async def _current_branch(self, target: str) -> str | None:
        try:
            done = await self._run(["git", "branch", "--show-current"], target, _BRANCH_TIMEOUT_S)
        except SandboxError:
            return None
        branch = done.stdout.decode("utf-8", errors="replace").strip()
        return branch if done.exit_code == 0 and not done.timed_out and branch else None

    def _target(self, repo_url: str, target_dir: str | None, cwd: str) -> tuple[str, bool]:
        """The clone's directory, and whether something is already there (then a timed-out
        clone does not remove it)."""
        if target_dir is None:
            target = os.path.join(self.workspace, repo_name(repo_url))
        elif len(target_dir) > MAX_PATH_LENGTH or "\x00" in target_dir:
            raise validation_error(f"targetDir must be at most {MAX_PATH_LENGTH} characters without NUL", "targetDir")
        else:
            if not os.path.isabs(target_dir):
                check_cwd(cwd, target_dir, "targetDir")  # a removed session cwd: 404, not "<cwd> (deleted)/..."
            target = os.path.normpath(os.path.join(cwd, target_dir))
        return target, os.path.lexists(target)

    @operation
    async def checkout(
        self,
        repo_url: str,
        branch: str | None = None,
        target_dir: str | None = None,
        depth: GitDepth | None = None,
        timeout_ms: PositiveMs = DEFAULT_TIMEOUT_MS,
        session_id: str | None = None,
    ) -> GitCheckoutResult:
        """Clone ``repo_url`` (optionally one ``branch``, ``depth`` commits deep) into ``target_dir``."""
        check_repo_url(repo_url)
        sid = check_session_id(session_id)
        branch = branch or None
        if branch is not None and "\x00" in branch:
            raise validation_error("branch must not contain NUL", "branch")
        cwd = self._cwd_of(sid)
        target, existed = self._target(repo_url, target_dir or None, cwd)
        shown = redact(repo_url, repo_url)
        argv = ["git", "-c", "http.lowSpeedLimit=1024", "-c", "http.lowSpeedTime=30", "clone", "--filter=blob:none"]
        if branch is not None:
            argv += ["--branch", branch]
        if depth is not None:
            argv += ["--depth", str(depth)]
        argv += ["--", repo_url, target]
        started = time.monotonic()
        self.log.info("git.clone", repository=shown, target_dir=target, branch=branch, depth=depth, session_id=sid)
        done = await self._run(argv, cwd, timeout_ms / 1000)
        code, timed_out = done.exit_code, done.timed_out
        stderr = redact(done.stderr.decode("utf-8", errors="replace"), repo_url).strip()
        details = {"repository": shown, "targetDir": target, "exitCode": code, "stderr": stderr}
        if timed_out:
            if not existed:
                shutil.rmtree(target, ignore_errors=True)  # git was killed before it could clean up
            self.log.warning("git.clone_timeout", repository=shown, target_dir=target, timeout_ms=timeout_ms)
            raise SandboxError(
                ErrorCode.GIT_NETWORK_ERROR,
                f"Git clone of '{shown}' timed out after {timeout_ms} ms",
                {**details, "exitCode": 124, "timeoutMs": timeout_ms},
            )
        if code != 0:
            error_code = classify_clone_error(code, stderr)
            self.log.warning(
                "git.clone_failed",
                repository=shown,
                target_dir=target,
                exit_code=code,
                code=error_code,
                stderr=stderr[:2000],
            )
            raise SandboxError(
                error_code, f"Failed to clone repository '{shown}': {stderr or f'exit code {code}'}", details
            )
        actual = await self._current_branch(target)
        self.log.info(
            "git.cloned", repository=shown, target_dir=target, duration_ms=round((time.monotonic() - started) * 1000)
        )
        return GitCheckoutResult(
            success=True,
            repo_url=repo_url,
            branch=actual or branch or "unknown",
            target_dir=target,
            timestamp=now_iso(),
        )


@hookimpl
def sandbox_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The ``git`` plugin (entry point): this service alone."""
    register(ServiceSpec("git", GitService, GitSettings, "clone git repositories"))
