"""The sender's flow-control window for streams (the reference's bandwidth-delay estimate).

Only the sender keeps a window: every write is acknowledged by the receiver once consumed, and
the sender keeps the bytes it has in flight (sent, not acknowledged) under the window. The
window starts at 256 KiB and follows the measured bandwidth times the smallest round trip, with
a growth factor (2 in a startup phase, 1.25 after), limited per round trip, never shrinking
while the sender is not using it all, and clamped to [64 KiB, 1 GiB].
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

INITIAL_WINDOW = 256 * 1024
MIN_WINDOW = 64 * 1024
MAX_WINDOW = 1024 * 1024 * 1024
STARTUP_GROWTH = 2.0
STEADY_GROWTH = 1.25
DECAY = 0.9
STARTUP_EXIT_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class SendMark:
    """What the controller remembers of one write until its acknowledgement."""

    sent_at: float
    size: int
    delivered_at_send: int
    delivered_time_at_send: float
    window_at_send: float
    window_full_at_send: bool


class FlowController:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.window: float = INITIAL_WINDOW
        self.in_flight = 0
        self.startup = True
        self._delivered = 0
        self._delivered_time = 0.0
        self._first_ack_time = 0.0
        self._first_ack_delivered = 0
        self._min_rtt = float("inf")
        self._flat_rounds = 0
        self._round_window: float = 0.0
        self._round_start = 0.0
        self._largest = 0

    @property
    def full(self) -> bool:
        return self.in_flight >= self.window

    def on_send(self, size: int) -> SendMark:
        self.in_flight += size
        if size > self._largest:
            self._largest = size
            self.window = max(self.window, 2 * size)
        return SendMark(
            self._clock(), size, self._delivered, self._delivered_time, self.window, self.in_flight >= self.window
        )

    def on_error(self, mark: SendMark) -> None:
        self.in_flight -= mark.size

    def on_ack(self, mark: SendMark) -> None:
        now = self._clock()
        self._delivered += mark.size
        self._delivered_time = now
        self.in_flight -= mark.size
        self._min_rtt = min(self._min_rtt, now - mark.sent_at)
        if self._first_ack_time == 0.0:
            self._first_ack_time = now
            self._first_ack_delivered = self._delivered
            return
        if mark.delivered_time_at_send == 0.0:
            base_time, base_delivered = self._first_ack_time, self._first_ack_delivered
        else:
            base_time, base_delivered = mark.delivered_time_at_send, mark.delivered_at_send
        interval = max(now - base_time, 1e-9)
        bandwidth = (self._delivered - base_delivered) / interval
        growth = STARTUP_GROWTH if self.startup else STEADY_GROWTH
        window = min(bandwidth * self._min_rtt * growth, mark.window_at_send * growth)
        # shrink slowly while the sender fills the window; not at all while it does not use it all
        floor = mark.window_at_send * DECAY if mark.window_full_at_send else self.window
        window = max(window, floor)
        self.window = max(min(window, MAX_WINDOW), MIN_WINDOW, 2 * self._largest)
        if self.startup and mark.sent_at >= self._round_start:
            if self.window > self._round_window * STEADY_GROWTH:
                self._flat_rounds = 0
            else:
                self._flat_rounds += 1
                if self._flat_rounds >= STARTUP_EXIT_ROUNDS:
                    self.startup = False
            self._round_start = now
            self._round_window = self.window
