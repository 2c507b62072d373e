"""The tracker that follows a monitored stream's matches into occurrences
(services/gateway/occurrences.py): pure, no services."""

from __future__ import annotations

import pytest

from services.gateway.occurrences import ENDED, STARTED, Match, Tracker

WINDOW, HOP = 10.0, 5.0


def match(item: int, stream: tuple[float, float], item_start: float, speed: float = 1.0, conf: float = 1.0) -> Match:
    """A match of `item` over `stream`, on the line through (stream start, item_start)."""
    length = (stream[1] - stream[0]) * speed
    return Match(item, stream[0], stream[1], item_start, item_start + length, speed, conf)


def run(windows: list[list[Match]]) -> list[tuple[str, int, float, float, float, float]]:
    """Feeds one list of matches per window (window k ends at WINDOW + k x HOP),
    then closes: (kind, item, stream start, stream end, item start, item end)."""
    tracker = Tracker(tolerance=1.0, gap=WINDOW)
    events = []
    for k, matches in enumerate(windows):
        events += tracker.feed(matches, WINDOW + k * HOP)
    events += tracker.close()
    o = [(e.kind, e.occurrence) for e in events]
    return [(k, x.item_id, x.stream_start, x.stream_end, x.item_start, x.item_end) for k, x in o]


def test_an_occurrence_crossing_many_windows_is_one() -> None:
    # Item 7 played from its 30 s at stream 12 s to 41 s: every window that
    # overlaps it sees the part it holds, with a little jitter.
    windows = [
        [match(7, (12.2, 14.8), 30.2)],  # the window 5-15 s
        [match(7, (12.0, 19.9), 30.0)],
        [match(7, (15.1, 24.8), 33.3)],
        [match(7, (20.0, 29.7), 38.1)],
        [match(7, (25.3, 34.9), 43.2)],
        [match(7, (30.0, 39.8), 48.0)],
        [match(7, (35.2, 41.0), 53.4)],
        [],
        [],
        [],
    ]
    events = run([[], *windows])
    assert [e[:2] for e in events] == [(STARTED, 7), (ENDED, 7)]
    _, _, start, end, item_start, item_end = events[1]
    assert (start, end) == pytest.approx((12.0, 41.0))
    assert (item_start, item_end) == pytest.approx((30.0, 59.0), abs=0.3)


def test_an_item_played_twice_is_two_occurrences() -> None:
    # The same item at stream 10-20 (from its 0 s) and, right after, 22-32
    # (from its 50 s): another line, so another occurrence, though near in time.
    events = run(
        [
            [],
            [match(3, (10.0, 15.0), 0.0)],
            [match(3, (10.0, 20.0), 0.0)],
            [match(3, (15.0, 20.0), 5.0), match(3, (22.0, 25.0), 50.0)],
            [match(3, (22.0, 30.0), 50.0)],
            [match(3, (25.0, 32.0), 53.0)],
        ]
    )
    kinds = [(k, i) for k, i, *_ in events]
    assert kinds == [(STARTED, 3), (STARTED, 3), (ENDED, 3), (ENDED, 3)]
    ended = [e for e in events if e[0] == ENDED]
    assert [e[2:4] for e in ended] == [(10.0, 20.0), (22.0, 32.0)]
    assert [e[4] for e in ended] == [0.0, 50.0]


def test_a_gap_longer_than_a_window_closes_an_occurrence() -> None:
    tracker = Tracker(tolerance=1.0, gap=WINDOW)
    assert [e.kind for e in tracker.feed([match(1, (2.0, 9.0), 0.0)], 10.0)] == [STARTED]
    assert tracker.feed([], 15.0) == []
    assert tracker.feed([], 19.0) == []  # 10 s past its end: not yet more than a gap
    ended = tracker.feed([], 20.0)
    assert [(e.kind, e.occurrence.stream_end) for e in ended] == [(ENDED, 9.0)]
    assert tracker.open == []
    # The same line again after the gap: a new occurrence.
    assert [e.kind for e in tracker.feed([match(1, (25.0, 30.0), 23.0)], 30.0)] == [STARTED]
    # A match within the gap on the same line continues it.
    assert tracker.feed([match(1, (33.0, 40.0), 31.0)], 40.0) == []
    assert [e.occurrence.stream_end for e in tracker.close()] == [40.0]
    assert tracker.ended == 2


def test_speed_is_weighted_and_lines_follow_it() -> None:
    # Played 2% faster: item time = 1.02 x stream time + 10.
    def at(a: float, b: float, speed: float = 1.02) -> Match:
        return match(2, (a, b), 1.02 * a + 10.0, speed=speed)

    tracker = Tracker(tolerance=1.0, gap=WINDOW)
    tracker.feed([at(40.0, 50.0, 1.021)], 50.0)
    tracker.feed([at(45.0, 55.0, 1.019)], 55.0)
    tracker.feed([at(50.0, 60.0, 1.02), match(5, (50.0, 52.0), 3.0, conf=0.995)], 60.0)
    ended = tracker.close()
    assert [e.occurrence.item_id for e in ended] == [2, 5]
    two = ended[0].occurrence
    assert two.speed == pytest.approx(1.02, abs=1e-4)
    assert (two.stream_start, two.stream_end) == (40.0, 60.0)
    assert two.item_start == pytest.approx(50.8)
    assert two.played == 20.0
    assert two.matches == 3
    assert ended[1].occurrence.confidence == 0.995


def test_a_passage_the_item_repeats_is_not_another_occurrence() -> None:
    # Item 4 repeats itself every 11 s; it plays from its 111.2 s at stream
    # 0.2 s (item time = stream time + 111). The first window matches the
    # repeat 11 s earlier, a later one the repeat 11 s later: one occurrence,
    # on the line the other windows agree on.
    events = run(
        [
            [match(4, (0.5, 6.0), 100.5)],
            [match(4, (0.2, 9.5), 111.2)],
            [match(4, (3.0, 13.0), 114.0)],
            [match(4, (7.0, 17.0), 129.0)],
            [match(4, (10.0, 20.0), 121.0)],
        ]
    )
    assert [e[:2] for e in events] == [(STARTED, 4), (ENDED, 4)]
    assert events[1][2:] == pytest.approx((0.2, 20.0, 111.2, 131.0))
