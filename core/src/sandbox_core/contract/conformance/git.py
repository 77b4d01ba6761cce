"""Conformance of the git service: clone with branch, depth and target dir; errors; redaction.

Repositories are made with git inside the sandbox (under /tmp) and cloned by path or
``file://`` URL; the http failures (404, a server that never answers) come from listeners in
the test process on 127.0.0.1. No test touches the network.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from sandbox_core.contract.client import Sandbox
from sandbox_core.contract.conformance.helpers import sid
from sandbox_core.contract.conformance.ports import Listener, within
from sandbox_core.errors import GitError, SandboxError, ValidationFailed

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


async def sh(sandbox: Sandbox, command: str, session_id: str | None = None) -> str:
    result = await sandbox.exec(command, session_id=session_id or sid("git"), env=GIT_ENV, timeout_ms=60_000)
    assert result.exit_code == 0, f"{command}: {result.stderr}"
    return result.stdout


async def make_repo(sandbox: Sandbox) -> str:
    """A temp dir holding ``src``: branch main (2 commits, a.txt), branch dev (+ d.txt), tag v1."""
    root = await sh(sandbox, "mktemp -d /tmp/conformance-git-XXXXXXXX")
    await sh(
        sandbox,
        f"cd {root} && git init -q src && cd src && git symbolic-ref HEAD refs/heads/main"
        " && echo one > a.txt && git add a.txt && git commit -q -m one && git tag v1"
        " && echo two >> a.txt && git commit -q -am two"
        " && git checkout -q -b dev && echo dev > d.txt && git add d.txt && git commit -q -m dev"
        " && git checkout -q main",
    )
    return root


def error_text(err: SandboxError) -> str:
    return f"{err.message} {err.details!r} {err!r} {err}"


class GitSuite:
    async def test_git_clone_into_target_dir(self, sandbox: Sandbox) -> None:
        root = await make_repo(sandbox)
        try:
            result = await sandbox.git.checkout(f"{root}/src", target_dir=f"{root}/full")
            assert (result.success, result.branch, result.target_dir) == (True, "main", f"{root}/full")
            assert result.repo_url == f"{root}/src" and result.timestamp.endswith("Z")
            out = await sh(sandbox, f"cd {root}/full && git rev-list --count HEAD && cat a.txt && git branch -r")
            assert out.splitlines()[:3] == ["2", "one", "two"]
            assert "origin/dev" in out
        finally:
            await sh(sandbox, f"rm -rf {root}")

    async def test_git_clone_branch_and_depth(self, sandbox: Sandbox) -> None:
        root = await make_repo(sandbox)
        try:
            result = await sandbox.git.checkout(
                f"file://{root}/src", branch="dev", depth=1, target_dir=f"{root}/shallow"
            )
            assert (result.branch, result.target_dir) == ("dev", f"{root}/shallow")
            out = await sh(
                sandbox,
                f"cd {root}/shallow && git rev-list --count HEAD && git rev-parse"
                " --is-shallow-repository && cat d.txt && git branch --show-current",
            )
            assert out == "1\ntrue\ndev\ndev"
        finally:
            await sh(sandbox, f"rm -rf {root}")

    async def test_git_clone_of_a_tag_reports_the_requested_branch(self, sandbox: Sandbox) -> None:
        root = await make_repo(sandbox)
        try:
            result = await sandbox.git.checkout(f"file://{root}/src", branch="v1", target_dir=f"{root}/tag")
            assert result.branch == "v1"  # detached HEAD: no current branch, so the requested one
            assert await sh(sandbox, f"cat {root}/tag/a.txt") == "one"
        finally:
            await sh(sandbox, f"rm -rf {root}")

    async def test_git_clone_default_target_is_in_the_workspace(self, sandbox: Sandbox) -> None:
        root = await make_repo(sandbox)
        name = f"conformance-{uuid.uuid4().hex[:10]}"
        workspace = await sh(sandbox, "pwd")  # a fresh session starts in the workspace
        try:
            await sh(sandbox, f"git clone -q --bare {root}/src {root}/{name}.git")
            result = await sandbox.git.checkout(f"file://{root}/{name}.git")
            assert result.target_dir == f"{workspace}/{name}"
            assert await sh(sandbox, f"cat {workspace}/{name}/a.txt") == "one\ntwo"
        finally:
            await sh(sandbox, f"rm -rf {root} {workspace}/{name}")

    async def test_git_relative_target_is_resolved_in_the_session_cwd(self, sandbox: Sandbox) -> None:
        root = await make_repo(sandbox)
        s = sid("git")
        try:
            await sandbox.exec(f"mkdir -p {root}/here && cd {root}/here", session_id=s)
            result = await sandbox.git.checkout(f"{root}/src", target_dir="sub/clone", session_id=s)
            assert result.target_dir == f"{root}/here/sub/clone"
            assert await sh(sandbox, "cat sub/clone/a.txt", session_id=s) == "one\ntwo"
        finally:
            await sh(sandbox, f"rm -rf {root}")

    # ---- errors ---------------------------------------------------------------------------------

    async def test_git_missing_repository(self, sandbox: Sandbox) -> None:
        root = await make_repo(sandbox)
        try:
            with pytest.raises(GitError) as info:
                await sandbox.git.checkout(f"{root}/nope", target_dir=f"{root}/out")
            assert (info.value.code, info.value.status) == ("GIT_REPOSITORY_NOT_FOUND", 404)
            assert "does not exist" in info.value.message
            assert info.value.details["exitCode"] == 128 and info.value.details["targetDir"] == f"{root}/out"
        finally:
            await sh(sandbox, f"rm -rf {root}")

    async def test_git_missing_branch(self, sandbox: Sandbox) -> None:
        root = await make_repo(sandbox)
        try:
            with pytest.raises(GitError) as info:
                await sandbox.git.checkout(f"file://{root}/src", branch="no-such-branch", target_dir=f"{root}/out")
            assert info.value.code == "GIT_BRANCH_NOT_FOUND" and "no-such-branch" in info.value.message
            assert await sh(sandbox, f"test -e {root}/out && echo left || echo clean") == "clean"
        finally:
            await sh(sandbox, f"rm -rf {root}")

    async def test_git_target_already_exists(self, sandbox: Sandbox) -> None:
        root = await make_repo(sandbox)
        try:
            await sh(sandbox, f"mkdir -p {root}/taken && touch {root}/taken/file")
            with pytest.raises(GitError) as info:
                await sandbox.git.checkout(f"{root}/src", target_dir=f"{root}/taken")
            assert info.value.code == "GIT_OPERATION_FAILED" and "already exists" in info.value.message
        finally:
            await sh(sandbox, f"rm -rf {root}")

    async def test_git_repository_not_found(self, sandbox: Sandbox) -> None:
        async with Listener(404, body=b"Repository not found.\n") as host:
            with pytest.raises(GitError) as info:
                await within(
                    sandbox.git.checkout(
                        f"http://127.0.0.1:{host.port}/nobody/none.git",
                        target_dir=f"/tmp/conformance-git-{uuid.uuid4().hex}",
                    )
                )
        assert (info.value.code, info.value.status) == ("GIT_REPOSITORY_NOT_FOUND", 404)

    async def test_git_timeout_is_a_network_error(self, sandbox: Sandbox) -> None:
        target = f"/tmp/conformance-git-{uuid.uuid4().hex}"
        async with Listener("stall") as host:
            with pytest.raises(GitError) as info:
                await within(
                    sandbox.git.checkout(f"http://127.0.0.1:{host.port}/slow.git", target_dir=target, timeout_ms=300)
                )
        assert (info.value.code, info.value.status) == ("GIT_NETWORK_ERROR", 502)
        assert "timed out" in info.value.message
        assert await sh(sandbox, f"test -e {target} && echo left || echo clean") == "clean"

    @pytest.mark.parametrize("answer", [401, 404, "stall"])
    async def test_git_credentials_are_redacted(self, sandbox: Sandbox, answer: Any) -> None:
        secret = f"pw{uuid.uuid4().hex}"
        async with Listener(answer, body=b"Repository not found.\n") as host:
            url = f"http://someone:{secret}@127.0.0.1:{host.port}/private.git?token={secret}x"
            with pytest.raises(GitError) as info:
                await within(
                    sandbox.git.checkout(url, target_dir=f"/tmp/conformance-git-{uuid.uuid4().hex}", timeout_ms=500)
                )
        text = error_text(info.value)
        assert secret not in text and "someone" not in text
        assert "******@127.0.0.1" in info.value.message

    @pytest.mark.parametrize("url", ["", "   ", "-uoops", "--upload-pack=touch /tmp/x", "x" * 2049, "a\x00b"])
    async def test_git_invalid_url(self, sandbox: Sandbox, url: str) -> None:
        with pytest.raises(SandboxError) as info:
            await sandbox.git.checkout(url, target_dir=f"/tmp/conformance-git-{uuid.uuid4().hex}")
        assert (info.value.code, info.value.status) == ("INVALID_GIT_URL", 400)

    @pytest.mark.parametrize(
        ("field", "kwargs"),
        [
            ("timeoutMs", {"timeout_ms": 0}),
            ("timeoutMs", {"timeout_ms": -5}),
            ("depth", {"depth": 0}),
        ],
    )
    async def test_git_invalid_numbers(self, sandbox: Sandbox, field: str, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValidationFailed) as info:
            await sandbox.git.checkout("/tmp/whatever", **kwargs)
        assert info.value.status == 400 and info.value.details.get("field") == field
