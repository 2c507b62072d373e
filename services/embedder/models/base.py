"""The contract every embedding model meets: describe itself, load, embed."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np


class ModelUnavailable(Exception):
    """The model cannot serve; the message tells the operator what to do."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    dim: int
    sample_rate: int
    window_seconds: float
    hop_seconds: float
    # Shorter audio is zero-padded to this length.
    min_seconds: float
    produces_tags: bool = False


@dataclasses.dataclass
class Embeddings:
    vectors: np.ndarray  # [N, dim] float32, L2-normalised
    tag_scores: np.ndarray | None = None  # [N, labels] in [0, 1]


class EmbeddingModel(Protocol):
    info: ModelInfo

    def load(self) -> None:
        """Prepares weights; raises ModelUnavailable with a remedy."""

    def embed(self, windows: np.ndarray) -> Embeddings:
        """Embeds a batch of equal-length windows [N, samples]."""


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
