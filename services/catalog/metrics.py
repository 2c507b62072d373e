"""The catalog's store sizes, read from the database when scraped."""

from __future__ import annotations

from services.catalog.repository import Catalog
from services.common.metrics import Metrics, cached


def register(catalog: Catalog, metrics: Metrics) -> None:
    stats = cached(catalog.stats)  # one GROUP BY serves both families
    metrics.gauge(
        "audiosearch_catalog_items",
        "Items in the catalog, by library and state (ready, or pending: an insert under way or abandoned).",
        ["library", "state"],
        lambda: [
            sample for c in stats() for sample in (((c.library, "ready"), c.ready), ((c.library, "pending"), c.pending))
        ],
    )
    metrics.gauge(
        "audiosearch_catalog_audio_seconds",
        "Seconds of audio in ready items, by library.",
        ["library"],
        lambda: [((c.library,), c.duration_seconds) for c in stats()],
    )
