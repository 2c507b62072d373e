"""The search service's store sizes, read from the store when scraped."""

from __future__ import annotations

from services.common.metrics import Metrics, cached
from services.search.contract import Store


def register(store: Store, metrics: Metrics) -> None:
    # One read of the counts serves both families (two count queries per library).
    stats = cached(store.stats)
    metrics.gauge(
        "audiosearch_search_vectors",
        "Window vectors stored, by library and model.",
        ["library", "model"],
        lambda: [((s.library, s.model), s.vectors) for s in stats()],
    )
    metrics.gauge(
        "audiosearch_search_items",
        "Items with vectors stored, by library.",
        ["library"],
        lambda: [((s.library,), s.items) for s in stats()],
    )
