"""Embedding one recording: decode, resample, window, embed, tag."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np

from services.common.errors import InvalidArgument
from services.common.limits import MAX_WINDOW_SECONDS
from services.common.vectors import Vector
from services.embedder import audio
from services.embedder.admission import Admission
from services.embedder.batching import Batcher
from services.embedder.config import EmbedderConfig
from services.embedder.models.base import Embeddings, ModelInfo
from services.embedder.registry import LOADING, READY, Registry


@dataclasses.dataclass
class ModelStatus:
    info: ModelInfo
    available: bool
    loading: bool
    reason: str


@dataclasses.dataclass
class Window:
    index: int
    offset: float
    duration: float
    vector: Vector


@dataclasses.dataclass
class EmbedResult:
    model: ModelInfo
    window: float
    hop: float
    duration: float
    sample_rate: int
    channels: int
    sha256: str
    windows: list[Window]
    tags: list[tuple[str, float]]


def window_and_hop(info: ModelInfo, window: float, hop: float) -> tuple[float, float]:
    """The model's defaults where 0, validated otherwise."""
    window = window or info.window_seconds
    hop = hop or min(info.hop_seconds, window)
    if not info.min_seconds <= window <= MAX_WINDOW_SECONDS:
        raise InvalidArgument(f"window must be {info.min_seconds}-{MAX_WINDOW_SECONDS} s for {info.name}, got {window}")
    if not 0.05 <= hop <= window:
        raise InvalidArgument(f"hop must be between 0.05 s and the window ({window} s), got {hop}")
    return window, hop


def decoder_limits(config: EmbedderConfig) -> audio.Limits:
    return audio.Limits(
        max_bytes=config.max_upload_bytes,
        min_seconds=config.min_audio_seconds,
        min_sample_rate=config.min_sample_rate,
        max_sample_rate=config.max_sample_rate,
        max_channels=config.max_channels,
        max_samples=config.max_decoded_samples,
    )


class Embedder:
    def __init__(self, registry: Registry, config: EmbedderConfig) -> None:
        self.registry, self.config = registry, config
        self.limits = decoder_limits(config)
        self.admission = Admission(config.max_active_embeds, config.max_queued_embeds)
        self.batchers = {
            name: Batcher(slot.model, config.max_batch, config.batch_wait_ms) for name, slot in registry.slots.items()
        }

    def models(self) -> list[ModelStatus]:
        return [
            ModelStatus(s.model.info, s.state == READY, s.state == LOADING, s.reason)
            for s in self.registry.slots.values()
        ]

    async def embed(
        self,
        data: bytes,
        model_name: str = "",
        top_tags: int = 0,
        window: float = 0.0,
        hop: float = 0.0,
        query: bool = False,
    ) -> EmbedResult:
        """Embeds a recording in windows of `window` s every `hop` s (0: the
        model's defaults)."""
        model = self.registry.get(model_name)
        info = model.info
        window, hop = window_and_hop(info, window, hop)
        decoded = await asyncio.to_thread(
            audio.decode, data, self.config.max_audio_seconds, info.sample_rate, self.limits
        )
        embed_signal = getattr(model, "embed_signal", None)
        if embed_signal is not None:
            vectors, offsets = await asyncio.to_thread(embed_signal, decoded.samples, window, hop, query)
            embeddings = Embeddings(vectors)
        else:
            windows, offsets = audio.frame(decoded.samples, info.sample_rate, window, hop, info.min_seconds)
            embeddings = await self.batchers[info.name].embed(windows)
        result = [
            Window(i, offset, min(window, decoded.duration - offset), embeddings.vectors[i])
            for i, offset in enumerate(offsets)
        ]
        tags: list[tuple[str, float]] = []
        if top_tags > 0 and embeddings.tag_scores is not None:
            labels = getattr(model, "labels", [])
            clip = embeddings.tag_scores.max(axis=0)  # a sound anywhere in the clip tags it
            best = np.argsort(-clip)[:top_tags]
            tags = [(labels[i], float(clip[i])) for i in best]
        return EmbedResult(
            info, window, hop, decoded.duration, decoded.source_rate, decoded.channels, decoded.sha256, result, tags
        )

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
