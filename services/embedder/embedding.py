"""Embedding one recording: decode, resample, window, embed, tag."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import cast

import numpy as np

from services.common import reasons
from services.common.errors import InvalidArgument
from services.common.limits import MAX_WINDOW_SECONDS
from services.common.vectors import Vector
from services.embedder import audio
from services.embedder.admission import Admission
from services.embedder.batching import Batcher
from services.embedder.config import EmbedderConfig
from services.embedder.models.base import EmbeddingModel, Embeddings, LabelledModel, ModelInfo, WholeSignalModel
from services.embedder.registry import LOADING, READY, Registry

# Groups of windows decoded ahead of the model, per request (memory bound:
# STREAM_AHEAD x the model's max_batch windows).
STREAM_AHEAD = 2


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
    # Landmark queries: the (speed, pitch) hypothesis the window stands for (else 0).
    speed: float = 0.0
    pitch: float = 0.0
    # Landmark queries: landmarks for the match decision only, not searched with.
    decide_only: bool = False


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
        raise InvalidArgument(
            f"window must be {info.min_seconds}-{MAX_WINDOW_SECONDS} s for {info.name}, got {window}",
            reason=reasons.INVALID_FIELD,
            field="window_seconds",
        )
    if not 0.05 <= hop <= window:
        raise InvalidArgument(
            f"hop must be between 0.05 s and the window ({window} s), got {hop}",
            reason=reasons.INVALID_FIELD,
            field="hop_seconds",
        )
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
        self.batchers = {name: self._batcher(slot.model, config) for name, slot in registry.slots.items()}

    @staticmethod
    def _batcher(model: EmbeddingModel, config: EmbedderConfig) -> Batcher:
        batching = config.batching(model.info.name)
        return Batcher(model, batching.max_batch, batching.wait_ms)

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
        single_framing: bool = False,
    ) -> EmbedResult:
        """Embeds a recording in windows of `window` s every `hop` s (0: the
        model's defaults); `single_framing`: a landmark query at one STFT
        framing (EmbedOptions.single_framing)."""
        model = self.registry.get(model_name)
        info = model.info
        window, hop = window_and_hop(info, window, hop)
        # On a thread: its sha256 of a 512 MB upload would stall the event loop for a third of a second.
        decoder = await asyncio.to_thread(
            audio.Decoder, data, self.config.max_audio_seconds, info.sample_rate, self.limits
        )
        if info.whole_signal:  # the model sees the whole recording at once
            whole = cast(WholeSignalModel, model)
            vectors, offsets = await asyncio.to_thread(
                lambda: whole.embed_signal(audio.collect(decoder), window, hop, query, single_framing)
            )
            embeddings = vectors if isinstance(vectors, Embeddings) else Embeddings(vectors)
        else:
            embeddings, offsets = await self._embed_streaming(decoder, info, window, hop)
        duration = decoder.duration
        hypotheses = embeddings.hypotheses or [(0.0, 0.0)] * len(offsets)
        decide_only = embeddings.decide_only or [False] * len(offsets)
        result = [
            Window(i, offset, min(window, duration - offset), embeddings.vectors[i], *hypotheses[i], decide_only[i])
            for i, offset in enumerate(offsets)
        ]
        tags: list[tuple[str, float]] = []
        if top_tags > 0 and info.produces_tags and embeddings.tag_scores is not None:
            labels = cast(LabelledModel, model).labels
            clip = embeddings.tag_scores.max(axis=0)  # a sound anywhere in the clip tags it
            best = np.argsort(-clip)[:top_tags]
            tags = [(labels[i], float(clip[i])) for i in best]
        return EmbedResult(
            info, window, hop, duration, decoder.source_rate, decoder.channels, decoder.sha256, result, tags
        )

    async def _embed_streaming(
        self, decoder: audio.Decoder, info: ModelInfo, window: float, hop: float
    ) -> tuple[Embeddings, list[float]]:
        """Windows go to the model while the rest of the upload is still being
        decoded (on a thread), and the whole signal is never held: an hour at
        32 kHz would be 460 MB of floats. Up to `STREAM_AHEAD` groups of
        the model's `max_batch` windows wait decoded for the model."""
        loop = asyncio.get_running_loop()
        groups: asyncio.Queue[list[tuple[float, np.ndarray]] | BaseException | None] = asyncio.Queue()
        room = threading.Semaphore(STREAM_AHEAD)
        stop = threading.Event()

        def hand_over(item: list[tuple[float, np.ndarray]] | BaseException | None) -> bool:
            while not room.acquire(timeout=0.1):  # backpressure: the model is behind
                if stop.is_set():
                    return False
            loop.call_soon_threadsafe(groups.put_nowait, item)
            return not stop.is_set()

        def produce() -> None:
            try:
                framer = audio.Framer(info.sample_rate, window, hop, info.min_seconds)
                group: list[tuple[float, np.ndarray]] = []
                batch = self.batchers[info.name].max_batch
                for block in decoder.blocks():
                    # Views into the framer's buffers (about a window and a block each), not
                    # copies: with a short hop one block completes hundreds of windows.
                    group += framer.push(block)
                    while len(group) >= batch:
                        if not hand_over(group[:batch]):
                            return
                        group = group[batch:]
                hand_over(group + framer.finish())
                hand_over(None)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the event loop
                hand_over(exc)

        producer = asyncio.ensure_future(asyncio.to_thread(produce))
        parts: list[Embeddings] = []
        offsets: list[float] = []
        try:
            while (item := await groups.get()) is not None:
                room.release()
                if isinstance(item, BaseException):
                    raise item
                if item:
                    parts.append(await self.batchers[info.name].embed([w for _, w in item]))
                    offsets += [offset for offset, _ in item]
        finally:
            stop.set()  # a failed or cancelled request: the decoder thread stops at its next hand-over
            await asyncio.shield(producer)
        vectors = np.concatenate([p.vectors for p in parts])
        tags = None if parts[0].tag_scores is None else np.concatenate([p.tag_scores for p in parts])
        return Embeddings(vectors, tags), offsets

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
