"""Pieces of a monitored stream (services/gateway/stream_query.py) and where
a landmark match's stretch begins and ends (services/gateway/landmarks.py):
pure functions, no services."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.vectors import PAIR_TIME_BITS, PAIR_TIME_STEP, POSITION_SCALE, Sparse
from services.gateway import landmarks
from services.gateway.ports import Window
from services.gateway.stream_query import Piece, Pieces, merged, shifted


def window(offset: float, keys: list[int], seconds: list[float], speed: float = 1.0, only: bool = False) -> Window:
    values = (1 + np.asarray(seconds) / POSITION_SCALE).astype(np.float32)
    return Window(0, offset, Sparse(np.asarray(keys, dtype=np.uint32), values), speed, speed, only)


def times(w: Window) -> list[float]:
    return [round(w.offset + (float(v) - 1) * POSITION_SCALE, 3) for v in w.vector.values]  # type: ignore[union-attr]


def test_a_piece_keeps_the_landmarks_anchored_in_it_in_stream_time() -> None:
    clip = [window(0.0, [1, 2, 3], [0.5, 1.5, 1.9]), window(2.0, [4, 5], [0.2, 1.0])]
    kept = shifted(clip, clip_start=10.0, lo=11.0, hi=12.5)
    assert [w.offset for w in kept] == [10.0, 12.0]
    assert [times(w) for w in kept] == [[11.5, 11.9], [12.2]]
    assert [list(w.vector.indices) for w in kept] == [[2, 3], [4]]  # type: ignore[union-attr]
    assert shifted(clip, 10.0, 20.0, 30.0) == []  # nothing anchored there: no window


def test_a_pieces_chunks_are_searched_as_one_vector_per_hypothesis() -> None:
    chunks = [window(0.0, [1, 2], [0.1, 0.2]), window(2.0, [2, 3], [0.3, 0.4]), window(0.0, [9], [0.5], speed=1.02)]
    one = merged(chunks)
    assert len(one) == 2
    same = next(w for w in one if w.speed == 1.0)
    assert list(same.vector.indices) == [1, 2, 3]  # type: ignore[union-attr]
    assert times(same) == [0.1, 0.2, 2.4]  # a hash met twice keeps its first time


def test_a_stretch_spans_at_most_the_window_and_starts_at_its_first_piece() -> None:
    pieces = Pieces(window=10.0)
    for k in range(4):
        w = window(5.0 * k, [k], [1.0])
        pieces.add(Piece(5.0 * k, 5.0 * (k + 1), [w], [w], [[]]))
    origin, query, searched, hits = pieces.stretch(segment_seconds=1.0)
    assert origin == 10.0 and query.duration == 10.0
    assert [w.offset for w in query.windows] == [0.0, 5.0] and len(searched) == len(hits) == 2
    tail = window(20.0, [7], [0.5])
    origin, query, _, _ = pieces.stretch(1.0, Piece(20.0, 21.5, [tail], [], []))
    assert origin == 10.0 and query.duration == pytest.approx(11.5) and query.windows[-1].offset == 10.0


def line(anchors: list[float], dt_steps: int = 10) -> landmarks.Landmarks:
    keys = (np.arange(len(anchors), dtype=np.uint32) << PAIR_TIME_BITS) | dt_steps
    return landmarks.Landmarks(keys, np.asarray(anchors, dtype=np.float64))


def test_a_match_ends_at_its_last_partner_and_leaves_out_a_lone_edge_landmark() -> None:
    # A copy from 2 s to 6 s of the query, anchors every 0.25 s, each paired
    # with a partner 10 steps (0.67 s) later; one stray pair on the line at 0.9 s.
    anchors = [0.9, *np.arange(2.0, 6.01, 0.25)]
    query = line(anchors)
    item = landmarks.Landmarks(query.keys.copy(), query.times + 30.0)
    a = landmarks.align(landmarks.distinctive(query), landmarks.distinctive(item), 1.0, 8.0, 8.0, 0.0)
    assert a is not None and a.landmarks == len(anchors)
    assert a.query_start == pytest.approx(2.0)  # not the stray 0.9
    assert a.query_end == pytest.approx(6.0 + 10.5 * PAIR_TIME_STEP)


def test_live_decisions_share_the_false_alarm_budget_of_a_file_scans() -> None:
    """Live, a decision comes every second instead of every 5 s: each gets a
    fifth of the budget, so false reports per second of stream stay the same."""
    from services.gateway.monitor import HOP, LIVE_HOP, confidence_needed

    assert confidence_needed(0.99, live=False) == pytest.approx(0.99)
    assert confidence_needed(0.99, live=True) == pytest.approx(1 - 0.01 * LIVE_HOP / HOP)
