"""``Sandbox.git``: clone repositories into the sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox_core.contract.client import _params
from sandbox_core.contract.models.git import GitCheckoutResult

if TYPE_CHECKING:
    from sandbox_core.contract.client import Sandbox


class GitAPI:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    async def checkout(
        self,
        repo_url: str,
        *,
        branch: str | None = None,
        target_dir: str | None = None,
        depth: int | None = None,
        timeout_ms: int | None = None,
        session_id: str | None = None,
    ) -> GitCheckoutResult:
        """Clone ``repo_url`` (default target: ``<workspace>/<repo name>``; relative to the session's cwd)."""
        return await self._sb.call_as(
            GitCheckoutResult,
            "git",
            "checkout",
            **_params(
                repoUrl=repo_url,
                branch=branch,
                targetDir=target_dir,
                depth=depth,
                timeoutMs=timeout_ms,
                sessionId=session_id,
            ),
        )
