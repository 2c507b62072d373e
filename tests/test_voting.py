"""Time-consistent voting of window hits into item matches."""

from __future__ import annotations

import pytest

from services.gateway.ports import Hit
from services.gateway.voting import vote


def test_consistent_offset_beats_scattered_hits() -> None:
    # Query windows at 0, 0.5, 1.0 s. Item 1 matches each at item time 10 + tq
    # (consistent); item 2 has higher single hits at scattered offsets.
    offsets = [0.0, 0.5, 1.0]
    hits = [
        [Hit(1, 20, 10.0, 0.5), Hit(2, 3, 1.5, 0.6)],
        [Hit(1, 21, 10.5, 0.5), Hit(2, 40, 20.0, 0.6)],
        [Hit(1, 22, 11.0, 0.5), Hit(2, 7, 3.5, 0.6)],
    ]
    matches = vote(hits, offsets, window=2.0, hop=0.5, query_duration=3.0)
    assert matches[1].score == pytest.approx(0.5)
    assert matches[2].score == pytest.approx(0.2)  # only one of three windows agrees on any offset
    m = matches[1]
    assert m.offset == pytest.approx(10.0)
    assert (m.query_start, m.query_end) == (0.0, 3.0)
    assert (m.item_start, m.item_end) == (10.0, 13.0)


def test_half_hop_offsets_are_merged_and_missing_windows_count_zero() -> None:
    offsets = [0.0, 0.5, 1.0, 1.5]
    # True offset 5.25 s: hits alternate between the 5.0 and 5.5 bins; the
    # last query window found nothing.
    hits = [[Hit(1, 10, 5.0, 0.4)], [Hit(1, 12, 6.0, 0.4)], [Hit(1, 13, 6.5, 0.4)], []]
    (m,) = vote(hits, offsets, 2.0, 0.5, 3.5).values()
    assert m.score == pytest.approx(0.3)
    assert 5.0 <= m.offset <= 5.5
    assert m.query_end == pytest.approx(3.0)
