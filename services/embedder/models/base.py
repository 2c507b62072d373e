"""The contract every embedding model meets: describe itself, load, embed."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from services.common.vectors import Sparse


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
    # Capabilities, declared rather than discovered. Tags: the model's
    # embeddings carry tag scores and it has `labels` (a `LabelledModel`).
    produces_tags: bool = False
    # Whole signal: the model embeds a recording at once (a `WholeSignalModel`),
    # and the service prefers that to windows through the batcher.
    whole_signal: bool = False
    # Results whose evidence (summed similarity of the query windows at the
    # matched offset) is below this are "no match" (0: no calibrated threshold).
    min_evidence: float = 0.0
    # Vectors are `Sparse` (dim is the index space) rather than dense arrays.
    sparse: bool = False
    # A landmark fingerprint: indices are hashes, values positions
    # (services.common.vectors.POSITION_SCALE); the gateway's statistical
    # test decides, and a result below `min_confidence` is "no match".
    landmarks: bool = False
    min_confidence: float = 0.0
    # What the model finds, in one sentence for people choosing a model (the
    # CLI, the page, the no-match message read it from here and nowhere else).
    purpose: str = ""
    # What its score means: the range and how to read it.
    score_meaning: str = ""


@dataclasses.dataclass
class Embeddings:
    vectors: np.ndarray | list[Sparse]  # [N, dim] float32 or N sparse vectors, L2-normalised
    tag_scores: np.ndarray | None = None  # [N, labels] in [0, 1]
    # Landmark queries: the (speed, pitch) hypothesis each vector stands for.
    hypotheses: list[tuple[float, float]] | None = None
    # Landmark queries: vectors for the match decision only, not to search with.
    decide_only: list[bool] | None = None


class EmbeddingModel(Protocol):
    info: ModelInfo

    def load(self) -> None:
        """Prepares weights; raises ModelUnavailable with a remedy."""

    def embed(self, windows: np.ndarray) -> Embeddings:
        """Embeds a batch of equal-length windows [N, samples]."""


class WholeSignalModel(EmbeddingModel, Protocol):
    """A model whose info says `whole_signal`."""

    def embed_signal(
        self, audio: np.ndarray, window: float, hop: float, query: bool = False, single_framing: bool = False
    ) -> tuple[Embeddings | list[Sparse], list[float]]:
        """Embeds a whole recording in windows of `window` s every `hop` s:
        (the embeddings, or their sparse vectors alone; the window offsets).
        `single_framing`: a landmark query at one STFT framing only."""


class LabelledModel(EmbeddingModel, Protocol):
    """A model whose info says `produces_tags`: `labels[i]` names tag score i."""

    labels: list[str]


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
