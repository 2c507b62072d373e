"""What a model declares about itself for the table: its info, how to build
it (lazily: heavy imports happen in `build`, not when the table is read),
its checkpoint if it has weights, and its batching."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.embedder.models.base import EmbeddingModel, ModelInfo
from services.embedder.models.checkpoint import Checkpoint

if TYPE_CHECKING:  # the config reads the table, so only its type is needed here
    from services.embedder.config import EmbedderConfig


@dataclasses.dataclass(frozen=True)
class Batching:
    """Windows per model call, and how long to wait to fill a batch. 8 suits
    CPUs: as fast per clip as 16 there, and a 10 s window of Cnn14 needs
    about 35 MB of activations (bf16). On GPUs use 256 or more."""

    max_batch: int = 8
    wait_ms: float = 5.0


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    info: ModelInfo
    # Called once per process with the embedder's config; imports what the model needs.
    build: Callable[[EmbedderConfig], EmbeddingModel]
    # The weights file, for models that have one (None: weights-free).
    checkpoint: Checkpoint | None = None
    batching: Batching = Batching()
    # Offered when AUDIOSEARCH_MODELS is not set.
    offered_by_default: bool = False
    # torch's threads are configured, process-wide, before the first such model is built.
    uses_torch: bool = False

    @property
    def name(self) -> str:
        return self.info.name
