"""Code contexts, their results and the events of a code run (contract sections a6 and b3).

The run events keep the contract's snake_case keys (``execution_count``) and carry no
timestamps, as upstream's ``/api/execute/code`` stream.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from sandbox_core.contract.models import Model

#: The language of a context, as the server reports it (what a request's alias normalises to).
Language = Literal["python", "javascript", "typescript"]
#: What a request may name: the contract's names and aliases.
LanguageName = Literal["python", "python3", "javascript", "js", "node", "typescript", "ts"]


class InterpreterHealth(Model):
    success: bool
    status: str
    timestamp: str


class CodeContext(Model):
    id: str
    language: str
    cwd: str
    #: our extensions: when the context was made and last ran code (ISO times)
    created_at: str | None = None
    last_used: str | None = None


class ContextCreateResult(Model):
    success: bool
    context_id: str
    language: str
    cwd: str
    timestamp: str


class ContextList(Model):
    success: bool
    contexts: list[CodeContext]
    timestamp: str


class ContextDeleted(Model):
    success: bool
    context_id: str
    timestamp: str


# Run events (section b3). ``type`` is the tag.


class CodeEvent(Model, tag_field="type"):
    pass


class CodeStartEvent(CodeEvent, tag="execution_start"):
    """Our extension, first on every run: the run is accepted (it may still wait for the
    context's previous run). Upstream's clients skip types they do not know."""

    context_id: str


class CodeStdoutEvent(CodeEvent, tag="stdout"):
    text: str


class CodeStderrEvent(CodeEvent, tag="stderr"):
    text: str


class CodeResultEvent(CodeEvent, tag="result"):
    """A rich result (an expression's value or a display): one key per MIME type the contract
    names, base64 for images, ``json`` parsed."""

    metadata: dict[str, Any]
    text: str | None = None
    html: str | None = None
    png: str | None = None
    jpeg: str | None = None
    svg: str | None = None
    latex: str | None = None
    markdown: str | None = None
    javascript: str | None = None
    json: Any = None


class CodeCompleteEvent(CodeEvent, tag="execution_complete"):
    execution_count: int | None = msgspec.field(default=None, name="execution_count")


class CodeErrorEvent(CodeEvent, tag="error"):
    """The code raised (``ename``, ``evalue``, ``traceback``; no ``execution_complete`` follows),
    or the run failed (``error`` and ``code``, as a transport ends a failed stream)."""

    ename: str = ""
    evalue: str = ""
    traceback: list[str] = msgspec.field(default_factory=list)
    error: str | None = None
    code: str | None = None


AnyCodeEvent = CodeStartEvent | CodeStdoutEvent | CodeStderrEvent | CodeResultEvent | CodeCompleteEvent | CodeErrorEvent

#: MIME type → the result key the contract names for it.
MIME_KEYS: dict[str, str] = {
    "text/plain": "text",
    "text/html": "html",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/svg+xml": "svg",
    "text/latex": "latex",
    "text/markdown": "markdown",
    "application/javascript": "javascript",
    "application/json": "json",
}
