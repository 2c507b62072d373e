"""Turning a query's window vectors into ranked READY items: votes of the
nearest windows for most models, a landmark model's match test for the
fingerprints (services/gateway/landmarks.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from services.gateway import landmarks
from services.gateway.ports import Backends, Hit, Item, Library, Window
from services.gateway.voting import items_per_query_window, vote

# Landmark models: nearest segments per query window, and candidate items tested.
LANDMARK_HITS = 8
LANDMARK_CANDIDATES = 10


@dataclasses.dataclass(frozen=True)
class Result:
    item: Item
    score: float
    evidence: float
    item_start: float
    item_end: float
    query_start: float
    query_end: float
    # Landmark models: item time = speed x query time + offset, frequencies x pitch (else 0).
    speed: float = 0.0
    pitch: float = 0.0


@dataclasses.dataclass(frozen=True)
class Ranking:
    results: list[Result]
    model: str
    min_evidence: float  # applied, else 0
    min_score: float = 0.0  # applied, else 0


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The caller's score threshold, or else the model's evidence threshold."""

    min_score: float
    min_evidence: float

    def passes(self, score: float, evidence: float) -> bool:
        return score >= self.min_score and evidence >= self.min_evidence


@dataclasses.dataclass(frozen=True)
class Query:
    """A query's windows and how they were cut."""

    windows: Sequence[Window]
    duration: float
    window: float
    hop: float


async def rank(
    backends: Backends,
    lib: Library,
    query: Query,
    top_k: int,
    allowed: Sequence[int],
    exclude: Sequence[int],
    threshold: Threshold,
) -> list[Result]:
    """Each query window's nearest items vote (services/gateway/voting.py)."""
    per_query = items_per_query_window(top_k)
    vectors = [w.vector for w in query.windows]
    hits = await backends.vectors.search(lib.name, lib.model, lib.dim, vectors, per_query, allowed, exclude)
    matches = vote(hits, [w.offset for w in query.windows], query.window, query.hop, query.duration)
    ranked = sorted(matches.values(), key=lambda m: -m.score)
    ranked = [m for m in ranked if threshold.passes(m.score, m.evidence)]
    # Over-fetch a little: some candidates may be pending or deleting.
    candidates = ranked[: top_k * 2]
    items = await _ready(backends, [m.item_id for m in candidates])
    results = []
    for m in candidates:
        item = items.get(m.item_id)
        if item is not None:
            end = min(m.item_end, item.duration_seconds) if item.duration_seconds else m.item_end
            results.append(
                Result(
                    item=item,
                    score=m.score,
                    evidence=m.evidence,
                    item_start=m.item_start,
                    item_end=end,
                    query_start=m.query_start,
                    query_end=m.query_end,
                )
            )
    return results[:top_k]


async def _ready(backends: Backends, ids: Sequence[int]) -> dict[int, Item]:
    return {item.id: item for item in await backends.catalog.get_ready_items(ids)}


async def rank_landmarks(
    backends: Backends,
    lib: Library,
    query: Query,
    top_k: int,
    allowed: Sequence[int],
    exclude: Sequence[int],
    threshold: Threshold,
) -> list[Result]:
    """A landmark model's ranking (services/gateway/landmarks.py): the
    segments sharing most hashes with each query window name the
    candidates, their hit segments are fetched, and each candidate's
    best time-consistent line is tested against chance (with the
    query's decide-only landmarks too, which are not searched with)."""
    searched = [w for w in query.windows if not w.decide_only]
    hits = await landmark_hits(backends, lib, searched, allowed, exclude)
    return await decide_landmarks(backends, lib, query, searched, hits, top_k, threshold)


async def landmark_hits(
    backends: Backends,
    lib: Library,
    searched: Sequence[Window],
    allowed: Sequence[int] = (),
    exclude: Sequence[int] = (),
    per_window: int = LANDMARK_HITS,
) -> list[list[Hit]]:
    """The `per_window` segments sharing most hashes with each searched
    query window."""
    # The nearest segments, not grouped by item: Milvus Lite's grouped
    # search took 0.22-0.39 s for a 5 s query where the plain one took
    # 0.09 s (1.03 h library), and the accuracy figures in
    # docs/fingerprint.md were measured with plain top-k segments.
    return await backends.vectors.search(
        lib.name, lib.model, lib.dim, [w.vector for w in searched], per_window, allowed, exclude, False
    )


async def decide_landmarks(
    backends: Backends,
    lib: Library,
    query: Query,
    searched: Sequence[Window],
    hits: Sequence[Sequence[Hit]],
    top_k: int,
    threshold: Threshold,
    library_seconds: float | None = None,
) -> list[Result]:
    """The match decision on `query` (every window, decide-only ones too),
    given the `hits` of its `searched` windows (`landmark_hits`).
    `library_seconds`: the library's audio, when the caller knows it."""
    chosen = landmarks.candidates(
        [[(h.item_id, h.window, h.score) for h in per] for per in hits],
        [(w.speed, w.pitch) for w in searched],
        max(LANDMARK_CANDIDATES, top_k),
    )
    fetched = await backends.vectors.get_many(lib.name, {i: c.windows for i, c in chosen.items()})
    items = {i: [(w.offset, w.vector) for w in got] for i, got in fetched.items()}
    if library_seconds is None:
        library_seconds = await audio_seconds(backends, lib.name)
    windows = [landmarks.QueryWindow(w.offset, w.vector, w.speed, w.pitch) for w in query.windows]  # type: ignore[arg-type]
    tested = {i: c.hypotheses for i, c in chosen.items()}
    decisions = landmarks.decide(windows, items, query.duration, library_seconds, query.window, tested)
    passed = [d for d in decisions if d.confidence >= threshold.min_score]
    ready = await _ready(backends, [d.item_id for d in passed[: top_k * 2]])
    results = []
    for d in passed:
        item = ready.get(d.item_id)
        if item is None:
            continue
        start = max(0.0, d.speed * d.query_start + d.offset)
        end = d.speed * d.query_end + d.offset
        if item.duration_seconds:
            end = min(end, item.duration_seconds)
        results.append(
            Result(
                item=item,
                score=d.confidence,
                evidence=d.landmarks,
                item_start=start,
                item_end=end,
                query_start=d.query_start,
                query_end=d.query_end,
                speed=d.speed,
                pitch=d.pitch,
            )
        )
    return results[:top_k]


async def audio_seconds(backends: Backends, library: str) -> float:
    """Seconds of audio in `library`'s READY items (the decision's library size)."""
    counts = {c.library: c for c in await backends.catalog.stats()}
    return counts[library].duration_seconds if library in counts else 0.0
