"""The sender's flow-control window (the engine's FlowController)."""

from __future__ import annotations

from capnweb.flow import INITIAL_WINDOW, MAX_WINDOW, MIN_WINDOW, FlowController


class Clock:
    def __init__(self) -> None:
        self.now = 1.0

    def __call__(self) -> float:
        return self.now


def test_blocks_when_full_and_unblocks_on_ack() -> None:
    clock = Clock()
    fc = FlowController(clock)
    marks = [fc.on_send(64 * 1024) for _ in range(4)]
    assert fc.full and fc.in_flight == INITIAL_WINDOW
    clock.now += 0.01
    fc.on_ack(marks[0])
    assert not fc.full
    assert fc.in_flight == 3 * 64 * 1024


def test_an_error_gives_back_its_bytes_without_moving_the_window() -> None:
    fc = FlowController(Clock())
    mark = fc.on_send(1000)
    window = fc.window
    fc.on_error(mark)
    assert fc.in_flight == 0 and fc.window == window


def test_window_grows_with_a_fast_reader_and_stays_within_bounds() -> None:
    clock = Clock()
    fc = FlowController(clock)
    for _ in range(60):  # 1 MiB per millisecond, one round trip of 1 ms
        marks = []
        while not fc.full:
            marks.append(fc.on_send(64 * 1024))
        clock.now += 0.001
        for mark in marks:
            fc.on_ack(mark)
    assert 4 * INITIAL_WINDOW < fc.window <= MAX_WINDOW


def test_window_shrinks_with_a_slow_reader_but_not_below_the_minimum() -> None:
    clock = Clock()
    fc = FlowController(clock)
    for _ in range(500):  # 64 KiB per 100 ms
        marks = []
        while not fc.full:
            marks.append(fc.on_send(64 * 1024))
        for mark in marks:
            clock.now += 0.1
            fc.on_ack(mark)
    assert MIN_WINDOW <= fc.window <= INITIAL_WINDOW / 2  # two writes: the floor of the window


def test_the_window_holds_two_of_the_largest_writes() -> None:
    fc = FlowController(Clock())
    fc.on_send(1_400_000)
    assert fc.window == 2_800_000 and not fc.full


def test_an_app_limited_sender_keeps_its_window() -> None:
    clock = Clock()
    fc = FlowController(clock)
    for _ in range(100):  # tiny writes, slow acks: the window is never full
        mark = fc.on_send(10)
        clock.now += 0.5
        fc.on_ack(mark)
    assert fc.window >= INITIAL_WINDOW
