"""Deciding landmark-fingerprint matches (fingerprint-v2) with a
statistical test, so that "no match" holds at any query length.

Every landmark is a hash and a time. A copy of item X, played `speed`
times faster, shares hashes with X whose times lie on one line,
item time = speed x query time + offset. Chance shares hashes too, at
unrelated times. For a candidate item and a (speed, pitch) hypothesis:

1. Pairs: every query landmark with every fetched item landmark of the
   same hash (the query was mapped to the original's coordinates under the
   hypothesis by the embedder).
2. The line: for each slope within SLOPE_SPAN of the hypothesis' speed, in
   steps that move the query's far end by half the tolerance, the offset
   window of width 2 x TOLERANCE holding most pairs. `m` is the number of
   distinct query landmarks on the best line.
3. Chance: the other pairs spread over the offsets the fetched segments
   allow, so a window of width 2 x TOLERANCE holds Poisson(lam) of them,
   lam = pairs off the line x 2 x TOLERANCE / offset range (at least
   MIN_LAMBDA). This is measured on the same query and item, so a query
   whose hashes are common (noise, a drone, a repeated loop) raises its own
   bar, and a longer query raises it exactly as much as it adds chances.
4. Anywhere: the line was the best of `cells` = (library seconds + query
   seconds) / (2 x TOLERANCE) offsets x slopes x hypotheses, so the
   false-alarm probability is 1 - (1 - P[Poisson(lam) >= m]) ** cells and
   the confidence is 1 minus it. A threshold on the confidence is a bound
   on how often a query whose source is not in the library gets a result.

Pure functions over numpy arrays: no I/O, no gRPC."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from services.common.vectors import POSITION_SCALE, Sparse, pair_seconds

TOLERANCE = 0.025  # s: half-width of the offset window (refined peak times: 85-100% of true pairs within it)
SLOPE_SPAN = 0.012  # relative: how far the true speed may be from its hypothesis
MAX_SLOPES = 401  # bounds the work on very long queries
HYPOTHESES_TESTED = 4  # per candidate: the ones that shared most hashes with it
MAX_REPEATS = 2  # a hash met more often in a query or an item's fetched audio is not evidence
# Measured: with 1 (a plain Poisson tail) 7 of 60 queries whose source was
# not in the library (30 s of white and pink noise, 5-60 s of held-out music)
# passed a 0.99 confidence; with 1.5 none, the highest at 0.985; with 2 none,
# the highest at 0.34 (see docs/fingerprint.md).
OVERDISPERSION = 2.0
MIN_LAMBDA = 0.05  # chance pairs per window are never taken as fewer than this
AS_RECORDED_SHARE = 0.5  # of the false-alarm budget, for the line at speed = pitch = 1 (see `tries`)
AS_RECORDED = (1.0, 1.0)
QUERY_JITTER = 0.016  # s: copies of one query anchor from different STFT phases
MAX_EVIDENCE_GAP = 2.0  # s: a gap this long on the line ends the stretch a match reports
EDGE_GAP = 0.5  # s: the stretch's first and last landmarks each have an on-line neighbour this near


@dataclasses.dataclass(frozen=True)
class Landmarks:
    """Hashes and their times (s from the start of the recording)."""

    keys: np.ndarray  # uint32
    times: np.ndarray  # float64

    @classmethod
    def of(cls, windows: Sequence[tuple[float, Sparse]]) -> Landmarks:
        """From (window offset, sparse vector) pairs of a landmark model."""
        if not windows:
            return cls(np.zeros(0, dtype=np.uint32), np.zeros(0))
        keys = np.concatenate([v.indices for _, v in windows])
        times = np.concatenate([offset + (v.values.astype(np.float64) - 1) * POSITION_SCALE for offset, v in windows])
        return cls(keys.astype(np.uint32), times)


def anchored_within(vector: Sparse, offset: float, lo: float, hi: float) -> Sparse:
    """The landmarks of a window at `offset` whose times lie in [lo, hi)."""
    times = offset + (vector.values.astype(np.float64) - 1) * POSITION_SCALE
    keep = (times >= lo) & (times < hi)
    return Sparse(vector.indices[keep], vector.values[keep])


@dataclasses.dataclass(frozen=True)
class Alignment:
    """The best line between a query and an item under one hypothesis."""

    landmarks: int  # distinct query landmarks on it (m)
    chance: float  # expected chance landmarks in one offset window (lam)
    speed: float  # slope: item time = speed x query time + offset
    offset: float
    query_start: float
    query_end: float


def pairs(query: Landmarks, item: Landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query index, query time, item time) of every shared hash; `item`
    sorted by key (`distinctive` gives it so)."""
    lo = np.searchsorted(item.keys, query.keys, side="left")
    hi = np.searchsorted(item.keys, query.keys, side="right")
    counts = hi - lo
    q = np.repeat(np.arange(len(query.keys)), counts)
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    idx = starts + np.arange(len(q))
    return q, query.times[q], item.times[idx]


