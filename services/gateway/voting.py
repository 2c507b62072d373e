"""Turning window hits into item matches with time-consistent voting.

A query of n windows at offsets tq hits item windows at offsets ti. If the
query is a copy of the item from second s on, every true hit has
ti - tq ~= s. Each item is scored on its most popular offset: the mean,
over the n query windows, of the best similarity found at that offset
(a query window without a hit there counts 0). Chance hits scatter over
offsets and so add little; an item that matches the whole query at one
offset wins, and the offset says where in the item the query sits."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from services.gateway.ports import Hit


def items_per_query_window(top_k: int) -> int:
    """Nearest items fetched per query window: a margin over top_k lets
    voting re-rank across windows (also used by eval/run.py)."""
    return min(1024, top_k * 2 + 8)


@dataclasses.dataclass(frozen=True)
class Match:
    item_id: int
    score: float
    # Summed similarity over the query windows at the offset (score = evidence / n).
    evidence: float
    # Where the query sits in the item (item time = query time + offset).
    offset: float
    item_start: float
    item_end: float
    query_start: float
    query_end: float


def vote(
    hits_per_query: Sequence[Sequence[Hit]],
    query_offsets: Sequence[float],
    window: float,
    hop: float,
    query_duration: float,
) -> dict[int, Match]:
    n = max(1, len(hits_per_query))
    # item -> offset bin -> query index -> (score, hit)
    table: dict[int, dict[int, dict[int, tuple[float, Hit]]]] = {}
    for q, (hits, tq) in enumerate(zip(hits_per_query, query_offsets, strict=True)):
        for hit in hits:
            b = round((hit.offset - tq) / hop)
            cell = table.setdefault(hit.item_id, {}).setdefault(b, {})
            if q not in cell or hit.score > cell[q][0]:
                cell[q] = (hit.score, hit)
    matches = {}
    for item_id, bins in table.items():
        best: tuple[float, dict[int, tuple[float, Hit]]] | None = None
        for b in bins:
            # A true offset halfway between two bins splits its votes: merge neighbours.
            merged = dict(bins[b])
            for q, entry in bins.get(b + 1, {}).items():
                if q not in merged or entry[0] > merged[q][0]:
                    merged[q] = entry
            total = sum(score for score, _ in merged.values())
            if best is None or total > best[0]:
                best = (total, merged)
        assert best is not None
        total, votes = best
        pairs = [(query_offsets[q], hit) for q, (_, hit) in votes.items()]
        offsets = sorted(hit.offset - tq for tq, hit in pairs)
        offset = offsets[len(offsets) // 2]
        q_start = min(tq for tq, _ in pairs)
        q_end = min(query_duration, max(tq for tq, _ in pairs) + window)
        matches[item_id] = Match(
            item_id=item_id,
            score=total / n,
            evidence=total,
            offset=offset,
            item_start=max(0.0, q_start + offset),
            item_end=q_end + offset,
            query_start=q_start,
            query_end=q_end,
        )
    return matches
