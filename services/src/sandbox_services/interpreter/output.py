"""The events of one code run, between the executor's reader and the stream's reader.

What waits for the stream's reader is bounded by ``limit`` bytes (UTF-8 text, a result as its
JSON). The executor's reader hands events over with :meth:`RunOutput.put`, which waits while that
much is waiting and the stream's reader is taking events: the executor's reader then stops
reading the executor, whose output backs up into it (a Python kernel blocks in ``print``, Node in
its pipe writes), so a reader that keeps up gets everything, however much the code prints. Only
a reader that takes nothing for :data:`PATIENCE_S` seconds while ``limit`` bytes wait falls
behind: what comes meanwhile is dropped, counted, and the reader gets a stderr notice of how many
bytes it lost, at the place they were lost. Long stdout and stderr text is passed on in events of
at most :data:`PIECE` characters, each put as room frees up. A result larger than ``limit`` is
dropped with a notice of its own. Final events (the run's completion or error) are never dropped.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator

import msgspec

from sandbox_core.contract.models.interpreter import (
    AnyCodeEvent,
    CodeResultEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)

#: Characters of stdout or stderr text per event, at most (at most 4 bytes each in UTF-8).
PIECE = 64 * 1024
#: How long the executor's reader waits for a reader that takes nothing while ``limit`` bytes
#: wait, before it drops output instead.
PATIENCE_S = 1.0
#: What a final or small event counts for.
SMALL = 64


def text_bytes(text: str) -> int:
    """The size of ``text`` in UTF-8 (lone surrogates counted as 3 bytes each)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def event_size(event: AnyCodeEvent) -> int:
    if isinstance(event, (CodeStdoutEvent, CodeStderrEvent)):
        return text_bytes(event.text)
    if isinstance(event, CodeResultEvent):
        return len(msgspec.json.encode(event))
    return SMALL


def pieces(event: AnyCodeEvent) -> Iterator[AnyCodeEvent]:
    """``event``, its text split in events of at most :data:`PIECE` characters."""
    if not isinstance(event, (CodeStdoutEvent, CodeStderrEvent)) or len(event.text) <= PIECE:
        yield event
        return
    kind = type(event)
    for at in range(0, len(event.text), PIECE):
        yield kind(text=event.text[at : at + PIECE])


class Gap:
    """Where output was dropped, in the reader's queue: how much, and why."""

    __slots__ = ("bytes", "result_bytes", "results")

    def __init__(self) -> None:
        self.bytes = 0  # output dropped while the reader took nothing
        self.results = 0  # results too large to wait for any reader
        self.result_bytes = 0

    def notice(self, limit: int, patience: float) -> CodeStderrEvent:
        lines = []
        if self.bytes:
            lines.append(
                f"[sandbox: {self.bytes} bytes of output were dropped here: {limit} bytes were waiting"
                f" for the reader and it took none of them for {patience:g} s]\n"
            )
        if self.results:
            what = (
                f"a result of {self.result_bytes} bytes was dropped here: it is"
                if self.results == 1
                else f"{self.results} results of {self.result_bytes} bytes in all were dropped here: each is"
            )
            lines.append(
                f"[sandbox: {what} larger than the {limit} bytes that may wait for the reader"
                " (services.interpreter.max_pending_output_bytes)]\n"
            )
        return CodeStderrEvent(text="".join(lines))


class RunOutput:
    def __init__(self, limit: int, patience: float = PATIENCE_S) -> None:
        self.limit = limit
        self.patience = patience
        self._queue: collections.deque[tuple[AnyCodeEvent | Gap, int]] = collections.deque()
        self._held = 0
        self.dropped = 0  # bytes dropped so far (for the logs and tests)
        self._stalled = False  # the reader took nothing for `patience` s while the queue was full
        self.muted = False  # a run that timed out: what the kernel still says is not the caller's
        self.finished = False
        self._wakeup = asyncio.Event()  # for the stream's reader: something to take
        self._taken = asyncio.Event()  # for the executor's reader: the stream's reader took something

    @property
    def held(self) -> int:
        """Bytes waiting for the reader."""
        return self._held

    def mute(self) -> None:
        """Take no more output (a run that timed out or lost its reader): a put waiting returns."""
        self.muted = True
        self._taken.set()

    async def put(self, event: AnyCodeEvent) -> None:
        """An output event (stdout, stderr, result): waits while ``limit`` bytes wait and the
        reader is taking them; dropped (and counted) once the reader has taken nothing for
        ``patience`` seconds, until it takes something again."""
        for piece in pieces(event):
            if self.finished or self.muted:
                return
            size = event_size(piece)
            if size > self.limit:  # waits for no reader: it never fits
                gap = self._gap()
                gap.results += 1
                gap.result_bytes += size
                self.dropped += size
                continue
            while self._held + size > self.limit and not self._stalled:
                self._taken.clear()
                try:
                    await asyncio.wait_for(self._taken.wait(), self.patience)
                except TimeoutError:
                    self._stalled = True
                if self.finished or self.muted:
                    return
            if self._held + size > self.limit:
                self._gap().bytes += size
                self.dropped += size
                continue
            self._queue.append((piece, size))
            self._held += size
            self._wakeup.set()

    def _gap(self) -> Gap:
        """The gap at the end of the queue (a new one unless the last entry is one)."""
        if self._queue and isinstance(self._queue[-1][0], Gap):
            return self._queue[-1][0]
        gap = Gap()
        self._queue.append((gap, 0))
        self._wakeup.set()
        return gap

    def put_final(self, event: AnyCodeEvent, *, ours: bool = False) -> None:
        """The run's last event (never dropped); the stream ends after it. Once muted, only the
        service's own final event (``ours``) is taken."""
        if self.finished or (self.muted and not ours):
            return
        self._queue.append((event, 0))
        self.finish()

    def finish(self) -> None:
        self.finished = True
        self._wakeup.set()
        self._taken.set()

    async def get(self) -> AnyCodeEvent | None:
        """The next event, None once the run has finished and everything was taken."""
        while True:
            if self._queue:
                item, size = self._queue.popleft()
                self._held -= size
                self._stalled = False
                self._taken.set()
                if isinstance(item, Gap):
                    return item.notice(self.limit, self.patience)
                return item
            if self.finished:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
