"""Embedding one recording: decode, resample, window, embed, tag."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np

from services.embedder import audio
from services.embedder.batching import Batcher
from services.embedder.config import EmbedderConfig
from services.embedder.models.base import ModelInfo
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
    vector: np.ndarray


@dataclasses.dataclass
class EmbedResult:
    model: ModelInfo
    duration: float
    sample_rate: int
    channels: int
    sha256: str
    windows: list[Window]
    tags: list[tuple[str, float]]


class Embedder:
    def __init__(self, registry: Registry, config: EmbedderConfig) -> None:
        self.registry, self.config = registry, config
        self.batchers = {
            name: Batcher(slot.model, config.max_batch, config.batch_wait_ms) for name, slot in registry.slots.items()
        }

    def models(self) -> list[ModelStatus]:
        return [
            ModelStatus(s.model.info, s.state == READY, s.state == LOADING, s.reason)
            for s in self.registry.slots.values()
        ]

    async def embed(self, data: bytes, model_name: str = "", top_tags: int = 0) -> EmbedResult:
        model = self.registry.get(model_name)
        info = model.info
        decoded = await asyncio.to_thread(audio.decode, data, self.config.max_audio_seconds)
        samples = await asyncio.to_thread(audio.resample, decoded.samples, decoded.sample_rate, info.sample_rate)
        windows, offsets = audio.frame(
            samples, info.sample_rate, info.window_seconds, info.hop_seconds, info.min_seconds
        )
        embeddings = await self.batchers[info.name].embed(windows)
        result = [
            Window(i, offset, min(info.window_seconds, decoded.duration - offset), embeddings.vectors[i])
            for i, offset in enumerate(offsets)
        ]
        tags: list[tuple[str, float]] = []
        if top_tags > 0 and embeddings.tag_scores is not None:
            labels = getattr(model, "labels", [])
            clip = embeddings.tag_scores.max(axis=0)  # a sound anywhere in the clip tags it
            best = np.argsort(-clip)[:top_tags]
            tags = [(labels[i], float(clip[i])) for i in best]
        return EmbedResult(info, decoded.duration, decoded.sample_rate, decoded.channels, decoded.sha256, result, tags)

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
