"""The events of one code run, between the executor's reader and the stream's reader.

The executor's reader never waits (it must keep draining the kernel, or the kernel's own
buffers decide what is lost): it puts events here. What a slow stream reader has not taken yet
is bounded by ``limit`` bytes; past it, output events are dropped and counted, and the reader
gets one stderr notice naming how much was dropped once it has caught up. Final events (the
run's completion or error) are never dropped.
"""

from __future__ import annotations

import asyncio
import collections

from sandbox_core.models.interpreter import (
    AnyCodeEvent,
    CodeResultEvent,
    CodeStderrEvent,
    CodeStdoutEvent,
)


def event_size(event: AnyCodeEvent) -> int:
    if isinstance(event, (CodeStdoutEvent, CodeStderrEvent)):
        return len(event.text)
    if isinstance(event, CodeResultEvent):
        return sum(len(v) for v in (event.text, event.html, event.png, event.jpeg, event.svg) if v) + 256
    return 64


class RunOutput:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queue: collections.deque[tuple[AnyCodeEvent, int]] = collections.deque()
        self._held = 0
        self.dropped = 0
        self.muted = False  # a run that timed out: what the kernel still says is not the caller's
        self.finished = False
        self._wakeup = asyncio.Event()

    def put(self, event: AnyCodeEvent) -> None:
        """An output event (stdout, stderr, result): dropped when the reader is too far behind."""
        if self.finished or self.muted:
            return
        size = event_size(event)
        if self._held + size > self.limit:
            self.dropped += size
            return
        self._queue.append((event, size))
        self._held += size
        self._wakeup.set()

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

    async def get(self) -> AnyCodeEvent | None:
        """The next event, None once the run has finished and everything was taken."""
        while True:
            if self.dropped and (not self._queue or self._queue[0][1] == 0):
                dropped, self.dropped = self.dropped, 0
                return CodeStderrEvent(
                    text=f"[sandbox: {dropped} bytes of output were dropped: the reader fell more than"
                    f" {self.limit} bytes behind]\n"
                )
            if self._queue:
                event, size = self._queue.popleft()
                self._held -= size
                return event
            if self.finished:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
