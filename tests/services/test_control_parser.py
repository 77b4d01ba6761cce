"""The control-pipe parser on its own (sans-IO): chunking, bounds, malformed lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_services.shell import CONTROL_LINE_MAX, ControlParser, JobExited, parse_control_line

# a status as bash prints it (``%d``), and the tags we write
statuses = st.integers(-(2**40), 2**40).map(lambda n: str(n).encode())
tags = st.integers(0, 2**63).map(lambda n: str(n).encode())
spaces = st.sampled_from([b" ", b"  ", b"\t", b" \t "])


def is_number(token: bytes) -> bool:
    """The documented status syntax: an optional ``-`` then ASCII digits."""
    return (token[1:] if token.startswith(b"-") else token).isdigit()


# a token with no whitespace that is not a number: a malformed status
not_numbers = (
    st.binary(min_size=1, max_size=12)
    .map(lambda b: b"".join(b.split()))
    .filter(lambda t: t != b"" and not is_number(t))
)


@st.composite
def valid_lines(draw: st.DrawFn) -> bytes:
    sep = draw(spaces)
    line = sep.join([b"x", draw(tags), draw(statuses)])
    return draw(st.sampled_from([b"", b" "])) + line + draw(st.sampled_from([b"", b" ", b"\r"]))


@st.composite
def too_long_lines(draw: st.DrawFn, max_line: int) -> bytes:
    """Around and over ``max_line`` bytes, ending like one of ours: only its start tells it apart."""
    ours = draw(valid_lines())
    padding = draw(st.integers(max(0, max_line - len(ours) - 2), 3 * max_line))
    return draw(st.sampled_from([b"z", b"x 1 9"])) * padding + b" " + ours


@st.composite
def control_streams(draw: st.DrawFn, max_line: int = CONTROL_LINE_MAX) -> bytes:
    """Lines of ours, noise lines and over-long lines, each ended by a newline, maybe an unfinished tail."""
    lines = draw(
        st.lists(
            st.one_of(
                valid_lines(),
                st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
                too_long_lines(max_line),
            ),
            max_size=20,
        )
    )
    tail = draw(st.sampled_from([b"", b"x 1", b"x 2 0"]))
    return b"".join(line + b"\n" for line in lines) + tail


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(set(cuts))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def feed_all(parser: ControlParser, chunks: list[bytes]) -> list[JobExited]:
    events: list[JobExited] = []
    for chunk in chunks:
        events += parser.feed(chunk)
        assert parser.buffered <= parser.max_line
    return events


def expected(data: bytes, max_line: int = CONTROL_LINE_MAX) -> list[JobExited]:
    """The reference model: every complete line up to ``max_line`` bytes, parsed on its own."""
    *lines, _unfinished = data.split(b"\n")
    found = (parse_control_line(line) for line in lines if len(line) <= max_line)
    return [event for event in found if event is not None]


@given(control_streams(), st.data())
def test_any_chunking_gives_the_events_of_the_whole_stream(stream: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    whole = ControlParser().feed(stream)
    assert feed_all(ControlParser(), chunked(stream, cuts)) == whole == expected(stream)


@given(control_streams(max_line=64))
def test_byte_by_byte_is_the_same_as_whole(data: bytes) -> None:
    parser = ControlParser(64)
    assert feed_all(parser, [data[i : i + 1] for i in range(len(data))]) == expected(data, 64)


@given(st.lists(st.binary(max_size=200), max_size=30), st.integers(1, 64))
def test_arbitrary_bytes_never_raise_and_never_grow_the_buffer(chunks: list[bytes], max_line: int) -> None:
    parser = ControlParser(max_line)
    events = feed_all(parser, chunks)
    assert all(isinstance(e, JobExited) for e in events)
    assert events == expected(b"".join(chunks), max_line)


@given(tags, not_numbers, spaces)
def test_a_malformed_status_gives_an_unknown_status(tag: bytes, status: bytes, sep: bytes) -> None:
    assert ControlParser().feed(b"x" + sep + tag + sep + status + b"\n") == [JobExited(int(tag), None)]


@given(tags, statuses)
def test_a_status_is_read_as_bash_prints_it(tag: bytes, status: bytes) -> None:
    assert ControlParser().feed(b"x %b %b\n" % (tag, status)) == [JobExited(int(tag), int(status))]


@pytest.mark.parametrize(
    "line",
    [b"", b"x", b"x 1", b"x 1 2 3", b"y 1 2", b"x -1 2", b"x a 2", b"x 1.0 2", b"X 1 2", b"x \xd9\xa1 0"],
)
def test_lines_that_are_not_ours_give_no_event(line: bytes) -> None:
    assert ControlParser().feed(line + b"\n") == []


def test_a_line_longer_than_the_cap_is_dropped_up_to_its_newline() -> None:
    parser = ControlParser(8)
    assert parser.feed(b"x 1 0") == [] and parser.buffered == 5
    assert parser.feed(b"0000") == [] and parser.buffered == 0  # 9 bytes: not ours
    assert parser.feed(b"x 2 0" * 100) == [] and parser.buffered == 0
    assert parser.feed(b"\nx 3 0\nx 4") == [JobExited(3, 0)]  # the rest of the long line went with it
    assert parser.feed(b" 7\n") == [JobExited(4, 7)]
    assert parser.feed(b"x 5 1234\n") == [JobExited(5, 1234)]  # exactly the cap: kept
    assert parser.feed(b"z" * 9) == [] and parser.feed(b"x 6 0\n") == []  # its end looks like ours


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ControlParser(0)
