"""Git results (contract section a5)."""

from __future__ import annotations

from sandbox_core.contract.models import Model


class GitCheckoutResult(Model):
    success: bool
    repo_url: str
    branch: str  # the branch checked out (``git branch --show-current``), else the requested one, else "unknown"
    target_dir: str  # absolute path of the clone
    timestamp: str
