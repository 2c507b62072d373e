"""The one table of models: every model the embedder can offer, each
declared by its own module (info, lazy build, checkpoint, batching). The
registry, the config, the weights download and the CLI read it; adding a
model is its module plus one line here."""

from __future__ import annotations

from services.embedder.models import fingerprint, fingerprint_v2, panns_entries, spectral
from services.embedder.models.checkpoint import Checkpoint
from services.embedder.models.entry import ModelEntry

# In this order: it is the order of the default AUDIOSEARCH_MODELS and of messages.
MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        panns_entries.CNN14,
        panns_entries.CNN14_16K,
        panns_entries.MOBILENETV1,
        fingerprint.ENTRY,
        fingerprint_v2.ENTRY,
        spectral.ENTRY,
    )
}
# What "auto" serves (registry.default_name): Cnn14 once it loads (or while
# its weights download), else the weights-free fingerprint.
AUTO_DEFAULT = panns_entries.CNN14.name
WEIGHTS_FREE_DEFAULT = fingerprint.ENTRY.name


def entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} in AUDIOSEARCH_MODELS; known: {', '.join(MODELS)}") from None


def offered_by_default() -> tuple[str, ...]:
    return tuple(name for name, e in MODELS.items() if e.offered_by_default)


def checkpoints() -> dict[str, Checkpoint]:
    """The models with weights, and their checkpoints."""
    return {name: e.checkpoint for name, e in MODELS.items() if e.checkpoint is not None}


def downloadable() -> list[str]:
    """The names of the models whose weights `audiosearch fetch-weights` can download."""
    return list(checkpoints())