def distinctive(landmarks: Landmarks) -> Landmarks:
    """Only hashes met at most MAX_REPEATS times, sorted by hash: a hash
    that recurs (a drum hit, a repeated note) lines up with any recording
    of the same rhythm at some tempo, which is rhythm, not a copy."""
    order = np.argsort(landmarks.keys, kind="stable")
    keys, times = landmarks.keys[order], landmarks.times[order]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    keep = counts[inverse] <= MAX_REPEATS
    return Landmarks(keys[keep], times[keep])


def align(
    query: Landmarks, item: Landmarks, speed: float, duration: float, item_span: float, slope_span: float = SLOPE_SPAN
) -> Alignment | None:
    """The best line with a slope within `slope_span` of `speed` (see the module
    docstring) between the `distinctive` landmarks of a query and an item;
    `item_span` is the length of item audio fetched (the offsets chance
    can take range over it plus the query)."""
    q, tq, ti = pairs(query, item)
    if len(tq) == 0:
        return None
    reach = pair_seconds(query.keys[q]) / speed  # anchor to partner, in query seconds
    # One event per coinciding pair of anchor peaks: the landmarks of one
    # anchor (its partners, its neighbouring hash cells) are not independent.
    # A query anchor found at several STFT phases is one anchor: its copies
    # sit within a few ms of each other.
    _, first = np.unique(np.stack([np.round(tq / QUERY_JITTER), ti]), axis=1, return_index=True)
    tq, ti, reach = tq[first], ti[first], reach[first]
    width = 2 * TOLERANCE
    step = TOLERANCE / max(duration, 1.0)
    n = min(MAX_SLOPES // 2, math.ceil(slope_span / step))
    # From the hypothesis outwards: of equally good lines, the nearest wins.
    slopes = speed * (1 + step * np.array(sorted(range(-n, n + 1), key=abs)))
    best = (-1, 0.0, 0.0)  # count, slope, offset
    for s in slopes:
        o = np.sort(ti - s * tq)
        counts = np.searchsorted(o, o + width, side="right") - np.arange(len(o))
        k = int(np.argmax(counts))
        if counts[k] > best[0]:
            best = (int(counts[k]), float(s), float(o[k]))
    _, slope, start = best
    d = ti - slope * tq
    on = (d >= start - 1e-9) & (d <= start + width + 1e-9)
    # Distinct anchors on both sides: a chord (many peaks at one instant) is one event.
    m = min(len(np.unique(np.round(tq[on] / QUERY_JITTER))), len(np.unique(ti[on])))
    off_line = len(tq) - int(on.sum())
    span = item_span + slope * duration + width
    chance = max(MIN_LAMBDA, off_line * width / span)
    # The speed and offset reported: a least-squares line through the pairs
    # found (the count stays the grid's, whose freedom `cells` accounts for).
    estimate = slope
    if np.ptp(tq[on]) > 1.0:
        fitted, _ = np.polyfit(tq[on], ti[on], 1)
        if abs(fitted / speed - 1) <= max(slope_span, step) * 1.5:
            estimate = float(fitted)
    offset = float(np.median(ti[on] - estimate * tq[on]))
    # The stretch the evidence covers: the longest run of the line's query
    # landmarks without a gap over MAX_EVIDENCE_GAP, so a stray chance
    # landmark on the line, seconds away, does not stretch it; it ends at
    # the run's last partner peak (up to 1.28 s after its last anchor).
    order = np.argsort(tq[on], kind="stable")
    times, ends = tq[on][order], (tq + reach)[on][order]
    cuts = np.flatnonzero(np.diff(times) > MAX_EVIDENCE_GAP) + 1
    runs = np.split(np.arange(len(times)), cuts)
    covered = max(runs, key=len)
    # Its edges are landmarks with a neighbour within EDGE_GAP: a lone one
    # at an edge is as likely a chance pair (in the audio before or after
    # the copy) as the copy's first or last, and many decisions over one
    # playing (a live stream's) would find such a stray one at either end.
    close = np.flatnonzero(np.diff(times[covered]) <= EDGE_GAP)
    if len(close):
        covered = covered[close[0] : close[-1] + 2]
    return Alignment(m, chance, estimate, offset, float(times[covered[0]]), float(ends[covered].max()))


def confidence(alignment: Alignment, library_seconds: float, duration: float, lines: float) -> float:
    """1 - the probability that chance gives a line this strong anywhere,
    when `lines` lines were tried per offset (see `tries`)."""
    cells = (library_seconds + duration) / (2 * TOLERANCE) * lines
    # P[Poisson >= landmarks], counted in clumps of OVERDISPERSION: coincidences
    # come in clumps (neighbouring peaks of one note or hit), which a plain
    # Poisson tail would take for independent evidence.
    tail = poisson_tail(alignment.landmarks / OVERDISPERSION, alignment.chance / OVERDISPERSION)
    return math.exp(-cells * tail)


def tries(as_recorded: bool, hypotheses: int, duration: float) -> float:
    """The lines one offset stands for in the false-alarm budget, which is
    split in two (a weighted Bonferroni bound, so the total stays what
    the threshold says): AS_RECORDED_SHARE of it goes to the one line at
    speed = pitch = 1, the rest to every slope of every hypothesis. A copy
    played as recorded, which most copies are, then needs fewer landmarks
    than one whose speed must be searched for, and the bound still holds."""
    if as_recorded:
        return 1 / AS_RECORDED_SHARE
    return hypotheses * _slopes(duration) / (1 - AS_RECORDED_SHARE)


def poisson_tail(k: float, lam: float) -> float:
    """P[Poisson(lam) >= k], for a real k > 0: the regularised lower
    incomplete gamma P(k, lam), by its power series (it converges for every
    lam; here lam stays a few units at most). Pure Python: the gateway
    carries no scipy."""
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    term = total = 1.0 / k
    n = 1
    while term > total * 1e-15 and n < 10_000:
        term *= lam / (k + n)
        total += term
        n += 1
    return min(1.0, math.exp(k * math.log(lam) - lam - math.lgamma(k)) * total)


def _slopes(duration: float) -> int:
    step = TOLERANCE / max(duration, 1.0)
    return 2 * min(MAX_SLOPES // 2, math.ceil(SLOPE_SPAN / step)) + 1


@dataclasses.dataclass(frozen=True)
class QueryWindow:
    """A query chunk under one hypothesis, as the embedder sent it."""

    offset: float
    vector: Sparse
    speed: float
    pitch: float


@dataclasses.dataclass(frozen=True)
class Decision:
    item_id: int
    confidence: float
    landmarks: int
    chance: float  # landmarks chance puts on one line here (lam)
    speed: float
    pitch: float
    offset: float  # item time = speed x query time + offset
    query_start: float
    query_end: float


@dataclasses.dataclass(frozen=True)
class Candidate:
    windows: list[int]  # the item's segments that were hit: what to fetch
    hypotheses: list[tuple[float, float]]  # (speed, pitch) worth testing, most promising first


def candidates(
    hits: Sequence[Sequence[tuple[int, int, float]]], hypotheses: Sequence[tuple[float, float]], limit: int
) -> dict[int, Candidate]:
    """The `limit` items with the most shared hashes in any one query window,
    each with the windows that were hit and the HYPOTHESES_TESTED
    hypotheses under which it shared most (summed over the query's chunks).
    `hits` holds (item id, window index, score) per query window,
    `hypotheses` each query window's (speed, pitch). `confidence` still
    counts every hypothesis: the choice was made among all of them."""
    best: dict[int, float] = {}
    windows: dict[int, set[int]] = {}
    shared: dict[int, dict[tuple[float, float], float]] = {}
    for per_window, hypothesis in zip(hits, hypotheses, strict=True):
        top: dict[int, float] = {}
        for item_id, window, score in per_window:
            best[item_id] = max(best.get(item_id, 0.0), score)
            windows.setdefault(item_id, set()).add(window)
            top[item_id] = max(top.get(item_id, 0.0), score)
        for item_id, score in top.items():
            per = shared.setdefault(item_id, {})
            per[hypothesis] = per.get(hypothesis, 0.0) + score
    chosen = sorted(best, key=lambda i: -best[i])[:limit]
    return {
        i: Candidate(sorted(windows[i]), sorted(shared[i], key=lambda h: -shared[i][h])[:HYPOTHESES_TESTED])
        for i in chosen
    }


def decide(
    query: Sequence[QueryWindow],
    items: dict[int, Sequence[tuple[float, Sparse]]],
    duration: float,
    library_seconds: float,
    segment_seconds: float,
    tested: dict[int, Sequence[tuple[float, float]]] | None = None,
) -> list[Decision]:
    """Each item's best line with its confidence, best first. `items` maps
    an item id to its fetched (offset, vector) windows, `tested` to the
    hypotheses to try on it (default: all), `segment_seconds` is the
    library's window length."""
    by_hypothesis: dict[tuple[float, float], list[tuple[float, Sparse]]] = {}
    for w in query:
        by_hypothesis.setdefault((w.speed, w.pitch), []).append((w.offset, w.vector))
    prepared: dict[tuple[float, float], Landmarks] = {}  # each hypothesis' distinctive landmarks, once

    def hypothesis(h: tuple[float, float]) -> Landmarks | None:
        if h not in prepared and h in by_hypothesis:
            prepared[h] = distinctive(Landmarks.of(by_hypothesis[h]))
        return prepared.get(h)

    out = []
    for item_id, windows in items.items():
        item = distinctive(Landmarks.of(windows))
        span = len(windows) * segment_seconds
        best: tuple[float, int, Alignment, tuple[float, float]] | None = None
        chosen = list(tested[item_id]) if tested and item_id in tested else list(by_hypothesis)
        # The as-recorded test first (slope exactly 1, its own share of the
        # budget), then the hypotheses chosen for this item, as-recorded among them.
        for k, (speed, pitch) in enumerate([AS_RECORDED, *chosen]):
            landmarks = hypothesis((speed, pitch))
            if landmarks is None:
                continue
            as_recorded = k == 0
            a = align(landmarks, item, speed, duration, span, 0.0 if as_recorded else SLOPE_SPAN)
            if a is None:
                continue
            c = confidence(a, library_seconds, duration, tries(as_recorded, len(by_hypothesis), duration))
            if best is None or (c, a.landmarks) > (best[0], best[1]):
                best = (c, a.landmarks, a, (speed, pitch))
        if best is None:
            continue
        c, m, a, (speed, pitch) = best
        # A resampled copy's pitch is its speed, which the slope measures finely.
        estimated_pitch = a.speed if speed == pitch else pitch
        out.append(Decision(item_id, c, m, a.chance, a.speed, estimated_pitch, a.offset, a.query_start, a.query_end))
    out.sort(key=lambda d: (-d.confidence, -d.landmarks))
    return out
