"""The search service's store sizes, read from Milvus when scraped."""

from __future__ import annotations

from services.common.metrics import Metrics
from services.search.store import VectorStore


def observe(store: VectorStore, metrics: Metrics) -> None:
    # Each family reads the counts itself: two count queries per library per
    # scrape, cheap next to a scrape interval of seconds.
    metrics.gauge(
        "audiosearch_search_vectors",
        "Window vectors stored, by library and model.",
        ["library", "model"],
        lambda: [((s.library, s.model), s.vectors) for s in store.stats()],
    )
    metrics.gauge(
        "audiosearch_search_items",
        "Items with vectors stored, by library.",
        ["library"],
        lambda: [((s.library,), s.items) for s in store.stats()],
    )
