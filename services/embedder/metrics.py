"""The embedder's own series: what the batcher feeds each model call, the
windows waiting for one (what an autoscaler watches), admitted requests,
and how long each model took to load."""

from __future__ import annotations

from services.common.metrics import Metrics
from services.embedder.embedding import Embedder
from services.embedder.registry import READY

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def register(embedder: Embedder, metrics: Metrics) -> None:
    sizes = metrics.histogram(
        "audiosearch_embedder_batch_size", "Windows per model call.", ["model"], buckets=BATCH_BUCKETS
    )
    for name, batcher in embedder.batchers.items():
        batcher.on_batch = sizes.labels(name).observe
    metrics.gauge(
        "audiosearch_embedder_queue_depth",
        "Windows queued for a model call and not yet in one.",
        ["model"],
        lambda: [((name,), b.waiting) for name, b in embedder.batchers.items()],
    )
    metrics.gauge(
        "audiosearch_embedder_requests_admitted",
        "Embed requests running or waiting for a turn (AUDIOSEARCH_MAX_ACTIVE_EMBEDS + _QUEUED_EMBEDS bound it).",
        [],
        lambda: [((), embedder.admission.admitted)],
    )
    slots = embedder.registry.slots
    metrics.gauge(
        "audiosearch_embedder_model_load_seconds",
        "Seconds the model took to load, download included (absent until loaded).",
        ["model"],
        lambda: [((name,), s.load_seconds) for name, s in slots.items() if s.load_seconds is not None],
    )
    metrics.gauge(
        "audiosearch_embedder_model_ready",
        "1 when the model serves, 0 while it loads or when it is unavailable.",
        ["model", "state"],
        lambda: [((name, s.state), float(s.state == READY)) for name, s in slots.items()],
    )
